package health_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

type bundle struct {
	pool *pgxpool.Pool
	a, b uuid.UUID
}

// setup builds a day of traffic for two tenants: deliveries of every outcome, pushes that
// succeeded, failed, wait and died.
func setup(t *testing.T) bundle {
	t.Helper()
	ctx := context.Background()
	pool := dbtest.New(t)
	b := bundle{pool: pool}
	for _, p := range []*uuid.UUID{&b.a, &b.b} {
		require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('t') returning id`).Scan(p))
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	ev := func(id string, tenant *uuid.UUID, outcome string, applied bool, age time.Duration) {
		exec(`insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, received_at, applied_at)
		      values ($1, 'invoice.paid', now(), '{}', $2, $3, now() - $4::interval, case when $5 then now() end)`,
			id, tenant, outcome, age.String(), applied)
	}
	ev("evt_a1", &b.a, "processed", true, time.Hour)
	ev("evt_a2", &b.a, "processed", true, 2*time.Hour)
	ev("evt_a3", &b.a, "ignored", false, 3*time.Hour)
	ev("evt_b1", &b.b, "processed", true, time.Hour)
	ev("evt_x1", nil, "unmatched", false, time.Hour)
	ev("evt_old", &b.a, "processed", true, 48*time.Hour) // outside the window
	require.NoError(t, health.RecordRejectedDelivery(ctx, pool, health.Rejection{Reason: health.RejectedSignature, Status: 400}))

	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	require.NoError(t, db.Tx(ctx, pool, func(tx pgx.Tx) error {
		for _, e := range []string{"evt_a1", "evt_a2"} {
			if err := ins.EnqueueCRMSync(ctx, tx, b.a, e, 0); err != nil {
				return err
			}
		}
		if err := ins.EnqueueCRMSync(ctx, tx, b.b, "evt_b1", 0); err != nil {
			return err
		}
		return ins.EnqueueHelpdeskTicket(ctx, tx, b.b, uuid.New())
	}))
	// a1 succeeded after one failure; a2 waits (created 30 minutes ago); b1 died after two
	// failures; the helpdesk job waits.
	exec(`update private.river_job set state = 'completed', attempt = 2, finalized_at = now() - interval '10 minutes',
	          errors = array[jsonb_build_object('at', now() - interval '20 minutes', 'attempt', 1, 'error', 'timeout')]
	      where args->>'source_event' = 'evt_a1'`)
	exec(`update private.river_job set created_at = now() - interval '30 minutes' where args->>'source_event' = 'evt_a2'`)
	exec(`update private.river_job set state = 'discarded', attempt = 2, finalized_at = now(),
	          errors = array[jsonb_build_object('at', now() - interval '5 minutes', 'attempt', 1, 'error', '500'),
	                         jsonb_build_object('at', now() - interval '1 minute', 'attempt', 2, 'error', '500')]
	      where args->>'source_event' = 'evt_b1'`)
	exec(`update private.sync_status set state = 'synced', last_success_at = now() - interval '10 minutes' where subject = $1`, jobs.CRMSubject(b.a))
	exec(`update private.sync_status set state = 'failed' where subject = $1`, jobs.CRMSubject(b.b))
	return b
}

func TestRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	all, err := health.Read(ctx, b.pool, health.Query{})
	require.NoError(t, err)
	require.Equal(t, health.Webhook{Received: 5, Processed: 3, Ignored: 1, Unmatched: 1, Rejected: 1,
		SuccessRate: 4.0 / 6.0}, all.Webhook)
	crm := all.Integration(health.CRM)
	require.Equal(t, 4, crm.Attempts, "a1: one failure and one success; b1: two failures")
	require.Equal(t, 3, crm.Failures)
	require.Equal(t, 1, crm.Pending)
	require.InDelta(t, 30*60, crm.OldestPendingSeconds, 60)
	require.Equal(t, 1, crm.DeadLetters)
	require.Equal(t, 1, crm.FailingSubjects)
	require.NotNil(t, crm.LastSuccessAt)
	require.Equal(t, 1, all.Integration(health.Helpdesk).Pending)

	cases := []struct {
		name    string
		tenant  uuid.UUID
		webhook health.Webhook
		crm     [3]int // attempts, failures, dead letters
	}{
		{name: "tenant a", tenant: b.a, webhook: health.Webhook{Received: 3, Processed: 2, Ignored: 1, SuccessRate: 1}, crm: [3]int{2, 1, 0}},
		{name: "tenant b", tenant: b.b, webhook: health.Webhook{Received: 1, Processed: 1, SuccessRate: 1}, crm: [3]int{2, 2, 1}},
	}
	for _, tc := range cases {
		r, err := health.ForTenant(ctx, b.pool, tc.tenant, 0)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.webhook, r.Webhook, tc.name)
		c := r.Integration(health.CRM)
		require.Equal(t, tc.crm, [3]int{c.Attempts, c.Failures, c.DeadLetters}, tc.name)
	}
}

func TestReadRefusesWhatItCannotAnswer(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	for _, w := range []time.Duration{time.Second, 8 * 24 * time.Hour, -time.Hour} {
		_, err := health.Read(context.Background(), pool, health.Query{Window: w})
		require.ErrorIs(t, err, health.ErrBadWindow, w.String())
	}
	// An owner's view without a tenant would be every tenant's numbers.
	_, err := health.ForTenant(context.Background(), pool, uuid.Nil, 0)
	require.ErrorIs(t, err, health.ErrNoTenant)
}

// Rejection counts prune themselves: each refusal deletes a bounded batch of minutes past the
// retention, so a webhook under a long bad-signature storm keeps a bounded table, and the
// minutes the health window (and a month of hindsight) needs stay.
func TestRecordRejectedDeliveryPrunesExpiredMinutes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	expired := health.RejectionPruneBatch + health.RejectionPruneBatch/2
	_, err := pool.Exec(ctx, `
		insert into private.webhook_rejection_counts (minute, reason, refused, last_status)
		select date_trunc('minute', now() - make_interval(secs => $1) - make_interval(mins => g)), 'signature', 7, 400
		from generate_series(1, $2) g`,
		health.RejectionRetention.Seconds(), expired)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		insert into private.webhook_rejection_counts (minute, reason, refused, last_status)
		values (date_trunc('minute', now() - make_interval(secs => $1) + interval '1 hour'), 'error', 1, 503)`, health.RejectionRetention.Seconds())
	require.NoError(t, err)
	counts := func() (old, kept int) {
		t.Helper()
		require.NoError(t, pool.QueryRow(ctx, `
			select count(*) filter (where minute < now() - make_interval(secs => $1)), count(*) filter (where minute >= now() - make_interval(secs => $1))
			from private.webhook_rejection_counts`, health.RejectionRetention.Seconds()).Scan(&old, &kept))
		return old, kept
	}

	minute := func() (m time.Time) {
		t.Helper()
		require.NoError(t, pool.QueryRow(ctx, `select date_trunc('minute', clock_timestamp())`).Scan(&m))
		return m
	}
	rej := health.Rejection{Reason: health.RejectedSignature, Status: 400}
	first := minute()
	require.NoError(t, health.RecordRejectedDelivery(ctx, pool, rej))
	old, kept := counts()
	require.Equal(t, expired-health.RejectionPruneBatch, old, "one refusal deletes one bounded batch")
	require.Equal(t, 2, kept, "the current minute and the one inside the retention")

	require.NoError(t, health.RecordRejectedDelivery(ctx, pool, rej))
	old, kept = counts()
	require.Zero(t, old)
	if minute().Equal(first) { // no minute began during the two refusals
		require.Equal(t, 2, kept, "a second refusal in the same minute adds to its row")
	} else {
		require.LessOrEqual(t, kept, 3, "at most one new minute's row")
	}

	all, err := health.Read(ctx, pool, health.Query{})
	require.NoError(t, err)
	require.Equal(t, 2, all.Webhook.Rejected, "the window counts the fresh refusals only")
}

