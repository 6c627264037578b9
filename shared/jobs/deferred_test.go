package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"
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

// A billing refresh queued in the webhook's Pipe is River's own too: one job per
// (subscription, tied second) whoever wrote it, the row River writes (its unique states leave
// completed out, so a completed refresh does not block the next), no sync status, nothing
// announced (the billing-refresh function's schedule works it) and nothing in the job
// summary (the Pipe marks its row counted, so the insert trigger is not called; River's
// insert calls it, and it returns for the kind).
func TestARefreshWrittenInAPipeIsRiversOwn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	announced := 0
	b.inserter.OnInsert(func(context.Context, string) { announced++ })
	refresh := func(sub string, tied time.Time) func(context.Context, pgx.Tx) error {
		return func(ctx context.Context, tx pgx.Tx) error {
			return b.inserter.EnqueueBillingRefresh(ctx, tx, b.tenantID, sub, tied)
		}
	}
	tied := time.Unix(1_700_000_000, 0)
	enqueueInPipe(t, b, refresh("sub_pipe", tied))
	enqueueInPipe(t, b, refresh("sub_pipe", tied))
	enqueueWithRiver(t, b, refresh("sub_pipe", tied))
	enqueueWithRiver(t, b, refresh("sub_river", tied))
	enqueueInPipe(t, b, refresh("sub_river", tied))
	enqueueInPipe(t, b, refresh("sub_pipe", tied.Add(time.Second))) // a later tie: a job of its own
	require.Equal(t, 3, countJobs(t, b.pool, jobs.KindBillingRefresh))
	require.Zero(t, announced)
	var statuses int
	require.NoError(t, b.pool.QueryRow(ctx, `select count(*) from private.sync_status`).Scan(&statuses))
	require.Zero(t, statuses, "a refresh has no sync status")
	var summaries, unmarked int
	require.NoError(t, b.pool.QueryRow(ctx, `select (select count(*) from private.job_summary),
		(select count(*) from private.river_job where args->>'subscription_id' = 'sub_pipe' and counted is not true)`).Scan(&summaries, &unmarked))
	require.Zero(t, summaries, "a refresh is not a push: the job summary does not count it, whoever wrote it")
	require.Zero(t, unmarked, "the Pipe's refreshes are marked, so the insert trigger's WHEN skips them")

	const shape = `select kind, queue, priority, max_attempts, state::text, attempt, metadata::text, tags::text[],
		unique_states::text, errors is null, finalized_at is null, octet_length(unique_key), args->>'tenant_id'
		from private.river_job where args->>'subscription_id' = $1 and (args->>'tied_second')::bigint = $2`
	rowOf := func(sub string) []any {
		t.Helper()
		rows, err := b.pool.Query(ctx, shape, sub, tied.Unix())
		require.NoError(t, err)
		all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		require.NoError(t, err)
		require.Len(t, all, 1, sub)
		return all[0]
	}
	require.Equal(t, rowOf("sub_river"), rowOf("sub_pipe"))

	// Completed, it no longer blocks the same tie: River's insert and the Pipe's both queue anew.
	_, err := b.pool.Exec(ctx, `update private.river_job set state = 'completed', finalized_at = now() where kind = $1`, jobs.KindBillingRefresh)
	require.NoError(t, err)
	enqueueInPipe(t, b, refresh("sub_pipe", tied))
	enqueueWithRiver(t, b, refresh("sub_river", tied))
	require.Equal(t, 5, countJobs(t, b.pool, jobs.KindBillingRefresh))
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

