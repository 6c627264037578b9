package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/jobs/jobstest"
)

// enqueueInPipe enqueues in a db.Pipe, where the inserter writes the job itself (one
// PL/pgSQL call with the transaction's other writes) instead of through River's client.
func enqueueInPipe(t *testing.T, b bundle, f func(ctx context.Context, tx pgx.Tx) error) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.PipeTx(ctx, b.pool, nil, func(p *db.Pipe) error { return f(ctx, p) }))
}

// enqueueWithRiver enqueues in a plain transaction, through River's client (InsertTx).
func enqueueWithRiver(t *testing.T, b bundle, f func(ctx context.Context, tx pgx.Tx) error) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error { return f(ctx, tx) }))
}

// A job the webhook writes without River's client must be River's own: River's unique insert
// sees it as the same job (and the other way round), its row is the row River writes, River's
// workers work it, retry it and complete it, and the sync status follows as for any job.
func TestJobsWrittenInAPipeAreRiversOwn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	inserted := map[string]int{}
	b.inserter.OnInsert(func(_ context.Context, queue string) { inserted[queue]++ })

	crm := func(event string) func(context.Context, pgx.Tx) error {
		return func(ctx context.Context, tx pgx.Tx) error {
			return b.inserter.EnqueueCRMSync(ctx, tx, b.tenantID, event, 7)
		}
	}
	ticket := func(id uuid.UUID) func(context.Context, pgx.Tx) error {
		return func(ctx context.Context, tx pgx.Tx) error {
			return b.inserter.EnqueueHelpdeskTicket(ctx, tx, b.tenantID, id)
		}
	}

	// Unique keys agree both ways.
	enqueueInPipe(t, b, crm("evt_pipe"))
	enqueueInPipe(t, b, crm("evt_pipe"))
	enqueueWithRiver(t, b, crm("evt_pipe"))
	enqueueWithRiver(t, b, crm("evt_river"))
	enqueueInPipe(t, b, crm("evt_river"))
	require.Equal(t, 2, countJobs(t, b.pool, jobs.KindCRMSync), "one job per (tenant, event), whoever wrote it")
	require.Equal(t, 2, inserted[jobs.QueueCRM], "only a new job is announced")

	pipeTicket, riverTicket := uuid.New(), uuid.New()
	enqueueInPipe(t, b, ticket(pipeTicket))
	enqueueWithRiver(t, b, ticket(pipeTicket))
	enqueueWithRiver(t, b, ticket(riverTicket))
	enqueueInPipe(t, b, ticket(riverTicket))
	require.Equal(t, 2, countJobs(t, b.pool, jobs.KindHelpdeskTicket))
	require.Equal(t, "pending", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(pipeTicket)))

	// The rows are the rows River writes: every column but the ids, args and times.
	const shape = `select kind, queue, priority, max_attempts, state::text, attempt, metadata::text, tags::text[],
		unique_states::text, errors is null, attempted_at is null, finalized_at is null, created_at = scheduled_at,
		octet_length(unique_key)
		from private.river_job where args->>'source_event' = $1 or args->>'ticket_id' = $1`
	rowOf := func(key string) []any {
		t.Helper()
		rows, err := b.pool.Query(ctx, shape, key)
		require.NoError(t, err)
		all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		require.NoError(t, err)
		require.Len(t, all, 1, key)
		return all[0]
	}
	require.Equal(t, rowOf("evt_river"), rowOf("evt_pipe"))
	require.Equal(t, rowOf(riverTicket.String()), rowOf(pipeTicket.String()))
	var version int64
	require.NoError(t, b.pool.QueryRow(ctx, `select (args->>'version')::bigint from private.river_job where args->>'source_event' = 'evt_pipe'`).Scan(&version))
	require.Equal(t, int64(7), version, "the args are the job's own, unique fields or not")

	// River works them: a failed attempt is retried after its backoff, then completes.
	w := newTicketWorker(func(_ context.Context, _ uuid.UUID, attempt int) error {
		if attempt == 1 {
			return jobs.Upstream(503, "", errors.New("zendesk: 503 service unavailable"))
		}
		return nil
	})
	clock := jobstest.NewClock()
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second, Time: clock}
	sum, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 2, Failed: 2}, sum)
	require.Equal(t, "retrying", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(pipeTicket)))
	clock.Advance(20 * time.Second) // > 15 s + 20% jitter
	sum, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 2, Succeeded: 2}, sum)
	require.Equal(t, 1, w.done[pipeTicket])
	require.Equal(t, "synced", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(pipeTicket)))

	// A completed job still blocks its key (River's default unique states), both ways.
	enqueueInPipe(t, b, ticket(pipeTicket))
	enqueueWithRiver(t, b, ticket(pipeTicket))
	require.Equal(t, 2, countJobs(t, b.pool, jobs.KindHelpdeskTicket))
}

// A job written in a Pipe goes with the transaction: rolled back with it.
func TestJobInAPipeRollsBackWithTheTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	err := db.PipeTx(ctx, b.pool, nil, func(p *db.Pipe) error {
		if err := b.inserter.EnqueueCRMSync(ctx, p, b.tenantID, "evt_1", 1); err != nil {
			return err
		}
		return context.Canceled
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, countJobs(t, b.pool, jobs.KindCRMSync))
}
