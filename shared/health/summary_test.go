package health_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// randomOutcome is one attempt's result: mostly success, some retryable failures, some
// permanent ones (cancelled: a dead letter), some rate limits (snoozed, no attempt used).
func randomOutcome() error {
	switch n := rand.IntN(20); {
	case n < 11:
		return nil
	case n < 16:
		return errors.New("provider blip")
	case n < 18:
		return jobs.Permanent(errors.New("provider refused the record"))
	default:
		return jobs.RetryAfter(time.Second, errors.New("429"))
	}
}

func randomWorkers() *river.Workers {
	ws := river.NewWorkers()
	river.AddWorker(ws, river.WorkFunc(func(context.Context, *river.Job[jobs.CRMSyncArgs]) error { return randomOutcome() }))
	river.AddWorker(ws, river.WorkFunc(func(context.Context, *river.Job[jobs.HelpdeskTicketArgs]) error { return randomOutcome() }))
	return ws
}

// What the owner's health shows is kept in the writes (summary rows and 5-minute counters
// maintained in the transactions that change a job or a sync status), and must equal what a
// recount from history says, however the writes interleave. Many goroutines at once enqueue
// pushes (some duplicates), work them with real River clients whose attempts succeed, fail,
// die or get rate limited at random, cut some jobs' attempts short (so they are discarded),
// and requeue dead letters; then every tenant's maintained numbers are compared with the
// recount: River's job history for attempts, failures, waiting and dead jobs, and the
// per-subject sync status for the portal's sync summary. Half the enqueuers write their jobs
// through River's client (counted by the insert trigger), half in a db.Pipe as the webhook
// does (counted by private.river_insert_unique itself), with duplicates across both.
func TestOwnerHealthKeptInWritesEqualsARecountFromHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	tenants := make([]uuid.UUID, 5)
	for i := range tenants {
		require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('t') returning id`).Scan(&tenants[i]))
	}
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)

	var enqueuing sync.WaitGroup
	var tickets sync.Map
	for g := range 8 {
		enqueuing.Go(func() {
			for i := range 30 {
				tn := tenants[rand.IntN(len(tenants))]
				ticket := uuid.New()
				if i%5 == 4 { // a repeat: unique-skipped, must change nothing
					tickets.Range(func(k, v any) bool { ticket, tn = k.(uuid.UUID), v.(uuid.UUID); return false })
				}
				tickets.Store(ticket, tn)
				enqueue := func(tx pgx.Tx) error {
					if err := ins.EnqueueCRMSync(ctx, tx, tn, fmt.Sprintf("evt_%d", rand.IntN(60)), 0); err != nil {
						return err
					}
					return ins.EnqueueHelpdeskTicket(ctx, tx, tn, ticket)
				}
				var err error
				if g%2 == 0 { // River's InsertTx: the insert trigger counts the job
					err = db.Tx(ctx, pool, enqueue)
				} else { // the webhook's way: private.river_insert_unique counts it in its statement
					err = db.PipeTx(ctx, pool, nil, func(p *db.Pipe) error { return enqueue(p) })
				}
				if err != nil {
					t.Errorf("enqueue %d/%d: %v", g, i, err)
					return
				}
			}
		})
	}

	var done atomic.Bool
	var churn sync.WaitGroup
	for _, queue := range []string{jobs.QueueCRM, jobs.QueueHelpdesk, jobs.QueueCRM, jobs.QueueHelpdesk} {
		churn.Go(func() {
			cfg := jobs.RunConfig{Queue: queue, Workers: randomWorkers(), Budget: 10 * time.Second, MaxWorkers: 10,
				Backoff: jobs.Backoff{First: time.Millisecond, Cap: 5 * time.Millisecond}}
			for rounds := 0; !done.Load() || rounds < 3; {
				if _, err := jobs.Run(ctx, pool, cfg); err != nil {
					t.Errorf("run %s: %v", queue, err)
					return
				}
				if done.Load() {
					rounds++
				}
			}
		})
	}
	churn.Go(func() { // ops: cut attempts short, so River discards on the next failure
		for !done.Load() {
			if _, err := pool.Exec(ctx, `update private.river_job set max_attempts = attempt + 1
				where id in (select id from private.river_job where state in ('available', 'retryable') order by random() limit 3)`); err != nil {
				t.Errorf("cut attempts: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	var deliveries sync.WaitGroup
	for g := range 4 {
		deliveries.Go(func() { churnDeliveries(ctx, t, pool, tenants, g, 60) })
	}
	var requeued atomic.Int64
	churn.Go(func() { // ops: requeue (or resolve) dead letters while they are being made
		for !done.Load() {
			for _, integration := range []string{jobs.QueueCRM, jobs.QueueHelpdesk} {
				tn := tenants[rand.IntN(len(tenants))]
				n, err := jobs.Requeue(ctx, pool, jobs.RequeueFilter{Integration: integration, TenantID: &tn})
				var pgErr *pgconn.PgError
				// Not a dead letter any more (raced), or a live job with the same unique args
				// exists (a dead letter's push was enqueued again): River refuses, which is right.
				if err != nil && !errors.Is(err, jobs.ErrNotDeadLetter) && !(errors.As(err, &pgErr) && pgErr.Code == "23505") {
					t.Errorf("requeue: %v", err)
					return
				}
				requeued.Add(int64(n.Requeued))
				// and resolve one without running it again: it leaves the dead count too.
				letters, err := jobs.DeadLetters(ctx, pool, integration, &tn)
				if err != nil {
					t.Errorf("dead letters: %v", err)
					return
				}
				if len(letters) > 0 {
					if err := jobs.Resolve(ctx, pool, letters[0].JobID, "test"); err != nil && !errors.Is(err, jobs.ErrNotDeadLetter) {
						t.Errorf("resolve: %v", err)
						return
					}
				}
			}
			time.Sleep(30 * time.Millisecond)
		}
	})
	enqueuing.Wait()
	deliveries.Wait()
	// The random churn may leave a state with no event in it (reconcile may have applied
	// every unapplied one): one last delivery of each, so the comparison always covers them.
	for i, o := range []struct {
		outcome string
		applied bool
	}{{"processed", true}, {"processed", false}, {"ignored", false}, {"unmatched", false}, {"refused", false}} {
		_, err := pool.Exec(ctx, `insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, received_at, applied_at)
			values ($1, 'invoice.paid', now(), '{}', $2, $3, now(), case when $4 then now() end)`,
			fmt.Sprintf("evt_last_%d", i), tenants[i%len(tenants)], o.outcome, o.applied)
		require.NoError(t, err)
	}
	done.Store(true)
	churn.Wait()
	require.False(t, t.Failed())

	// The run went through every transition the summary has to follow.
	var completed, failures, cancelled, discarded int
	require.NoError(t, pool.QueryRow(ctx, `
		select count(*) filter (where state = 'completed'), coalesce(sum(cardinality(errors)), 0),
		       count(*) filter (where state = 'cancelled'), count(*) filter (where state = 'discarded')
		from private.river_job`).Scan(&completed, &failures, &cancelled, &discarded))
	t.Logf("completed %d, failed attempts %d, cancelled %d, discarded %d, requeued %d", completed, failures, cancelled, discarded, requeued.Load())
	require.Positive(t, completed)
	require.Positive(t, failures)
	require.Positive(t, cancelled+discarded)
	require.Positive(t, requeued.Load())
	var countedInStatement, countedByTrigger int
	require.NoError(t, pool.QueryRow(ctx, `
		select count(*) filter (where counted), count(*) filter (where counted is null)
		from private.river_job where kind in ('crm_sync', 'helpdesk_ticket')`).Scan(&countedInStatement, &countedByTrigger))
	require.Positive(t, countedInStatement, "jobs queued in a db.Pipe")
	require.Positive(t, countedByTrigger, "jobs queued by River's client")
	var outcomes, unapplied, buckets int
	require.NoError(t, pool.QueryRow(ctx, `
		select count(distinct outcome), count(*) filter (where outcome = 'processed' and applied_at is null),
		       count(distinct date_bin('5 minutes', received_at, '2000-01-01'))
		from private.stripe_events where tenant_id is not null`).Scan(&outcomes, &unapplied, &buckets))
	require.Equal(t, 4, outcomes, "every outcome was counted")
	require.Positive(t, unapplied)
	require.Greater(t, buckets, 5)

	requireSummaryEqualsRecount(t, pool)
	for _, tn := range tenants {
		kept, err := health.ForTenant(ctx, pool, tn, 0)
		require.NoError(t, err)
		recount, err := health.Read(ctx, pool, health.Query{TenantID: tn, Now: kept.Until})
		require.NoError(t, err)
		require.Equal(t, recount.Webhook, kept.Webhook, tn)
		require.Equal(t, recount.Integrations, kept.Integrations, tn)
	}
}

// requireSummaryEqualsRecount compares the maintained rows themselves with aggregates over
// River's jobs and the sync status, per tenant and integration.
func requireSummaryEqualsRecount(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	rows := func(sql string) map[string]string {
		t.Helper()
		r, err := pool.Query(ctx, sql)
		require.NoError(t, err)
		out := map[string]string{}
		for r.Next() {
			var k, v string
			require.NoError(t, r.Scan(&k, &v))
			out[k] = v
		}
		require.NoError(t, r.Err())
		return out
	}
	integration := `case kind when 'crm_sync' then 'crm' else 'helpdesk' end`
	require.Equal(t,
		rows(`select (args->>'tenant_id') || '/' || `+integration+`,
		             count(*) filter (where state in ('available', 'pending', 'retryable', 'running', 'scheduled')) || ' waiting, ' ||
		             count(*) filter (where state in ('discarded', 'cancelled') and not metadata ? 'resolved_at') || ' dead'
		      from private.river_job where kind in ('crm_sync', 'helpdesk_ticket') group by 1
		      having count(*) filter (where state in ('available', 'pending', 'retryable', 'running', 'scheduled')) <> 0
		          or count(*) filter (where state in ('discarded', 'cancelled') and not metadata ? 'resolved_at') <> 0`),
		rows(`select tenant_id || '/' || integration, sum(waiting) || ' waiting, ' || sum(dead) || ' dead' from private.job_summary
		      group by tenant_id, integration having sum(waiting) <> 0 or sum(dead) <> 0`),
		"waiting and dead jobs")
	require.Equal(t,
		rows(`with attempts as (
		          select args->>'tenant_id' as tenant_id, `+integration+` as integration, (e->>'at')::timestamptz as at, 0 as ok, 1 as failed
		          from private.river_job, unnest(errors) e where kind in ('crm_sync', 'helpdesk_ticket')
		          union all
		          select args->>'tenant_id', `+integration+`, finalized_at, 1, 0
		          from private.river_job where kind in ('crm_sync', 'helpdesk_ticket') and state = 'completed')
		      select tenant_id || '/' || integration || '/' || date_bin('5 minutes', at, '2000-01-01'),
		             sum(ok) || ' succeeded, ' || sum(failed) || ' failed'
		      from attempts group by 1`),
		rows(`select tenant_id || '/' || integration || '/' || bucket, succeeded || ' succeeded, ' || failed || ' failed'
		      from private.job_attempts`),
		"attempts per 5 minutes")
	require.Equal(t,
		rows(`select tenant_id || '/' || integration,
		             count(*) filter (where state = 'pending') || ' pending, ' || count(*) filter (where state = 'retrying') || ' retrying, ' ||
		             count(*) filter (where state = 'failed') || ' failed, ' || count(*) filter (where state = 'synced') || ' synced, ' ||
		             coalesce(max(last_success_at)::text, '-') || ', ' || coalesce(max(last_attempt_at)::text, '-')
		      from private.sync_status group by 1`),
		rows(`select tenant_id || '/' || integration,
		             sum(pending) || ' pending, ' || sum(retrying) || ' retrying, ' || sum(failed) || ' failed, ' || sum(synced) || ' synced, ' ||
		             coalesce(max(last_success_at)::text, '-') || ', ' || coalesce(max(last_attempt_at)::text, '-')
		      from private.sync_summary group by tenant_id, integration having sum(pending + retrying + failed + synced) > 0`),
		"sync status per subject state")
	require.Equal(t,
		rows(`select tenant_id || '/' || date_bin('5 minutes', received_at, '2000-01-01'),
		             count(*) || ' received, ' || count(*) filter (where outcome = 'processed') || ' processed, ' ||
		             count(*) filter (where outcome = 'ignored') || ' ignored, ' || count(*) filter (where outcome = 'unmatched') || ' unmatched, ' ||
		             count(*) filter (where outcome = 'refused') || ' refused, ' ||
		             count(*) filter (where outcome = 'processed' and applied_at is null) || ' unapplied'
		      from private.stripe_events where tenant_id is not null and received_at >= now() - interval '8 days' group by 1`),
		rows(`select tenant_id || '/' || bucket,
		             sum(received) || ' received, ' || sum(processed) || ' processed, ' || sum(ignored) || ' ignored, ' ||
		             sum(unmatched) || ' unmatched, ' || sum(refused) || ' refused, ' || sum(unapplied) || ' unapplied'
		      from private.webhook_delivery_buckets group by tenant_id, bucket
		      having sum(received) <> 0 or sum(processed) <> 0 or sum(ignored) <> 0
		          or sum(unmatched) <> 0 or sum(refused) <> 0 or sum(unapplied) <> 0`),
		"webhook deliveries per tenant and 5 minutes")
}

// churnDeliveries writes n random Stripe inbox changes in the shapes the product writes them,
// each in a transaction of its own (a tenth rolled back): the webhook's insert without a
// tenant followed by the update that records the outcome (today's path), the insert that
// carries the final outcome at once (the shape issue 12 may move to), reconcile's ApplyStored
// (unmatched or unapplied becoming applied under a tenant), a tenant's event moving to another
// tenant or to none, a deleted event, and events received over the last two hours and nine
// days ago (past the counters' horizon).
func churnDeliveries(ctx context.Context, t *testing.T, pool *pgxpool.Pool, tenants []uuid.UUID, g, n int) {
	outcomes := []string{"processed", "processed", "ignored", "unmatched", "refused"}
	pick := func() *uuid.UUID {
		if rand.IntN(6) == 0 {
			return nil
		}
		tn := tenants[rand.IntN(len(tenants))]
		return &tn
	}
	for i := range n {
		id := fmt.Sprintf("evt_%d_%d", g, i)
		age := time.Duration(rand.IntN(120)) * time.Minute
		if rand.IntN(15) == 0 {
			age = 9 * 24 * time.Hour
		}
		outcome, applied := outcomes[rand.IntN(len(outcomes))], rand.IntN(3) > 0
		err := db.Tx(ctx, pool, func(tx pgx.Tx) error {
			var err error
			switch rand.IntN(5) {
			case 0, 1: // the webhook today: claim, then record the outcome before commit
				if _, err = tx.Exec(ctx, `insert into private.stripe_events (id, type, created, payload, outcome, received_at)
					values ($1, 'invoice.paid', now(), '{}', 'processed', now() - $2::interval)`, id, age.String()); err != nil {
					return err
				}
				_, err = tx.Exec(ctx, `update private.stripe_events set outcome = $2, tenant_id = $3,
					applied_at = case when $2 = 'processed' and $4 then now() end, crm_sync = true where id = $1`,
					id, outcome, pick(), applied)
			case 2: // the final outcome in the insert
				_, err = tx.Exec(ctx, `insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, received_at, applied_at)
					values ($1, 'invoice.paid', now(), '{}', $2, $3, now() - $4::interval, case when $3 = 'processed' and $5 then now() end)`,
					id, pick(), outcome, age.String(), applied)
			case 3: // reconcile applies an earlier event (unmatched, or stored but unapplied)
				_, err = tx.Exec(ctx, `update private.stripe_events set outcome = 'processed', applied_at = now(),
					tenant_id = coalesce(tenant_id, $1)
					where id = (select id from private.stripe_events
					            where outcome = 'unmatched' or (outcome = 'processed' and applied_at is null)
					            order by random() limit 1 for update skip locked)`, pick())
			default: // an earlier event changes tenant, loses it, or goes
				if rand.IntN(4) == 0 {
					_, err = tx.Exec(ctx, `delete from private.stripe_events where id = (select id from private.stripe_events
						order by random() limit 1 for update skip locked)`)
				} else {
					_, err = tx.Exec(ctx, `update private.stripe_events set tenant_id = $1 where id = (select id from private.stripe_events
						order by random() limit 1 for update skip locked)`, pick())
				}
			}
			if err == nil && rand.IntN(10) == 0 {
				return errRolledBack
			}
			return err
		})
		if err != nil && !errors.Is(err, errRolledBack) {
			t.Errorf("delivery %s: %v", id, err)
			return
		}
	}
}

// errRolledBack makes a churn transaction roll back on purpose.
var errRolledBack = errors.New("rolled back on purpose")

// A tenant deleted with its sync statuses (the foreign key's cascade) takes its summary rows
// along, and the summary's trigger does not resurrect them halfway through the cascade.
func TestDeletingATenantDeletesItsSyncSummary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var tn uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('t') returning id`).Scan(&tn))
	_, err := pool.Exec(ctx, `insert into private.sync_status (integration, subject, tenant_id, state)
		values ('crm', 'tenant:x', $1, 'pending'), ('helpdesk', 'ticket:x', $1, 'failed')`, tn)
	require.NoError(t, err)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `select count(distinct integration) from private.sync_summary where tenant_id = $1`, tn).Scan(&n))
	require.Equal(t, 2, n)
	_, err = pool.Exec(ctx, `delete from public.tenants where id = $1`, tn)
	require.NoError(t, err)
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from private.sync_summary where tenant_id = $1`, tn).Scan(&n))
	require.Zero(t, n)
}

// The webhook counters stay bounded without a cron: the first delivery of a tenant's new
// 5-minute bucket deletes its buckets past the 8-day horizon (health.MaxWindow is 7 days), and
// an event received before the horizon (reconcile applying an old stored event) counts
// nowhere. A deleted tenant's counters go with it, and its events, whose tenant becomes null,
// leave the counts without failing the cascade.
func TestWebhookCountersStayBoundedAndLeaveWithTheTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var tn uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('t') returning id`).Scan(&tn))
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	buckets := func() []string {
		t.Helper()
		rows, err := pool.Query(ctx, `select (now() - bucket > interval '8 days')::text || ' ' || received
			from private.webhook_delivery_counts where tenant_id = $1 order by bucket`, tn)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	// A bucket from before the horizon, as a long-running system would have.
	exec(`insert into private.webhook_delivery_counts (tenant_id, bucket, received, processed)
		values ($1, date_bin('5 minutes', now() - interval '9 days', '2000-01-01'), 4, 4)`, tn)
	exec(`insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, received_at)
		values ('evt_ancient', 'invoice.paid', now(), '{}', $1, 'processed', now() - interval '10 days')`, tn)
	require.Equal(t, []string{"true 4"}, buckets(), "an event past the horizon counts nowhere")
	exec(`insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, applied_at)
		values ('evt_now', 'invoice.paid', now(), '{}', $1, 'processed', now())`, tn)
	require.Equal(t, []string{"false 1"}, buckets(), "the new bucket pruned the old one")
	kept, err := health.ForTenant(ctx, pool, tn, health.MaxWindow)
	require.NoError(t, err)
	require.Equal(t, health.Webhook{Received: 1, Processed: 1, SuccessRate: 1}, kept.Webhook)

	exec(`delete from public.tenants where id = $1`, tn)
	require.Empty(t, buckets())
	var orphans int
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from private.stripe_events where tenant_id is null`).Scan(&orphans))
	require.Equal(t, 2, orphans, "the events stay, without a tenant")
}

// Ops' repair: after River's tables were changed behind the triggers' back (here: with
// triggers off, as a bulk load or a manual fix does), Rebuild recounts the kept rows from
// history, for one tenant without touching the others'.
func TestRebuildRecountsTheKeptSummaryFromHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	before, err := health.ForTenant(ctx, b.pool, b.b, 0)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `
		update private.job_summary set waiting = waiting + 7, dead = 0;
		delete from private.job_attempts;
		update private.sync_summary set failed = 0, synced = synced + 3;
		delete from private.webhook_delivery_counts`)
	require.NoError(t, err)
	broken, err := health.ForTenant(ctx, b.pool, b.a, 0)
	require.NoError(t, err)
	require.Zero(t, broken.Integration(health.CRM).Attempts, "the kept rows are what ForTenant shows")
	require.Zero(t, broken.Webhook.Received, "the kept rows are what ForTenant shows")

	require.NoError(t, health.Rebuild(ctx, b.pool, b.a))
	a, err := health.ForTenant(ctx, b.pool, b.a, 0)
	require.NoError(t, err)
	recount, err := health.Read(ctx, b.pool, health.Query{TenantID: b.a, Now: a.Until})
	require.NoError(t, err)
	require.Equal(t, recount.Integrations, a.Integrations)
	require.Equal(t, recount.Webhook, a.Webhook)
	require.Equal(t, 3, a.Webhook.Received)
	stillBroken, err := health.ForTenant(ctx, b.pool, b.b, 0)
	require.NoError(t, err)
	require.NotEqual(t, before.Integrations, stillBroken.Integrations, "b was not asked for")

	require.NoError(t, health.Rebuild(ctx, b.pool, uuid.Nil))
	requireSummaryEqualsRecount(t, b.pool)
}

// One tenant's ticket creations do not wait for each other's summary rows: 20 transactions at
// once (more than the 16 shards a connection's pid used to pick, so two of them always met
// on a row, and the later waited for the earlier's commit), each enqueueing a ticket of the
// same tenant and holding it uncommitted, all get through without a lock wait (lock_timeout
// turns one into an error). Each write claims a shard no other open transaction holds.
func TestOneTenantsConcurrentEnqueuesDoNotWaitForEachOther(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var tn uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('busy') returning id`).Scan(&tn))
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)

	const open = 20
	var txs []pgx.Tx
	for range open {
		conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
		require.NoError(t, err)
		defer func() { _ = conn.Close(ctx) }()
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		_, err = tx.Exec(ctx, `set local lock_timeout = '1s'`)
		require.NoError(t, err)
		require.NoError(t, ins.EnqueueHelpdeskTicket(ctx, tx, tn, uuid.New()), "ticket %d waited for another", len(txs)+1)
		txs = append(txs, tx)
	}
	for _, tx := range txs {
		require.NoError(t, tx.Commit(ctx))
	}

	kept, err := health.ForTenant(ctx, pool, tn, 0)
	require.NoError(t, err)
	require.Equal(t, open, kept.Integration(health.Helpdesk).Pending)
	requireSummaryEqualsRecount(t, pool)
}