// A job written in a Pipe is counted in the job summary by its own statement
// (private.river_insert_unique), not by the insert trigger, and exactly once: a duplicate
// queued either way changes nothing, and later transitions of the job (River's, or ops') are
// counted by the update and delete triggers as for a job River's client wrote. The trigger
// calls are counted in the transaction (pg_stat_get_xact_function_calls, before and after: it
// also holds the connection's calls not yet sent to the statistics), so a change that
// brings the trigger call back onto the webhook's path fails here as a count.
func TestJobInAPipeCountsItselfInItsOwnStatement(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const callsSQL = `select coalesce(pg_stat_get_xact_function_calls('private.job_summary_track'::regproc), 0),
		coalesce(pg_stat_get_xact_function_calls('private.river_insert_unique'::regproc), 0)`
	trackCalls := func(b *pgx.Batch) { b.Queue(`set local track_functions = 'pl'`) }
	type calls struct{ trigger, function int64 }
	// enqueue queues evt's push on tx and counts the calls it made (track_functions is on).
	enqueue := func(tx pgx.Tx, event string) (calls, error) {
		var before, after calls
		if err := tx.QueryRow(ctx, callsSQL).Scan(&before.trigger, &before.function); err != nil {
			return calls{}, err
		}
		if err := b.inserter.EnqueueCRMSync(ctx, tx, b.tenantID, event, 1); err != nil {
			return calls{}, err
		}
		if err := tx.QueryRow(ctx, callsSQL).Scan(&after.trigger, &after.function); err != nil {
			return calls{}, err
		}
		return calls{after.trigger - before.trigger, after.function - before.function}, nil
	}
	inPipe := func(event string) (c calls) {
		t.Helper()
		require.NoError(t, db.PipeTx(ctx, b.pool, trackCalls, func(p *db.Pipe) (err error) {
			c, err = enqueue(p, event)
			return err
		}))
		return c
	}
	withRiver := func(event string) (c calls) {
		t.Helper()
		require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) (err error) {
			if _, err = tx.Exec(ctx, `set local track_functions = 'pl'`); err != nil {
				return err
			}
			c, err = enqueue(tx, event)
			return err
		}))
		return c
	}
	summary := func() (waiting, dead int) {
		t.Helper()
		require.NoError(t, b.pool.QueryRow(ctx, `select coalesce(sum(waiting), 0), coalesce(sum(dead), 0)
			from private.job_summary where tenant_id = $1 and integration = 'crm'`, b.tenantID).Scan(&waiting, &dead))
		return waiting, dead
	}
	requireSummary := func(waiting, dead int) {
		t.Helper()
		var w, d int
		require.NoError(t, b.pool.QueryRow(ctx, `
			select count(*) filter (where state in ('available', 'pending', 'retryable', 'running', 'scheduled')),
			       count(*) filter (where state in ('discarded', 'cancelled') and not metadata ? 'resolved_at')
			from private.river_job where kind = 'crm_sync' and args->>'tenant_id' = $1::text`, b.tenantID).Scan(&w, &d))
		require.Equal(t, []int{waiting, dead}, []int{w, d}, "the recount")
		w, d = summary()
		require.Equal(t, []int{waiting, dead}, []int{w, d}, "the kept summary")
	}

	require.Equal(t, calls{trigger: 0, function: 1}, inPipe("evt_pipe"), "counted in the insert's statement")
	requireSummary(1, 0)
	require.Equal(t, calls{trigger: 1, function: 0}, withRiver("evt_river"), "River's client: counted by the trigger")
	requireSummary(2, 0)
	require.Equal(t, calls{trigger: 0, function: 1}, inPipe("evt_river"), "a duplicate of River's job")
	require.Equal(t, calls{trigger: 0, function: 0}, withRiver("evt_pipe"), "River's duplicate of the pipe's job")
	requireSummary(2, 0)

	var counted []*bool
	rows, err := b.pool.Query(ctx, `select counted from private.river_job where kind = 'crm_sync' order by args->>'source_event'`)
	require.NoError(t, err)
	counted, err = pgx.CollectRows(rows, pgx.RowTo[*bool])
	require.NoError(t, err)
	require.Len(t, counted, 2)
	require.True(t, counted[0] != nil && *counted[0], "evt_pipe: counted by its writer")
	require.Nil(t, counted[1], "evt_river: counted by the trigger")

	// The pipe's job dies: the update trigger counts it like any job. A dead letter does not
	// block its key, so the same push queued again is a new job, counted once; the dead one
	// then goes (the delete trigger). River's job is taken by a worker first, so the push does
	// not ride on it (TestCRMPushRidesOnAWaitingOneOnly).
	_, err = b.pool.Exec(ctx, `update private.river_job set state = 'cancelled', finalized_at = now()
		where args->>'source_event' = 'evt_pipe'`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `update private.river_job set state = 'running', attempt = 1, attempted_at = now()
		where args->>'source_event' = 'evt_river'`)
	require.NoError(t, err)
	requireSummary(1, 1)
	require.Equal(t, calls{trigger: 0, function: 1}, inPipe("evt_pipe"))
	requireSummary(2, 1)
	_, err = b.pool.Exec(ctx, `delete from private.river_job where args->>'source_event' = 'evt_pipe' and state = 'cancelled'`)
	require.NoError(t, err)
	requireSummary(2, 0)
}

