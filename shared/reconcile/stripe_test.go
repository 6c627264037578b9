package reconcile_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/reconcile"
)

// --from-stripe against stripe-mock: GET /v1/events with a created range through stripe-go,
// then the webhook's processor ingests what we never received, once.
func TestFromStripeIngestsWhatWeNeverReceived(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	base := stripemock.Start(t)
	rec := reconcile.New(reconcile.Deps{Pool: b.pool, Enqueuer: b.ins, Applier: reconcile.NewBillingApplier(b.proc),
		Stripe: reconcile.NewStripeEvents("sk_test_123", base, nil)})
	// stripe-mock's one event fixture was created at 1234567890 (2009-02-13T23:31:30Z).
	o := reconcile.Options{Scope: reconcile.Scope{From: time.Date(2009, 2, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2009, 3, 1, 0, 0, 0, 0, time.UTC)}, FromStripe: true}

	dry, err := rec.Run(ctx, o)
	require.NoError(t, err)
	require.Equal(t, 1, count(dry, reconcile.KindStripeMissing).Enqueued)
	var stored int
	require.NoError(t, b.pool.QueryRow(ctx, `select count(*) from private.stripe_events`).Scan(&stored))
	require.Zero(t, stored, "a dry run ingests nothing")

	o.Apply = true
	rep, err := rec.Run(ctx, o)
	require.NoError(t, err)
	missing := count(rep, reconcile.KindStripeMissing)
	require.Equal(t, 1, missing.Enqueued, "%+v", rep.Items)
	var id, outcome string
	require.NoError(t, b.pool.QueryRow(ctx, `select id, outcome from private.stripe_events`).Scan(&id, &outcome))
	require.Equal(t, rep.Items[0].Subject, id)
	require.Equal(t, "ignored", outcome, "plan.created is a type the webhook does not act on")

	again, err := rec.Run(ctx, o)
	require.NoError(t, err)
	require.Equal(t, reconcile.Count{Kind: reconcile.KindStripeMissing, Found: 1, Fine: 1}, count(again, reconcile.KindStripeMissing))
}

// listedEvents is Stripe's event list as a fixed answer (the API's side of the race below).
type listedEvents struct {
	EventsFunc func(ctx context.Context, from, to time.Time) ([]reconcile.SourceEvent, error)
}

func (l listedEvents) Events(ctx context.Context, from, to time.Time) ([]reconcile.SourceEvent, error) {
	return l.EventsFunc(ctx, from, to)
}

// Reconcile ingesting from Stripe while Stripe delivers the same events to the webhook: every
// event is stored and applied once, and each CRM push exists once.
func TestReconcileRacingLiveWebhookHasOneEffectEach(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tenant := b.tenant(t, "Racing Co")
	customer := "cus_race_" + uuid.NewString()[:8]
	_, err := b.pool.Exec(ctx, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, customer, tenant)
	require.NoError(t, err)

	// Subscription updates built from Stripe's own fixture, each moving the status.
	sub := stripemock.Fixture(t, "subscription")
	sub["customer"] = customer
	start := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	statuses := []string{"incomplete", "trialing", "active", "past_due", "active", "canceled"}
	var events []reconcile.SourceEvent
	for i, st := range statuses {
		sub["status"] = st
		obj, err := json.Marshal(sub)
		require.NoError(t, err)
		created := start.Add(time.Duration(i) * time.Minute)
		ev := map[string]any{
			"id": "evt_race_" + uuid.NewString()[:12], "object": "event", "type": billing.TypeSubscriptionUpdated,
			"api_version": billing.APIVersion, "created": created.Unix(), "livemode": false, "pending_webhooks": 1,
			"data": map[string]any{"object": json.RawMessage(obj)},
		}
		payload, err := json.Marshal(ev)
		require.NoError(t, err)
		events = append(events, reconcile.SourceEvent{ID: ev["id"].(string), Type: billing.TypeSubscriptionUpdated, Created: created, Payload: payload})
	}
	rec := reconcile.New(reconcile.Deps{Pool: b.pool, Enqueuer: b.ins, Applier: reconcile.NewBillingApplier(b.proc),
		Stripe: listedEvents{EventsFunc: func(context.Context, time.Time, time.Time) ([]reconcile.SourceEvent, error) { return events, nil }}})

	deliver := b.deliverer(t)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // Stripe delivering, newest first (Stripe does not promise order).
		defer wg.Done()
		for i := len(events) - 1; i >= 0; i-- {
			deliver(events[i].Payload)
		}
	}()
	var rep *reconcile.Report
	var runErr error
	go func() {
		defer wg.Done()
		rep, runErr = rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: tenant, From: start.Add(-time.Minute), To: start.Add(time.Hour)}, FromStripe: true, Apply: true})
	}()
	wg.Wait()
	require.NoError(t, runErr)
	require.Zero(t, rep.Total().Failed, "%+v", rep.Items)

	var stored, applied int
	require.NoError(t, b.pool.QueryRow(ctx, `select count(*), count(applied_at) from private.stripe_events where tenant_id = $1`, tenant).Scan(&stored, &applied))
	require.Equal(t, len(events), stored)
	require.Equal(t, len(events), applied)
	var dupJobs int
	require.NoError(t, b.pool.QueryRow(ctx, `
		select count(*) from (
		    select args->>'source_event' from private.river_job where kind = 'crm_sync'
		    group by 1 having count(*) > 1) d`).Scan(&dupJobs))
	require.Zero(t, dupJobs, "one CRM push per source event")
	var status string
	require.NoError(t, b.pool.QueryRow(ctx, `select status from private.billing_accounts where tenant_id = $1`, tenant).Scan(&status))
	require.Equal(t, "canceled", status, "the newest event wins whoever applied it")

	again, err := rec.Run(ctx, reconcile.Options{Scope: reconcile.Scope{TenantID: tenant, From: start.Add(-time.Minute), To: start.Add(time.Hour)}, FromStripe: true, Apply: true})
	require.NoError(t, err)
	require.Zero(t, again.Total().Enqueued, "%+v", again.Items)
}