// The sync summary follows every kind of update of a sync status, now that its update trigger
// fires without a WHEN and the function itself returns for an update that changes nothing the
// summary keeps (20261206310200_sync_summary_update_without_when.sql): after each update the
// kept rows equal the recount, and an update of only what the summary does not keep (attempts,
// last error, subject, updated_at) writes no summary row.
func TestSyncSummaryFollowsEveryKindOfStatusUpdate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var a, b uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('a') returning id`).Scan(&a))
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('b') returning id`).Scan(&b))
	_, err := pool.Exec(ctx, `insert into private.sync_status (integration, subject, tenant_id, state)
		values ('crm', 'tenant:a', $1, 'pending'), ('helpdesk', 'ticket:a', $1, 'failed')`, a)
	require.NoError(t, err)
	requireSummaryEqualsRecount(t, pool)
	versions := func() string {
		t.Helper()
		var v string
		require.NoError(t, pool.QueryRow(ctx, `select coalesce(string_agg(xmin::text || ctid::text, ',' order by tenant_id, integration, shard), '')
			from private.sync_summary`).Scan(&v))
		return v
	}
	for _, c := range []struct {
		name    string
		set     string
		changes bool // the summary changes
	}{
		{"attempts", `attempts = attempts + 1`, false},
		{"last error and updated_at", `last_error = 'boom', updated_at = now() + interval '1 minute'`, false},
		{"subject", `subject = subject || '!'`, false},
		{"state", `state = 'retrying'`, true},
		{"last attempt", `last_attempt_at = now()`, true},
		{"last success and state", `state = 'synced', last_success_at = now()`, true},
		{"the same state again", `state = state`, false},
		{"tenant", `tenant_id = $1`, true},
		{"integration", `integration = case integration when 'crm' then 'helpdesk' else 'crm' end`, true},
		{"tenant and state", `tenant_id = $2, state = 'pending'`, true},
	} {
		before := versions()
		_, err := pool.Exec(ctx, `update private.sync_status set `+c.set+` where $1::uuid is not null and $2::uuid is not null`, b, a)
		require.NoError(t, err, c.name)
		requireSummaryEqualsRecount(t, pool)
		if c.changes {
			require.NotEqual(t, before, versions(), "%s: the summary follows", c.name)
		} else {
			require.Equal(t, before, versions(), "%s: nothing the summary keeps changed, so no summary row is written", c.name)
		}
	}
}