// A push queued for a subject whose sync status is already pending with no attempt leaves the
// status row as it is (no new row version), whichever way it is queued; a status in any other
// state becomes pending with its attempts reset, as always.
func TestQueuedPushLeavesAPendingStatusAsItIs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for name, enqueue := range map[string]func(*testing.T, bundle, func(context.Context, pgx.Tx) error){
		"in a pipe": enqueueInPipe, "with River": enqueueWithRiver,
	} {
		tenant := newTenant(t, b.pool, "")
		n := 0
		push := func() {
			n++
			enqueue(t, b, func(ctx context.Context, tx pgx.Tx) error {
				return b.inserter.EnqueueCRMSync(ctx, tx, tenant, fmt.Sprintf("evt_%d", n), int64(n))
			})
		}
		type status struct {
			state    string
			attempts int
			version  string // xmin: a new row version has another
		}
		read := func() (s status) {
			t.Helper()
			require.NoError(t, b.pool.QueryRow(ctx, `select state, attempts, xmin::text from private.sync_status
				where integration = 'crm' and subject = $1`, jobs.CRMSubject(tenant)).Scan(&s.state, &s.attempts, &s.version))
			return s
		}
		set := func(state string, attempts int) {
			t.Helper()
			_, err := b.pool.Exec(ctx, `update private.sync_status set state = $1, attempts = $2
				where integration = 'crm' and subject = $3`, state, attempts, jobs.CRMSubject(tenant))
			require.NoError(t, err)
		}

		push()
		first := read()
		require.Equal(t, "pending", first.state, name)
		push()
		require.Equal(t, first, read(), "%s: already pending, left as it is", name)

		for _, before := range []struct {
			state    string
			attempts int
		}{{"retrying", 2}, {"failed", 5}, {"synced", 1}, {"pending", 1}} {
			set(before.state, before.attempts)
			was := read()
			push()
			now := read()
			require.Equal(t, "pending", now.state, "%s: after %s", name, before.state)
			require.Zero(t, now.attempts, "%s: after %s", name, before.state)
			require.NotEqual(t, was.version, now.version, "%s: after %s", name, before.state)
		}
		// River's client queues a job per push; in a pipe every push after the first rode on
		// the first, which no worker took (TestCRMPushRidesOnAWaitingOneOnly).
		want := map[string]int{"in a pipe": 1, "with River": n}[name]
		require.Equal(t, want, countJobsOf(t, b, tenant), name)
	}
}

func countJobsOf(t *testing.T, b bundle, tenant uuid.UUID) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`select count(*) from private.river_job where args->>'tenant_id' = $1::text`, tenant).Scan(&n))
	return n
}

