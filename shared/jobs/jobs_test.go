package jobs_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

type bundle struct {
	pool     *pgxpool.Pool
	inserter *jobs.Inserter
	tenantID uuid.UUID
}

func setup(t *testing.T) bundle {
	t.Helper()
	pool := dbtest.New(t)
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	return bundle{pool: pool, inserter: ins, tenantID: newTenant(t, pool, "acme@example.com")}
}

func newTenant(t *testing.T, pool *pgxpool.Pool, email string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, pool.QueryRow(context.Background(),
		`insert into public.tenants (name, contact_email) values ('Acme', nullif($1, '')) returning id`, email).Scan(&id))
	return id
}

func countJobs(t *testing.T, pool *pgxpool.Pool, kind string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`select count(*) from private.river_job where kind = $1`, kind).Scan(&n))
	return n
}

func syncState(t *testing.T, pool *pgxpool.Pool, integration, subject string) string {
	t.Helper()
	var state string
	require.NoError(t, pool.QueryRow(context.Background(),
		`select state from private.sync_status where integration = $1 and subject = $2`, integration, subject).Scan(&state))
	return state
}

func TestEnqueueCRMSyncIsUniquePerSourceEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	for range 10 {
		require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
			return b.inserter.EnqueueCRMSync(ctx, tx, b.tenantID, "evt_1", 0)
		}))
	}
	require.Equal(t, 1, countJobs(t, b.pool, jobs.KindCRMSync), "ten enqueues of one event are one job")
	require.Equal(t, "pending", syncState(t, b.pool, jobs.QueueCRM, jobs.CRMSubject(b.tenantID)))

	require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
		return b.inserter.EnqueueCRMSync(ctx, tx, b.tenantID, "evt_2", 0)
	}))
	require.Equal(t, 2, countJobs(t, b.pool, jobs.KindCRMSync), "a newer event is its own job")

	var queue string
	var maxAttempts int
	require.NoError(t, b.pool.QueryRow(ctx, `select queue, max_attempts from private.river_job limit 1`).Scan(&queue, &maxAttempts))
	require.Equal(t, jobs.QueueCRM, queue)
	require.Equal(t, jobs.MaxAttempts, maxAttempts)
}

func TestEnqueueRollsBackWithTheBusinessTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ticketID := uuid.New()

	err := db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
		if err := b.inserter.EnqueueHelpdeskTicket(ctx, tx, b.tenantID, ticketID); err != nil {
			return err
		}
		return context.Canceled // the business write failed after the enqueue
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, countJobs(t, b.pool, jobs.KindHelpdeskTicket), "a rolled-back change leaves no job")

	for range 3 {
		require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
			return b.inserter.EnqueueHelpdeskTicket(ctx, tx, b.tenantID, ticketID)
		}))
	}
	require.Equal(t, 1, countJobs(t, b.pool, jobs.KindHelpdeskTicket))
	require.Equal(t, "pending", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(ticketID)))
}

func TestEnqueueRejectsMissingIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		enqueue func(tx pgx.Tx) error
		want    error
	}{
		{"crm without tenant", func(tx pgx.Tx) error { return b.inserter.EnqueueCRMSync(ctx, tx, uuid.Nil, "evt", 0) }, jobs.ErrNoTenant},
		{"crm without event", func(tx pgx.Tx) error { return b.inserter.EnqueueCRMSync(ctx, tx, b.tenantID, "", 0) }, jobs.ErrNoSourceEvent},
		{"ticket without id", func(tx pgx.Tx) error { return b.inserter.EnqueueHelpdeskTicket(ctx, tx, b.tenantID, uuid.Nil) }, jobs.ErrNoTicket},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := db.Tx(ctx, b.pool, tc.enqueue)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// TestRiverMigrationIsCurrent fails when River was upgraded but its migration file was not
// regenerated (go run ./cmd/rivermigrations), so the schema cannot drift from River's.
func TestRiverMigrationIsCurrent(t *testing.T) {
	t.Parallel()
	want, err := jobs.RiverMigrationSQL(jobs.Schema)
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join("..", "..", jobs.MigrationFile))
	require.NoError(t, err)
	require.Equal(t, want, string(got), "%s is stale: run go run ./cmd/rivermigrations", jobs.MigrationFile)
}

// TestRiverAgreesTheSchemaIsMigrated asks River's own migrator about the migrated database.
func TestRiverAgreesTheSchemaIsMigrated(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: jobs.Schema})
	require.NoError(t, err)
	res, err := migrator.Validate(context.Background(), nil)
	require.NoError(t, err)
	require.True(t, res.OK, "unapplied River migrations: %v", res.Messages)
}
