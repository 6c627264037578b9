package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/reconcile"
)

// bundle is a fresh database with the real queue inserter and the webhook's real processor.
type bundle struct {
	pool *pgxpool.Pool
	ins  *jobs.Inserter
	proc *billing.Processor
	rec  *reconcile.Reconciler
}

func setup(t *testing.T) bundle {
	t.Helper()
	pool := dbtest.New(t)
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	proc := billing.NewProcessor(pool, ins)
	rec := reconcile.New(reconcile.Deps{Pool: pool, Enqueuer: ins, Applier: reconcile.NewBillingApplier(proc)})
	return bundle{pool: pool, ins: ins, proc: proc, rec: rec}
}

// deliverer is the payment webhook on the bundle's processor, verifying with its own signing
// secret: each call posts one payload signed as Stripe signs it and fails the test unless the
// webhook answers 200. Safe to call from a goroutine (it reports with t.Errorf).
func (b bundle) deliverer(t *testing.T) func(payload []byte) {
	t.Helper()
	const secret = "whsec_reconcile_test"
	v, err := billing.NewVerifier(billing.VerifierOptions{Secrets: []string{secret}})
	require.NoError(t, err)
	webhook := billing.NewWebhookHandler(v, b.proc, billing.WebhookOptions{})
	return func(payload []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe", bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", billing.SignedTestEvent(secret, payload, time.Now()))
		rr := httptest.NewRecorder()
		webhook.ServeHTTP(rr, req)
		if rr.Code != http.StatusOK {
			t.Errorf("delivery: %d %s", rr.Code, rr.Body)
		}
	}
}

func (b bundle) tenant(t *testing.T, name string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, b.pool.QueryRow(context.Background(), `insert into public.tenants (name) values ($1) returning id`, name).Scan(&id))
	return id
}

// event stores an inbox row as the webhook would have left it, with crm_sync as recorded.
func (b bundle) event(t *testing.T, id string, tenant uuid.UUID, created time.Time, crmSync bool) {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), `
		insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, applied_at, crm_sync)
		values ($1, 'customer.subscription.updated', $2, '{}'::jsonb, $3, 'processed', now(), $4)`,
		id, created, tenant, crmSync)
	require.NoError(t, err)
}

func (b bundle) ticket(t *testing.T, tenant uuid.UUID, subject string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, b.pool.QueryRow(context.Background(), `
		insert into public.tickets (tenant_id, subject, body, category, priority)
		values ($1, $2, 'body', 'billing', 'normal') returning id`, tenant, subject).Scan(&id))
	return id
}

func (b bundle) enqueue(t *testing.T, fn func(tx pgx.Tx) error) {
	t.Helper()
	require.NoError(t, db.Tx(context.Background(), b.pool, fn))
}

// deadLetter moves the job matching args to River's discarded state, as running out of
// attempts does.
func (b bundle) deadLetter(t *testing.T, kind string, args map[string]string) {
	t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	tag, err := b.pool.Exec(context.Background(), `
		update private.river_job set state = 'discarded', finalized_at = now(),
		    errors = array[jsonb_build_object('at', now(), 'attempt', 8, 'error', 'HubSpot answered 500')]
		where kind = $1 and args @> $2::jsonb`, kind, string(raw))
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
}

// liveJobs counts jobs of kind matching args that River will still run (or ran).
func (b bundle) liveJobs(t *testing.T, kind string, args map[string]string) int {
	t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), `
		select count(*) from private.river_job
		where kind = $1 and args @> $2::jsonb and state not in ('discarded', 'cancelled')`, kind, string(raw)).Scan(&n))
	return n
}

func (b bundle) allJobs(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), `select count(*) from private.river_job`).Scan(&n))
	return n
}

func count(r *reconcile.Report, kind string) reconcile.Count {
	for _, c := range r.Counts {
		if c.Kind == kind {
			return c
		}
	}
	return reconcile.Count{Kind: kind}
}

// brokenHistory is a system that lost follow-ups in every way reconcile repairs.
type brokenHistory struct {
	a, b                      uuid.UUID
	evOld, evNew, evDead      string
	evFine, evNoop, evOutside string
	ticketMissing, ticketDead uuid.UUID
	ticketFine                uuid.UUID
}