// A CRM push queued in a pipe while the tenant has one waiting to start (available, due) rides
// on it: no job is added, since the waiting job pushes the projection as it is when it runs.
// The waiting job is locked until the riding transaction commits, so River's fetch (FOR UPDATE
// SKIP LOCKED) cannot start it before the change it carries is committed. A job a worker holds
// or has taken, or one due later, carries nothing: the push gets a job of its own.
func TestCRMPushRidesOnAWaitingOneOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tenant := newTenant(t, b.pool, "")
	n := 0
	push := func() {
		t.Helper()
		n++
		enqueueInPipe(t, b, func(ctx context.Context, tx pgx.Tx) error {
			return b.inserter.EnqueueCRMSync(ctx, tx, tenant, fmt.Sprintf("evt_%d", n), int64(n))
		})
	}
	status := func() (state string, attempts int) {
		t.Helper()
		require.NoError(t, b.pool.QueryRow(ctx, `select state, attempts from private.sync_status
			where integration = 'crm' and subject = $1`, jobs.CRMSubject(tenant)).Scan(&state, &attempts))
		return state, attempts
	}
	// River's fetch of the crm queue (riverpgxv5 JobGetAvailable's lock), from a connection of
	// its own: the ids it would start now.
	fetchable := func() []int64 {
		t.Helper()
		rows, err := b.pool.Query(ctx, `select id from private.river_job where state = 'available'
			and queue = 'crm' and scheduled_at <= now() and args->>'tenant_id' = $1
			order by priority, scheduled_at, id for update skip locked`, tenant.String())
		require.NoError(t, err)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		return ids
	}
	// setState changes the tenant's jobs in state from as a worker or River's scheduler would.
	setState := func(from, set string) {
		t.Helper()
		_, err := b.pool.Exec(ctx, `update private.river_job set `+set+`
			where kind = 'crm_sync' and args->>'tenant_id' = $1 and state = $2`, tenant.String(), from)
		require.NoError(t, err)
	}

	push()
	require.Equal(t, 1, countJobsOf(t, b, tenant))
	// The first push's attempts failed and left its status retrying, its job due again.
	_, err := b.pool.Exec(ctx, `update private.sync_status set state = 'retrying', attempts = 2
		where integration = 'crm' and subject = $1`, jobs.CRMSubject(tenant))
	require.NoError(t, err)
	push()
	require.Equal(t, 1, countJobsOf(t, b, tenant), "rode on the waiting push")
	state, attempts := status()
	require.Equal(t, []any{"pending", 0}, []any{state, attempts}, "the newest change's push is pending")

	// While a riding transaction is open, River's fetch skips the waiting job; after its
	// commit, the job is fetched (and reads the projection with the change).
	n++
	require.NoError(t, db.PipeTx(ctx, b.pool, nil, func(p *db.Pipe) error {
		if err := b.inserter.EnqueueCRMSync(ctx, p, tenant, fmt.Sprintf("evt_%d", n), int64(n)); err != nil {
			return err
		}
		if _, err := p.Exec(ctx, `select 1`); err != nil { // sends the deferred insert
			return err
		}
		require.Empty(t, fetchable(), "a worker cannot start the push before the change it carries commits")
		return nil
	}))
	require.Len(t, fetchable(), 1)
	require.Equal(t, 1, countJobsOf(t, b, tenant))

	// A worker's fetch in progress holds the job: the push does not wait for it, and gets a job.
	hold, err := b.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = hold.Exec(ctx, `select 1 from private.river_job where kind = 'crm_sync' and args->>'tenant_id' = $1 for update`, tenant.String())
	require.NoError(t, err)
	push()
	require.NoError(t, hold.Rollback(ctx))
	require.Equal(t, 2, countJobsOf(t, b, tenant), "a held job carries nothing")

	// Taken by a worker (running), or due later (snoozed, or a retry's backoff): a job of its own.
	setState("available", `state = 'running', attempt = 1, attempted_at = now()`)
	push()
	require.Equal(t, 3, countJobsOf(t, b, tenant), "a running job read the projection already")
	setState("available", `scheduled_at = now() + interval '1 hour'`)
	push()
	require.Equal(t, 4, countJobsOf(t, b, tenant), "a job due in an hour would delay the change")
	setState("available", `state = 'retryable', scheduled_at = now() + interval '1 hour'`)
	push()
	require.Equal(t, 5, countJobsOf(t, b, tenant), "a retryable job waits for its backoff")
	push()
	require.Equal(t, 5, countJobsOf(t, b, tenant), "the last one is waiting and due: rode on it")
}

// A job in each of River's states blocks a new job with its key exactly when River's unique
// states say so, whoever writes the new one (River's InsertTx or the Pipe's
// private.river_insert_unique): both decide through River's unique index, whose predicate
// (river_job_state_in_bitmask over the job's unique_states) is the one thing that says which
// states block. CRM pushes keep River's default states (every state but cancelled and
// discarded); billing refreshes leave completed out as well.
func TestEveryStateBlocksItsKeyAsRiverSays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	type kind struct {
		name    string
		enqueue func(key string) func(context.Context, pgx.Tx) error
		match   string // selects the jobs of one key
		states  []rivertype.JobState
	}
	refresh := jobs.BillingRefreshArgs{}.InsertOpts().UniqueOpts.ByState
	tenants := map[string]uuid.UUID{}
	for _, k := range []kind{
		{"crm push", func(key string) func(context.Context, pgx.Tx) error {
			// A tenant per key: a push rides on its tenant's waiting one
			// (TestCRMPushRidesOnAWaitingOneOnly), so another key's available job would
			// carry it instead of the unique index deciding.
			tenant := tenants[key]
			if tenant == uuid.Nil {
				tenant = newTenant(t, b.pool, "")
				tenants[key] = tenant
			}
			return func(ctx context.Context, tx pgx.Tx) error {
				return b.inserter.EnqueueCRMSync(ctx, tx, tenant, key, 1)
			}
		}, `args->>'source_event' = $1`, rivertype.UniqueOptsByStateDefault()},
		{"billing refresh", func(key string) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				return b.inserter.EnqueueBillingRefresh(ctx, tx, b.tenantID, key, time.Unix(1_700_000_000, 0))
			}
		}, `args->>'subscription_id' = $1`, refresh},
	} {
		var states []string
		rows, err := b.pool.Query(ctx, `select unnest(enum_range(null::private.river_job_state))::text`)
		require.NoError(t, err)
		states, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Len(t, states, 8, "River's job states")
		for _, state := range states {
			blocks := slices.Contains(k.states, rivertype.JobState(state))
			for again, enqueue := range map[string]func(*testing.T, bundle, func(context.Context, pgx.Tx) error){
				"in a pipe": enqueueInPipe, "with River": enqueueWithRiver,
			} {
				key := fmt.Sprintf("%s_%s_%s", k.name, state, again)
				enqueueWithRiver(t, b, k.enqueue(key))
				_, err := b.pool.Exec(ctx, `update private.river_job set state = $2::private.river_job_state,
					finalized_at = case when $2 in ('cancelled', 'completed', 'discarded') then now() end
					where `+k.match, key, state)
				require.NoError(t, err)
				enqueue(t, b, k.enqueue(key))
				var n int
				require.NoError(t, b.pool.QueryRow(ctx, `select count(*) from private.river_job where `+k.match, key).Scan(&n))
				want := 2
				if blocks {
					want = 1
				}
				require.Equal(t, want, n, "%s: a job %s, queued again %s", k.name, state, again)
			}
		}
	}
}

