package reconcile_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/reconcile"
)

// applierFake stands in for billing's stored-event path, which billing does not export yet;
// the decisions under test (what is in scope, what a dry run does, how results are reported)
// are reconcile's own.
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

func TestRunAppliesStoredEventsThroughTheWebhookPath(t *testing.T) {
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