// The sync summary's rule on integration holds as it did as a table check, now that it is the
// column's domain check (20261206310300_sync_summary_checks_cached.sql): a write outside it
// fails with check_violation under the rule's name, on insert and on update; and the portal's
// view of the summary, created again for the change, still shows integration as text.
func TestSyncSummaryRuleStillHolds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var tn uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('t') returning id`).Scan(&tn))
	_, err := pool.Exec(ctx, `insert into private.sync_summary (tenant_id, integration, shard, pending) values ($1, 'crm', 0, 1)`, tn)
	require.NoError(t, err)
	for name, sql := range map[string]string{
		"insert": `insert into private.sync_summary (tenant_id, integration, shard, pending) values ($1, 'slack', 1, 1)`,
		"update": `update private.sync_summary set integration = 'CRM' where tenant_id = $1`,
	} {
		_, err := pool.Exec(ctx, sql, tn)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%s: %v", name, err)
		require.Equal(t, "23514", pgErr.Code, name)
		require.Equal(t, "sync_summary_integration_check", pgErr.ConstraintName, name)
	}
	var typ string
	require.NoError(t, pool.QueryRow(ctx, `select format_type(atttypid, atttypmod) from pg_attribute
		where attrelid = 'public.portal_sync_summary'::regclass and attname = 'integration'`).Scan(&typ))
	require.Equal(t, "text", typ)
}