// A reason is free text of a checked shape, so a new kind of refusal (a livemode mismatch)
// needs no migration, while anything else is refused.
func TestRecordRejectedDeliveryChecksItsInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	for name, r := range map[string]health.Rejection{
		"empty reason":    {Reason: "", Status: 400},
		"shouting reason": {Reason: "DROP TABLE", Status: 400},
		"long reason":     {Reason: strings.Repeat("a", 33), Status: 400},
		"leading digit":   {Reason: "9lives", Status: 400},
		"hyphen":          {Reason: "bad-word", Status: 400},
		"success status":  {Reason: health.RejectedError, Status: 200},
	} {
		require.ErrorIs(t, health.RecordRejectedDelivery(ctx, pool, r), health.ErrBadRejection, name)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from private.webhook_rejection_counts`).Scan(&n))
	require.Zero(t, n)
	require.NoError(t, health.RecordRejectedDelivery(ctx, pool, health.Rejection{Reason: "livemode", Status: 400}))
	require.NoError(t, health.RecordRejectedDelivery(ctx, pool, health.Rejection{Reason: "z" + strings.Repeat("_9", 15) + "a", Status: 503}),
		"the longest reason of the table's shape")
	all, err := health.Read(ctx, pool, health.Query{})
	require.NoError(t, err)
	require.Equal(t, 2, all.Webhook.Rejected)
}

// BenchmarkForTenant is the owner's GET /v1/account health section on a queue holding 100k
// jobs of 1,000 tenants and 10k inbox events: what one account read adds.
func BenchmarkForTenant(b *testing.B) {
	ctx := context.Background()
	pool := dbtest.New(b)
	_, err := pool.Exec(ctx, `
		insert into private.river_job (kind, queue, args, state, attempt, max_attempts, finalized_at, priority, created_at)
		select case when g % 2 = 0 then 'crm_sync' else 'helpdesk_ticket' end, case when g % 2 = 0 then 'crm' else 'helpdesk' end,
		       jsonb_build_object('tenant_id', md5((g % 1000)::text)::uuid::text, 'source_event', 'evt_' || g),
		       'completed', 1, 8, now() - (g % 2880) * interval '1 minute', 1, now() - (g % 2880) * interval '1 minute'
		from generate_series(1, 100000) g`)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `insert into public.tenants (id, name) select md5(g::text)::uuid, 't' || g from generate_series(0, 999) g`)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `
		insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, received_at, applied_at)
		select 'evt_' || g, 'invoice.paid', now(), '{}', md5((g % 1000)::text)::uuid, 'processed',
		       now() - (g % 2880) * interval '1 minute', now()
		from generate_series(1, 10000) g`)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `analyze private.river_job; analyze private.stripe_events`)
	require.NoError(b, err)
	tenant := uuid.MustParse("8f14e45f-ceea-167a-5a36-dedd4bea2543") // md5('7')
	b.ResetTimer()
	for b.Loop() {
		if _, err := health.ForTenant(ctx, pool, tenant, 0); err != nil {
			b.Fatal(err)
		}
	}
}
