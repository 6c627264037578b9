package billing_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// store puts payload in the inbox as a crashed or unmatched delivery left it.
func (b *bundle) store(t testing.TB, id, typ string, created time.Time, payload []byte, outcome string, tenant *uuid.UUID) {
	t.Helper()
	b.exec(t, `insert into private.stripe_events (id, type, api_version, created, payload, tenant_id, outcome)
		values ($1, $2, $3, $4, $5::jsonb, $6, $7)`, id, typ, billing.APIVersion, created, string(payload), tenant, outcome)
}

func (b *bundle) processor(t testing.TB) *billing.Processor {
	t.Helper()
	ins, err := jobs.NewInserter(b.pool)
	require.NoError(t, err)
	return billing.NewProcessor(b.pool, ins)
}

// A stored event that was never applied goes through the webhook's own steps: the projection,
// one CRM job, the outcome and crm_sync on its row; a second apply and a live redelivery of
// the same event change nothing.
func TestApplyStoredAppliesANeverAppliedEventOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	p := b.processor(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	id := "evt_" + randomID(24)
	payload := b.stripeEvent(t, id, billing.TypeInvoicePaid, t0,
		b.invoice(t, invoiceSpec{id: "in_stored", customer: b.customer, subscription: "sub_1", email: "payer@acme.test", amount: 4900, paid: true}, t0))
	b.store(t, id, billing.TypeInvoicePaid, t0, payload, "processed", nil)

	res, err := p.ApplyStored(ctx, id)
	require.NoError(t, err)
	require.Equal(t, billing.Result{Outcome: billing.OutcomeProcessed, TenantID: b.tenantID, Updated: true, CRMSync: true}, res)
	acct, err := billing.LoadAccount(ctx, b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, "in_stored", acct.LastInvoiceID)
	require.Equal(t, "payer@acme.test", acct.CustomerEmail)
	require.Equal(t, 1, b.crmJobs(t, b.tenantID, id))
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_events
		where id = $1 and outcome = 'processed' and tenant_id = $2 and applied_at is not null and crm_sync`, id, b.tenantID))

	again, err := p.ApplyStored(ctx, id)
	require.NoError(t, err)
	require.Equal(t, billing.OutcomeDuplicate, again.Outcome)
	require.Equal(t, "duplicate", b.outcome(t, payload))
	require.Equal(t, 1, b.crmJobs(t, b.tenantID, ""))

	_, err = p.ApplyStored(ctx, "evt_never_seen")
	require.ErrorIs(t, err, billing.ErrEventNotStored)
}

// An event that was unmatched when it arrived is applied once its tenant can be found, by
// our customer mapping or by metadata.tenant_id naming a tenant that now exists; until then
// it stays unmatched. ResolveTenant says the same without writing anything.
func TestApplyStoredMatchesAnEventWhoseTenantNowExists(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	p := b.processor(t)
	now := time.Now().Truncate(time.Second)

	// By mapping: the customer is linked to the tenant after the event arrived.
	stranger := "cus_" + randomID(14)
	byMap := "evt_" + randomID(24)
	mapped := b.stripeEvent(t, byMap, billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_late", customer: stranger, subscription: "sub_1", email: "late@acme.test", amount: 10, paid: true}, now))
	require.Equal(t, "unmatched", b.outcome(t, mapped))
	res, err := p.ApplyStored(ctx, byMap)
	require.NoError(t, err)
	require.Equal(t, billing.Result{Outcome: billing.OutcomeUnmatched}, res, "still nobody's")
	tenant, err := billing.ResolveTenant(ctx, b.pool, mapped)
	require.NoError(t, err)
	require.Equal(t, uuid.Nil, tenant)
	b.exec(t, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, stranger, b.tenantID)
	tenant, err = billing.ResolveTenant(ctx, b.pool, mapped)
	require.NoError(t, err)
	require.Equal(t, b.tenantID, tenant)
	res, err = p.ApplyStored(ctx, byMap)
	require.NoError(t, err)
	require.Equal(t, billing.OutcomeProcessed, res.Outcome)
	require.Equal(t, b.tenantID, res.TenantID)
	require.True(t, res.CRMSync)
	require.Equal(t, 1, b.crmJobs(t, b.tenantID, byMap))

	// By metadata: the subscription names a tenant created after the event arrived.
	later := uuid.New()
	newCustomer := "cus_" + randomID(14)
	byMeta := "evt_" + randomID(24)
	meta := b.stripeEvent(t, byMeta, billing.TypeSubscriptionCreated, now,
		b.subscription(t, subSpec{id: "sub_meta", customer: newCustomer, status: "trialing", price: "price_basic", periodEnd: now.Add(time.Hour), metadataTenant: later.String()}))
	require.Equal(t, "unmatched", b.outcome(t, meta))
	b.exec(t, `insert into public.tenants (id, name) values ($1, 'Later Ltd')`, later)
	tenant, err = billing.ResolveTenant(ctx, b.pool, meta)
	require.NoError(t, err)
	require.Equal(t, later, tenant)
	require.Zero(t, b.count(t, `select count(*) from private.stripe_customers where customer_id = $1`, newCustomer),
		"resolving reads only")
	res, err = p.ApplyStored(ctx, byMeta)
	require.NoError(t, err)
	require.Equal(t, billing.OutcomeProcessed, res.Outcome)
	require.Equal(t, later, res.TenantID)
	acct, err := billing.LoadAccount(ctx, b.pool, later)
	require.NoError(t, err)
	require.Equal(t, "trialing", acct.Status)
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_customers where customer_id = $1 and tenant_id = $2`, newCustomer, later),
		"applying records the mapping, as a live delivery does")
	require.Equal(t, 1, b.crmJobs(t, later, byMeta))
}

// Many applies of one stored event racing each other and live redeliveries: one effect.
func TestApplyStoredRacingLiveDeliveriesHasOneEffect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	p := b.processor(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	id := "evt_" + randomID(24)
	payload := b.stripeEvent(t, id, billing.TypeInvoicePaid, t0,
		b.invoice(t, invoiceSpec{id: "in_race", customer: b.customer, subscription: "sub_1", email: "payer@acme.test", amount: 4900, paid: true}, t0))
	b.store(t, id, billing.TypeInvoicePaid, t0, payload, "processed", nil)
	updates := b.countUpdates(t)
	ev, err := billing.ParseEvent(payload)
	require.NoError(t, err)

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		outcomes = map[string]int{}
	)
	record := func(res billing.Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			outcomes["error: "+err.Error()]++
			return
		}
		outcomes[string(res.Outcome)]++
	}
	for range 10 {
		wg.Go(func() { record(p.ApplyStored(ctx, id)) })
		wg.Go(func() { record(p.Process(ctx, ev)) })
	}
	wg.Wait()
	require.Equal(t, map[string]int{"processed": 1, "duplicate": 19}, outcomes)
	require.Equal(t, 1, updates())
	require.Equal(t, 1, b.crmJobs(t, b.tenantID, ""))
}
