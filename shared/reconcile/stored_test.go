package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/reconcile"
)

// applierFake stands in for billing's stored-event path where a test needs an answer the real
// one gives only by chance (a live redelivery winning the race); the decisions under test
// (what is in scope, what a dry run does, how results are reported) are reconcile's own.
// TestRunRepairsStoredEventsThroughTheWebhookPath runs the same repairs on the real path.
type applierFake struct {
	mu              sync.Mutex
	applied         []string
	ResolveFunc     func(payload []byte) uuid.UUID
	ApplyStoredFunc func(eventID string) (reconcile.Applied, error)
}

func (f *applierFake) ResolveTenant(_ context.Context, _ db.Querier, payload []byte) (uuid.UUID, error) {
	return f.ResolveFunc(payload), nil
}

func (f *applierFake) ApplyStored(_ context.Context, eventID string) (reconcile.Applied, error) {
	f.mu.Lock()
	f.applied = append(f.applied, eventID)
	f.mu.Unlock()
	return f.ApplyStoredFunc(eventID)
}

func (f *applierFake) Ingest(context.Context, []byte) (reconcile.Applied, error) {
	panic("not used")
}

func TestRunDecidesWhichStoredEventsToApply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a, other := b.tenant(t, "Acme"), b.tenant(t, "Globex")
	now := time.Now().UTC()
	store := func(id, outcome string, tenant *uuid.UUID, customer string) {
		_, err := b.pool.Exec(ctx, `
			insert into private.stripe_events (id, type, created, payload, tenant_id, outcome)
			values ($1, 'invoice.paid', $2, jsonb_build_object('customer', $3::text), $4, $5)`,
			id, now.Add(-time.Hour), customer, tenant, outcome)
		require.NoError(t, err)
	}
	store("evt_never_applied", "processed", &a, "cus_a")   // stored, crashed before applying
	store("evt_now_matches", "unmatched", nil, "cus_a")    // customer linked to A since
	store("evt_still_nobody", "unmatched", nil, "cus_zzz") // nobody's yet
	store("evt_other_tenant", "unmatched", nil, "cus_b")   // B's, not in A's scope
	store("evt_ignored", "ignored", nil, "cus_a")          // a type we do not act on: fine as is
	fake := &applierFake{
		ResolveFunc: func(payload []byte) uuid.UUID {
			switch {
			case bytes.Contains(payload, []byte("cus_a")):
				return a
			case bytes.Contains(payload, []byte("cus_b")):
				return other
			}
			return uuid.Nil
		},
		ApplyStoredFunc: func(id string) (reconcile.Applied, error) {
			if id == "evt_now_matches" {
				return reconcile.Applied{Duplicate: true}, nil // a live redelivery got there first
			}
			return reconcile.Applied{Outcome: "processed", TenantID: a}, nil
		},
	}
	rec := reconcile.New(reconcile.Deps{Pool: b.pool, Enqueuer: b.ins, Applier: fake})

	dry, err := rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: a}})
	require.NoError(t, err)
	require.Empty(t, fake.applied, "a dry run applies nothing")
	require.Equal(t, reconcile.Count{Kind: reconcile.KindStripeEvent, Found: 2, Enqueued: 2}, count(dry, reconcile.KindStripeEvent))

	rep, err := rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: a}, Apply: true})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"evt_never_applied", "evt_now_matches"}, fake.applied)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindStripeEvent, Found: 2, Enqueued: 1, Skipped: 1,
		SkippedWhy: map[string]int{"already applied meanwhile (a live delivery or another run)": 1}}, count(rep, reconcile.KindStripeEvent))
	require.False(t, rep.NeedsAttention())

	// Range scope: the event nobody matches needs a person, and the run says so.
	fake.applied = nil
	rng, err := rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{From: now.Add(-2 * time.Hour), To: now}})
	require.NoError(t, err)
	require.True(t, rng.NeedsAttention())
	c := count(rng, reconcile.KindStripeEvent)
	require.Equal(t, 4, c.Found)
	require.Equal(t, 1, c.Failed)
	require.Contains(t, c.FailedWhy, "matches no tenant yet: link its Stripe customer to a tenant (private.stripe_customers), then run again")
}

// subscriptionEvent is a customer.subscription.* event around Stripe's own subscription
// fixture, as Stripe's API and webhook render it: the customer's one subscription.
func subscriptionEvent(t *testing.T, id, typ string, created time.Time, customer, status string, metadata map[string]string) []byte {
	t.Helper()
	sub := stripemock.Fixture(t, "subscription")
	sub["id"], sub["customer"], sub["status"], sub["metadata"] = "sub_of_"+customer, customer, status, metadata
	obj, err := json.Marshal(sub)
	require.NoError(t, err)
	payload, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": billing.APIVersion, "created": created.Unix(),
		"livemode": false, "pending_webhooks": 1, "data": map[string]any{"object": json.RawMessage(obj)},
	})
	require.NoError(t, err)
	return payload
}