func breakHistory(t *testing.T, b bundle, day time.Time) brokenHistory {
	t.Helper()
	ctx := context.Background()
	h := brokenHistory{a: b.tenant(t, "Acme"), b: b.tenant(t, "Globex")}
	suffix := uuid.NewString()[:8]
	h.evOld, h.evNew, h.evDead = "evt_old_"+suffix, "evt_new_"+suffix, "evt_dead_"+suffix
	h.evFine, h.evNoop, h.evOutside = "evt_fine_"+suffix, "evt_noop_"+suffix, "evt_outside_"+suffix

	// Tenant A: two applied changes whose CRM push was lost (one push carries both).
	b.event(t, h.evOld, h.a, day.Add(1*time.Hour), true)
	b.event(t, h.evNew, h.a, day.Add(2*time.Hour), true)
	// Tenant B: a change whose push was dead-lettered, one with a live push, one that changed
	// nothing the CRM shows (no push was ever due).
	b.event(t, h.evDead, h.b, day.Add(1*time.Hour), true)
	b.enqueue(t, func(tx pgx.Tx) error { return b.ins.EnqueueCRMSync(ctx, tx, h.b, h.evDead, 0) })
	b.deadLetter(t, jobs.KindCRMSync, map[string]string{"source_event": h.evDead})
	b.event(t, h.evNoop, h.b, day.Add(3*time.Hour), false)
	// A change outside the date range: a range-scoped run must not touch it.
	b.event(t, h.evOutside, h.a, day.AddDate(0, -2, 0), true)

	// Tickets: one never queued, one dead-lettered, one waiting, one already in the helpdesk.
	h.ticketMissing = b.ticket(t, h.a, "never queued")
	h.ticketDead = b.ticket(t, h.b, "dead-lettered")
	b.enqueue(t, func(tx pgx.Tx) error { return b.ins.EnqueueHelpdeskTicket(ctx, tx, h.b, h.ticketDead) })
	b.deadLetter(t, jobs.KindHelpdeskTicket, map[string]string{"ticket_id": h.ticketDead.String()})
	h.ticketFine = b.ticket(t, h.a, "waiting")
	b.enqueue(t, func(tx pgx.Tx) error { return b.ins.EnqueueHelpdeskTicket(ctx, tx, h.a, h.ticketFine) })
	synced := b.ticket(t, h.a, "delivered")
	_, err := b.pool.Exec(ctx, `update public.tickets set helpdesk_ticket_id = 42, status = 'synced' where id = $1`, synced)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `update public.tickets set created_at = $1`, day.Add(5*time.Hour))
	require.NoError(t, err)
	// A third tenant's change whose push is still waiting: fine.
	c := b.tenant(t, "Initech")
	b.event(t, h.evFine, c, day.Add(4*time.Hour), true)
	b.enqueue(t, func(tx pgx.Tx) error { return b.ins.EnqueueCRMSync(ctx, tx, c, h.evFine, 0) })
	return h
}

func TestRunRepairsExactlyTheBrokenHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
	h := breakHistory(t, b, day)
	scope := reconcile.Scope{From: day.AddDate(0, 0, -1), To: day.AddDate(0, 0, 2)}
	jobsBefore := b.allJobs(t)

	// Dry run: reports what it would do and changes nothing.
	dry, err := b.rec.Run(ctx, reconcile.Options{Scope: scope})
	require.NoError(t, err)
	require.True(t, dry.DryRun)
	require.Equal(t, jobsBefore, b.allJobs(t), "a dry run enqueues nothing")
	crm := count(dry, reconcile.KindCRMSync)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindCRMSync, Found: 4, Fine: 1, Enqueued: 2, Skipped: 1,
		SkippedWhy: map[string]int{"carried by the push for " + h.evNew + " (a push sends the current projection)": 1}}, crm)
	hd := count(dry, reconcile.KindHelpdeskTicket)
	require.Equal(t, 3, hd.Found)
	require.Equal(t, 1, hd.Fine)
	require.Equal(t, 2, hd.Enqueued)
	require.False(t, dry.NeedsAttention())

	// Apply: exactly the missing and dead-lettered pushes are enqueued, nothing else.
	rep, err := b.rec.Run(ctx, reconcile.Options{Scope: scope, Apply: true})
	require.NoError(t, err)
	require.False(t, rep.DryRun)
	require.Equal(t, 2, count(rep, reconcile.KindCRMSync).Enqueued)
	require.Equal(t, 2, count(rep, reconcile.KindHelpdeskTicket).Enqueued)
	require.Equal(t, jobsBefore+4, b.allJobs(t), "two CRM pushes and two helpdesk pushes, no more")
	require.Equal(t, 1, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"tenant_id": h.a.String(), "source_event": h.evNew}))
	require.Equal(t, 0, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"source_event": h.evOld}), "carried by the newer push")
	require.Equal(t, 0, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"source_event": h.evOutside}), "outside the range")
	require.Equal(t, 0, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"source_event": h.evNoop}), "changed nothing the CRM shows")
	require.Equal(t, 1, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"tenant_id": h.b.String(), "source_event": h.evDead}))
	require.Equal(t, 1, b.liveJobs(t, jobs.KindHelpdeskTicket, map[string]string{"ticket_id": h.ticketMissing.String()}))
	require.Equal(t, 1, b.liveJobs(t, jobs.KindHelpdeskTicket, map[string]string{"ticket_id": h.ticketDead.String()}))
	require.Equal(t, 1, b.liveJobs(t, jobs.KindHelpdeskTicket, map[string]string{"ticket_id": h.ticketFine.String()}))
	var deadStill int
	require.NoError(t, b.pool.QueryRow(ctx, `select count(*) from private.river_job where state = 'discarded'`).Scan(&deadStill))
	require.Equal(t, 2, deadStill, "reconcile never deletes: the dead letters stay for review")
	var state string
	require.NoError(t, b.pool.QueryRow(ctx, `select state from private.sync_status where integration = 'helpdesk' and subject = $1`,
		jobs.TicketSubject(h.ticketMissing)).Scan(&state))
	require.Equal(t, "pending", state, "the portal sees the ticket queued again")

	// Second run: nothing left to enqueue.
	again, err := b.rec.Run(ctx, reconcile.Options{Scope: scope, Apply: true})
	require.NoError(t, err)
	require.Zero(t, again.Total().Enqueued, "a second run enqueues nothing: %+v", again.Items)
	require.Zero(t, again.Total().Failed)
	require.Equal(t, jobsBefore+4, b.allJobs(t))
}

func TestRunScopedToOneTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
	h := breakHistory(t, b, day)

	rep, err := b.rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: h.a}, Apply: true})
	require.NoError(t, err)
	for _, it := range rep.Items {
		require.Equal(t, h.a.String(), it.TenantID, "only tenant A's items: %+v", it)
	}
	// Tenant A's lost changes are carried by one new push (the one outside the earlier range
	// too: no range was given).
	require.Equal(t, 1, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"tenant_id": h.a.String()}))
	require.Equal(t, 3, count(rep, reconcile.KindCRMSync).Found)
	require.Equal(t, 1, b.liveJobs(t, jobs.KindHelpdeskTicket, map[string]string{"ticket_id": h.ticketMissing.String()}))
	// Tenant B's dead letters are untouched.
	require.Equal(t, 0, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"source_event": h.evDead}))
	require.Equal(t, 0, b.liveJobs(t, jobs.KindHelpdeskTicket, map[string]string{"ticket_id": h.ticketDead.String()}))
}

func TestRunRefusesUnscopedAndOverWide(t *testing.T) {
	t.Parallel()
	b := setup(t)
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
	breakHistory(t, b, day)
	jobsBefore := b.allJobs(t)
	cases := []struct {
		name  string
		scope reconcile.Scope
		want  error
	}{
		{name: "unscoped", scope: reconcile.Scope{}, want: reconcile.ErrUnscoped},
		{name: "32 days", scope: reconcile.Scope{From: day.AddDate(0, 0, -32), To: day}, want: reconcile.ErrRangeTooWide},
		{name: "open range", scope: reconcile.Scope{From: day}, want: reconcile.ErrRangeIncomplete},
	}
	for _, tc := range cases {
		rep, err := b.rec.Run(context.Background(), reconcile.Options{Scope: tc.scope, Apply: true})
		require.ErrorIs(t, err, tc.want, tc.name)
		require.Nil(t, rep, tc.name)
	}
	require.Equal(t, jobsBefore, b.allJobs(t), "a refused run changes nothing")
}

// Reconcile compares versions, not job times: a push that completed after the change but sent
// an older version of the projection (two pushes overlapped at HubSpot) does not carry it, and
// a push of the current version does, even when River has pruned its job.
func TestRunComparesCRMVersionsNotJobTimes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a := b.tenant(t, "Initech")
	ev := fmt.Sprintf("evt_overtaken_%s", uuid.NewString()[:8])
	b.event(t, ev, a, time.Now().Add(-time.Hour), true)
	_, err := b.pool.Exec(ctx, `insert into private.billing_accounts (tenant_id, crm_version) values ($1, 3)`, a)
	require.NoError(t, err)
	b.enqueue(t, func(tx pgx.Tx) error { return b.ins.EnqueueCRMSync(ctx, tx, a, ev, 3) })
	_, err = b.pool.Exec(ctx, `update private.river_job set state = 'completed', finalized_at = now() + interval '1 second'
		where args @> jsonb_build_object('source_event', $1::text)`, ev)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `insert into private.crm_pushes (tenant_id, sent_version) values ($1, 2)`, a)
	require.NoError(t, err)

	rep, err := b.rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: a}, Apply: true})
	require.NoError(t, err)
	require.Equal(t, 1, count(rep, reconcile.KindCRMSync).Enqueued, "%+v", rep.Items)
	var version int64
	require.NoError(t, b.pool.QueryRow(ctx, `select (args->>'version')::bigint from private.river_job
		where state = 'available' and args @> jsonb_build_object('tenant_id', $1::text, 'source_event', $2::text)`,
		a.String(), "reconcile:"+ev+"@v3").Scan(&version))
	require.EqualValues(t, 3, version, "the new push is queued for the current version")

	// Once HubSpot has been sent version 3 (and River pruned every job), nothing is missing.
	_, err = b.pool.Exec(ctx, `delete from private.river_job`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `update private.crm_pushes set sent_version = 3 where tenant_id = $1`, a)
	require.NoError(t, err)
	rep, err = b.rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: a}})
	require.NoError(t, err)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindCRMSync, Found: 1, Fine: 1}, count(rep, reconcile.KindCRMSync))
}
