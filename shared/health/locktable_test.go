package health_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivershared/riversharedmaintenance"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// lockBudget is the most advisory locks one transaction may hold for the job summary however
// many tenants it touches: one transaction's share of Postgres's shared lock table
// (max_locks_per_transaction, 64 by default; the table holds that many per connection slot,
// shared by every transaction at once).
const lockBudget = 64

// deadJobs inserts n dead (discarded, unresolved) CRM jobs, each of another tenant, finalized
// at finalized, in transactions of 500 so that setting up does not need the lock table the
// test is about.
func deadJobs(t *testing.T, pool *pgxpool.Pool, n int, state string, finalized time.Time) {
	t.Helper()
	for done := 0; done < n; done += 500 {
		_, err := pool.Exec(context.Background(), `
			insert into private.river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, finalized_at, scheduled_at, created_at)
			select jsonb_build_object('tenant_id', gen_random_uuid()), 'crm_sync', 5, 'default', $2::private.river_job_state,
			       case when $2::text = 'running' then 1 else 5 end, $3::timestamptz,
			       case when $2::text = 'running' then null else $3::timestamptz end, $3, $3
			from generate_series(1, least(500, $1::int - $4::int))`, n, state, finalized, done)
		require.NoError(t, err)
	}
}

// advisoryLocks runs fn in a transaction and counts the advisory locks it holds at its end.
func advisoryLocks(t *testing.T, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) int {
	t.Helper()
	var held int
	err := db.Tx(context.Background(), pool, func(tx pgx.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return tx.QueryRow(context.Background(), `select count(*) from pg_locks
			where locktype = 'advisory' and pid = pg_backend_pid()`).Scan(&held)
	})
	require.NoError(t, err, "the batch fits in Postgres's lock table")
	return held
}

// River's maintenance works in batches of riversharedmaintenance.BatchSizeDefault (10,000 in
// v0.51) per statement: the cleaner deletes that many finished jobs at once, and the rescuer
// updates that many stuck ones. Every dead job of the batch changes its tenant's job summary,
// whose trigger holds an advisory lock per (tenant, integration) it changes until the commit.
// A batch of dead jobs of as many tenants (an integration down for everyone, its jobs
// discarded, deleted by the cleaner a retention period later) must succeed on a server with
// the default max_locks_per_transaction, and hold no more advisory locks than one
// transaction's share of the lock table, whatever the server's size.
func TestRiversLargestBatchesFitInTheLockTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var maxLocks int
	require.NoError(t, pool.QueryRow(ctx, `select current_setting('max_locks_per_transaction')::int`).Scan(&maxLocks))
	require.Equal(t, lockBudget, maxLocks, "the test server runs Postgres's default, as a Supabase project does")
	batch := riversharedmaintenance.BatchSizeDefault

	t.Run("the cleaner deletes a batch of dead jobs", func(t *testing.T) {
		horizon := time.Now().Add(-riversharedmaintenance.DiscardedJobRetentionPeriodDefault)
		deadJobs(t, pool, batch, "discarded", horizon.Add(-time.Hour))
		var deleted int
		held := advisoryLocks(t, pool, func(tx pgx.Tx) error {
			var err error
			deleted, err = riverpgxv5.New(nil).UnwrapExecutor(tx).JobDeleteBefore(ctx, &riverdriver.JobDeleteBeforeParams{
				CancelledDoDelete: true, CancelledFinalizedAtHorizon: time.Now().Add(-riversharedmaintenance.CancelledJobRetentionPeriodDefault),
				CompletedDoDelete: true, CompletedFinalizedAtHorizon: time.Now().Add(-riversharedmaintenance.CompletedJobRetentionPeriodDefault),
				DiscardedDoDelete: true, DiscardedFinalizedAtHorizon: horizon,
				Max: batch, Schema: jobs.Schema,
			})
			return err
		})
		require.Equal(t, batch, deleted)
		t.Logf("a cleaner batch of %d dead jobs of as many tenants held %d advisory locks", batch, held)
		require.LessOrEqual(t, held, lockBudget, "advisory locks held by one cleaner batch")
	})

	t.Run("the rescuer discards a batch of stuck jobs", func(t *testing.T) {
		stuck := time.Now().Add(-2 * time.Hour)
		deadJobs(t, pool, batch, "running", stuck)
		var ids []int64
		rows, err := pool.Query(ctx, `select id from private.river_job where state = 'running' order by id`)
		require.NoError(t, err)
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		require.Len(t, ids, batch)
		params := &riverdriver.JobRescueManyParams{ID: ids, Schema: jobs.Schema, StuckHorizon: time.Now().Add(-time.Hour)}
		now := time.Now()
		for range ids {
			attempt, err := json.Marshal(map[string]any{"at": now, "attempt": 5, "error": "stuck job rescued by Rescuer"})
			require.NoError(t, err)
			params.Error = append(params.Error, attempt)
			params.FinalizedAt = append(params.FinalizedAt, &now)
			params.ScheduledAt = append(params.ScheduledAt, now)
			params.State = append(params.State, "discarded")
		}
		held := advisoryLocks(t, pool, func(tx pgx.Tx) error {
			_, err := riverpgxv5.New(nil).UnwrapExecutor(tx).JobRescueMany(ctx, params)
			return err
		})
		t.Logf("a rescuer batch of %d stuck jobs of as many tenants held %d advisory locks", batch, held)
		require.LessOrEqual(t, held, lockBudget, "advisory locks held by one rescuer batch")
	})
}