// A history broken on purpose, repaired through the webhook's own path: (a) an event stored
// and never applied (the delivery's work was lost before it finished), (b) events that were
// unmatched on arrival and match a tenant now, one by our customer mapping written since, one
// by metadata.tenant_id naming a tenant created since. One --apply repairs exactly those, with
// the projection updated and one CRM job each; a second run finds nothing.
func TestRunRepairsStoredEventsThroughTheWebhookPath(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	at := now.Add(-time.Hour)
	suffix := uuid.NewString()[:8]
	acme, globex, later := b.tenant(t, "Acme"), b.tenant(t, "Globex"), uuid.New()
	_, err := b.pool.Exec(ctx, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, "cus_acme_"+suffix, acme)
	require.NoError(t, err)

	// (a) Stored as the webhook's claim leaves it, never applied.
	never := "evt_never_" + suffix
	_, err = b.pool.Exec(ctx, `insert into private.stripe_events (id, type, api_version, created, payload, outcome)
		values ($1, $2, $3, $4, $5::jsonb, 'processed')`, never, billing.TypeSubscriptionUpdated, billing.APIVersion, at,
		string(subscriptionEvent(t, never, billing.TypeSubscriptionUpdated, at, "cus_acme_"+suffix, "active", nil)))
	require.NoError(t, err)
	// (b) Delivered live while nobody's, then matched by a mapping and by a new tenant.
	byMapping, byMetadata := "evt_mapping_"+suffix, "evt_metadata_"+suffix
	for _, ev := range []struct {
		id, customer, status string
		metadata             map[string]string
	}{
		{byMapping, "cus_globex_" + suffix, "active", nil},
		{byMetadata, "cus_later_" + suffix, "trialing", map[string]string{billing.MetadataTenantID: later.String()}},
	} {
		parsed, err := billing.ParseEvent(subscriptionEvent(t, ev.id, billing.TypeSubscriptionCreated, at, ev.customer, ev.status, ev.metadata))
		require.NoError(t, err)
		res, err := b.proc.Process(ctx, parsed)
		require.NoError(t, err)
		require.Equal(t, billing.OutcomeUnmatched, res.Outcome)
	}
	_, err = b.pool.Exec(ctx, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, "cus_globex_"+suffix, globex)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `insert into public.tenants (id, name) values ($1, 'Later Ltd')`, later)
	require.NoError(t, err)

	scope := reconcile.Scope{From: now.Add(-2 * time.Hour), To: now.Add(time.Minute)}
	dry, err := b.rec.Run(ctx, reconcile.Options{Scope: scope})
	require.NoError(t, err)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindStripeEvent, Found: 3, Enqueued: 3}, count(dry, reconcile.KindStripeEvent))
	require.Zero(t, b.allJobs(t), "a dry run applies nothing")
	var mapped int
	require.NoError(t, b.pool.QueryRow(ctx, `select count(*) from private.stripe_customers where customer_id = $1`, "cus_later_"+suffix).Scan(&mapped))
	require.Zero(t, mapped, "a dry run resolves tenants without recording a mapping")

	// Scoped to one tenant: only the event that now matches it.
	one, err := b.rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: globex}})
	require.NoError(t, err)
	require.Len(t, one.Items, 1)
	require.Equal(t, byMapping, one.Items[0].Subject)

	rep, err := b.rec.Run(ctx, reconcile.Options{Scope: scope, Apply: true})
	require.NoError(t, err)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindStripeEvent, Found: 3, Enqueued: 3}, count(rep, reconcile.KindStripeEvent), "%+v", rep.Items)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindCRMSync, Found: 3, Fine: 3}, count(rep, reconcile.KindCRMSync),
		"applying queued each event's own push; nothing is left for the push pass")
	require.False(t, rep.NeedsAttention())
	for _, want := range []struct {
		tenant uuid.UUID
		event  string
		status string
	}{{acme, never, "active"}, {globex, byMapping, "active"}, {later, byMetadata, "trialing"}} {
		acct, err := billing.LoadAccount(ctx, b.pool, want.tenant)
		require.NoError(t, err, want.event)
		require.Equal(t, want.status, acct.Status, want.event)
		require.Equal(t, want.event, acct.StatusStamp.EventID, want.event)
		require.Equal(t, 1, b.liveJobs(t, jobs.KindCRMSync, map[string]string{"tenant_id": want.tenant.String(), "source_event": want.event}), want.event)
		var outcome string
		var crmSync *bool
		require.NoError(t, b.pool.QueryRow(ctx, `select outcome, crm_sync from private.stripe_events
			where id = $1 and tenant_id = $2 and applied_at is not null`, want.event, want.tenant).Scan(&outcome, &crmSync))
		require.Equal(t, "processed", outcome, want.event)
		require.NotNil(t, crmSync, want.event)
		require.True(t, *crmSync, want.event)
	}
	require.Equal(t, 3, b.allJobs(t), "one CRM job per repaired event, nothing else")

	again, err := b.rec.Run(ctx, reconcile.Options{Scope: scope, Apply: true})
	require.NoError(t, err)
	require.Zero(t, count(again, reconcile.KindStripeEvent).Found, "%+v", again.Items)
	require.Zero(t, again.Total().Enqueued)
	require.Equal(t, 3, b.allJobs(t))
}