// A push queued (as a job of its own) while a worker is recording the previous push's success
// waits for the worker's transaction and then sets the status pending: the status does not say
// synced while a push the worker did not carry is waiting. Both writers decide on the status's
// latest version under its row lock (ON CONFLICT DO UPDATE locks the row before it evaluates
// its WHERE), so a change that decided on the version the statement's snapshot sees fails here.
func TestQueuedPushWaitsForAWorkersStatusThenSetsItPending(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for name, enqueue := range map[string]func(ctx context.Context, f func(context.Context, pgx.Tx) error) error{
		"in a pipe": func(ctx context.Context, f func(context.Context, pgx.Tx) error) error {
			return db.PipeTx(ctx, b.pool, nil, func(p *db.Pipe) error { return f(ctx, p) })
		},
		"with River": func(ctx context.Context, f func(context.Context, pgx.Tx) error) error {
			return db.Tx(ctx, b.pool, func(tx pgx.Tx) error { return f(ctx, tx) })
		},
	} {
		tenant := newTenant(t, b.pool, "")
		push := func(event string) func(context.Context, pgx.Tx) error {
			return func(ctx context.Context, tx pgx.Tx) error {
				return b.inserter.EnqueueCRMSync(ctx, tx, tenant, event, 1)
			}
		}
		require.NoError(t, enqueue(ctx, push("evt_1")), name)
		require.Equal(t, "pending", syncState(t, b.pool, jobs.QueueCRM, jobs.CRMSubject(tenant)), name)

		// A worker has taken the job (so the next push cannot ride on it: it gets a job of its
		// own) and records its success.
		_, err := b.pool.Exec(ctx, `update private.river_job set state = 'running', attempt = 1, attempted_at = now()
			where kind = 'crm_sync' and args->>'tenant_id' = $1`, tenant.String())
		require.NoError(t, err)
		worker, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		// On a failure below, the worker must not hold the row (and the test database) forever.
		t.Cleanup(func() { _ = worker.Rollback(context.Background()) })
		_, err = worker.Exec(ctx, `update private.sync_status set state = 'synced', last_success_at = now(),
			last_attempt_at = now(), attempts = 1 where integration = 'crm' and subject = $1`, jobs.CRMSubject(tenant))
		require.NoError(t, err)
		queued := make(chan error, 1)
		go func() { queued <- enqueue(ctx, push("evt_2")) }()
		require.Eventually(t, func() bool {
			var waiting int
			err := b.pool.QueryRow(ctx, `select count(*) from pg_stat_activity
				where datname = current_database() and wait_event_type = 'Lock'`).Scan(&waiting)
			return err == nil && waiting > 0
		}, 5*time.Second, 10*time.Millisecond, "%s: the push waits for the worker's row lock", name)
		require.NoError(t, worker.Commit(ctx))
		require.NoError(t, <-queued, name)
		require.Equal(t, "pending", syncState(t, b.pool, jobs.QueueCRM, jobs.CRMSubject(tenant)), "%s: a push the worker did not see is waiting", name)
	}
}