// Two --apply runs started at once (an operator and a colleague, or a retried Lambda invoke)
// while Stripe redelivers the same stored events: every event is applied by exactly one of
// them (the other sees it done), each gets one CRM push, and the projection ends on the
// newest event.
func TestConcurrentRunsAndRedeliveriesApplyEachStoredEventOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tenant := b.tenant(t, "Twice Co")
	suffix := uuid.NewString()[:8]
	customer := "cus_twice_" + suffix
	start := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	statuses := []string{"incomplete", "trialing", "active", "past_due", "active", "canceled"}
	payloads := make([][]byte, len(statuses))
	for i, st := range statuses {
		id := fmt.Sprintf("evt_twice_%d_%s", i, suffix)
		at := start.Add(time.Duration(i) * time.Minute)
		payloads[i] = subscriptionEvent(t, id, billing.TypeSubscriptionUpdated, at, customer, st, nil)
		if i%2 == 0 { // stored by a delivery whose work was lost before it applied
			_, err := b.pool.Exec(ctx, `insert into private.stripe_events (id, type, api_version, created, payload, outcome)
				values ($1, $2, $3, $4, $5::jsonb, 'processed')`, id, billing.TypeSubscriptionUpdated, billing.APIVersion, at, string(payloads[i]))
			require.NoError(t, err)
			continue
		}
		ev, err := billing.ParseEvent(payloads[i]) // delivered while the customer was nobody's
		require.NoError(t, err)
		res, err := b.proc.Process(ctx, ev)
		require.NoError(t, err)
		require.Equal(t, billing.OutcomeUnmatched, res.Outcome)
	}
	_, err := b.pool.Exec(ctx, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, customer, tenant)
	require.NoError(t, err)

	deliver := b.deliverer(t)
	o := reconcile.Options{Scope: reconcile.Scope{TenantID: tenant}, Apply: true}
	reports := make([]*reconcile.Report, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range reports {
		wg.Go(func() { reports[i], errs[i] = b.rec.Run(ctx, o) })
	}
	wg.Go(func() {
		for _, p := range payloads {
			deliver(p)
		}
	})
	wg.Wait()

	applied, pushed := 0, 0
	for i, rep := range reports {
		require.NoError(t, errs[i])
		require.False(t, rep.NeedsAttention(), "%+v", rep.Items)
		for _, it := range rep.Items {
			switch {
			case it.Kind == reconcile.KindStripeEvent && it.Result == reconcile.ResultDone:
				applied++
			case it.Kind == reconcile.KindCRMSync && it.Result == reconcile.ResultDone:
				pushed++
			}
		}
	}
	require.Equal(t, len(statuses), applied, "each stored event applied by exactly one run")
	require.Zero(t, pushed, "applying an event queues its own push; the push pass adds none")
	var stored, done, queuedPush int
	require.NoError(t, b.pool.QueryRow(ctx, `select count(*), count(applied_at), count(*) filter (where crm_sync)
		from private.stripe_events where tenant_id = $1 and outcome = 'processed'`, tenant).Scan(&stored, &done, &queuedPush))
	require.Equal(t, len(statuses), stored, "every event now the tenant's")
	require.Equal(t, len(statuses), done)
	// An event applied after a newer one (the runs interleave) changes nothing and queues no
	// push. The others each queued one, and with no worker taking them, every push after the
	// first rode on it (it pushes the projection as it is when it runs): one job.
	require.Positive(t, queuedPush)
	require.Equal(t, 1, b.allJobs(t), "the CRM changes ride on one waiting push")
	acct, err := billing.LoadAccount(ctx, b.pool, tenant)
	require.NoError(t, err)
	require.Equal(t, "canceled", acct.Status, "the newest event wins whoever applied it")
}
