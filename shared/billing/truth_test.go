package billing_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// Invoices record payment facts; only subscription objects say the subscription's status. Each
// case is a real sequence Stripe sends, in order, and the status Stripe's subscription has at
// its end.
func TestInvoicesRecordPaymentsAndSubscriptionsDecideStatus(t *testing.T) {
	t.Parallel()
	type step struct {
		typ string
		obj func(b *bundle, at time.Time) map[string]any
	}
	sub := func(status string) func(b *bundle, at time.Time) map[string]any {
		return func(b *bundle, at time.Time) map[string]any {
			return b.subscription(t, subSpec{id: "sub_t", customer: b.customer, status: status, price: "price_basic", periodEnd: at.Add(30 * 24 * time.Hour)})
		}
	}
	inv := func(id string, amount int64, paid bool) func(b *bundle, at time.Time) map[string]any {
		return func(b *bundle, at time.Time) map[string]any {
			return b.invoice(t, invoiceSpec{id: id, customer: b.customer, subscription: "sub_t", amount: amount, paid: paid, attempt: 1}, at)
		}
	}
	cases := []struct {
		name        string
		steps       []step
		status      string
		lastPaid    string
		lastFailed  string
		paidAmount  int64
		ticketsRule int // tickets opened with the tenant's failure rule on
	}{
		{"a trial's $0 invoice leaves it trialing",
			[]step{{billing.TypeSubscriptionCreated, sub("trialing")}, {billing.TypeInvoicePaid, inv("in_trial", 0, true)}},
			"trialing", "in_trial", "", 0, 0},
		{"paying one of several open invoices leaves it past due",
			[]step{{billing.TypeSubscriptionCreated, sub("active")},
				{billing.TypeInvoicePaymentFailed, inv("in_may", 1500, false)},
				{billing.TypeInvoicePaymentFailed, inv("in_june", 1500, false)},
				{billing.TypeSubscriptionUpdated, sub("past_due")},
				{billing.TypeInvoicePaid, inv("in_may", 1500, true)}},
			billing.StatusPastDue, "in_may", "in_june", 1500, 2},
		{"an incomplete subscription whose first payment fails stays incomplete",
			[]step{{billing.TypeSubscriptionCreated, sub("incomplete")}, {billing.TypeInvoicePaymentFailed, inv("in_first", 4900, false)}},
			"incomplete", "", "in_first", 0, 1},
		{"a payment does not revive a canceled subscription",
			[]step{{billing.TypeSubscriptionDeleted, sub("canceled")}, {billing.TypeInvoicePaid, inv("in_late", 700, true)}},
			billing.StatusCanceled, "in_late", "", 700, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.exec(t, `update public.tenants set ticket_on_payment_failure = true where id = $1`, b.tenantID)
			t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
			for i, s := range tc.steps {
				at := t0.Add(time.Duration(i) * time.Minute)
				require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), s.typ, at, s.obj(b, at))), "step %d", i)
			}
			acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
			require.NoError(t, err)
			require.Equal(t, tc.status, acct.Status)
			require.Equal(t, tc.lastPaid, acct.LastInvoiceID)
			require.Equal(t, tc.paidAmount, acct.LastPaymentAmount)
			require.Equal(t, tc.lastFailed, acct.LastFailureInvoiceID)
			// The failure-ticket rule is unchanged: one ticket per failed invoice not known paid.
			require.Equal(t, tc.ticketsRule, b.count(t, `select count(*) from public.tickets where tenant_id = $1`, b.tenantID))
		})
	}
}

// A Checkout signup sends customer.subscription.created (incomplete), invoice.paid and
// customer.subscription.updated (active) in one second. In every delivery order and every
// order of their ids (which break created's ties), the projection ends as Stripe's API says
// the subscription is: the tie queues one refresh per subscription, the refresh reads Stripe
// and its stamp (the second it read) beats the burst. Each of the 36 cases is its own tenant,
// so one run of the queue works them all.
func TestSameSecondBurstEndsInStripesState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fake := newStripeFake(t)
	burst := time.Now().Add(-time.Minute).Truncate(time.Second)
	periodEnd := burst.Add(30 * 24 * time.Hour)
	type tenantCase struct {
		tenant         uuid.UUID
		customer, sub  string
		order, idOrder []int
	}
	ids := []string{"evt_1burst", "evt_5burst", "evt_9burst"}
	var cases []tenantCase
	for _, idOrder := range permutations(3) {
		for _, order := range permutations(3) {
			c := tenantCase{tenant: b.newTenant(t, false), customer: "cus_" + randomID(14), sub: "sub_" + randomID(14), order: order, idOrder: idOrder}
			b.exec(t, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, c.customer, c.tenant)
			cases = append(cases, c)
		}
	}
	for n, c := range cases {
		sub := func(status string) map[string]any {
			return b.subscription(t, subSpec{id: c.sub, customer: c.customer, status: status, price: "price_pro", periodEnd: periodEnd})
		}
		fake.set(sub("active")) // what Stripe's API says once the burst is over
		events := [][]byte{
			b.stripeEvent(t, ids[c.idOrder[0]]+c.sub, billing.TypeSubscriptionCreated, burst, sub("incomplete")),
			b.stripeEvent(t, ids[c.idOrder[1]]+c.sub, billing.TypeInvoicePaid, burst,
				b.invoice(t, invoiceSpec{id: "in_" + c.sub, customer: c.customer, subscription: c.sub, email: "payer@acme.test", amount: 4900, paid: true}, burst)),
			b.stripeEvent(t, ids[c.idOrder[2]]+c.sub, billing.TypeSubscriptionUpdated, burst, sub("active")),
		}
		for _, i := range c.order {
			require.Equal(t, "processed", b.outcome(t, events[i]), "case %d", n)
		}
		// A redelivery of the whole burst is three duplicates and no second refresh.
		for _, ev := range events {
			require.Equal(t, "duplicate", b.outcome(t, ev), "case %d", n)
		}
		require.Equal(t, 1, b.count(t, `select count(*) from private.river_job where kind = 'billing_refresh' and args->>'subscription_id' = $1`, c.sub),
			"case %d: created and updated tie in every order: one refresh", n)
	}
	require.Zero(t, b.count(t, `select count(*) from private.stripe_events where applied_at is null`), "the webhook itself made no Stripe call and applied everything")

	sum := b.refresh(t, fake)
	require.Equal(t, jobs.Summary{Worked: len(cases), Succeeded: len(cases)}, sum)
	for n, c := range cases {
		acct, err := billing.LoadAccount(t.Context(), b.pool, c.tenant)
		require.NoError(t, err)
		require.Equal(t, billing.StatusActive, acct.Status, "case %d: order %v, ids %v", n, c.order, c.idOrder)
		require.Equal(t, c.sub, acct.SubscriptionID)
		require.Equal(t, "price_pro", acct.PriceID)
		require.True(t, periodEnd.Equal(acct.CurrentPeriodEnd))
		require.Equal(t, "in_"+c.sub, acct.LastInvoiceID)
		require.Equal(t, 1, fake.readsOf(c.sub), "one read per subscription")
		wantPush := 0
		if c.idOrder[0] > c.idOrder[2] { // created's id sorts after updated's: the burst alone left it incomplete
			wantPush = 1
		}
		require.Equal(t, wantPush, b.crmJobs(t, c.tenant, "refresh:"+b.strings(t, `select id::text from private.river_job where kind = 'billing_refresh' and args->>'subscription_id' = $1`, c.sub)[0]),
			"case %d: the refresh's change reaches the CRM", n)
	}

	// After the refresh, an event of an earlier second loses to it and a later one wins.
	c := cases[0]
	sub := func(status string) map[string]any {
		return b.subscription(t, subSpec{id: c.sub, customer: c.customer, status: status, price: "price_pro", periodEnd: periodEnd})
	}
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_late_old", billing.TypeSubscriptionUpdated, burst.Add(-time.Second), sub("incomplete"))))
	acct, err := billing.LoadAccount(t.Context(), b.pool, c.tenant)
	require.NoError(t, err)
	require.Equal(t, billing.StatusActive, acct.Status, "an older event loses to the refresh")
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_later", billing.TypeSubscriptionUpdated, time.Now().Add(time.Hour), sub("past_due"))))
	acct, err = billing.LoadAccount(t.Context(), b.pool, c.tenant)
	require.NoError(t, err)
	require.Equal(t, billing.StatusPastDue, acct.Status, "a later event wins over the refresh")
}

// A refresh storm stays within Stripe's rate limits: a 429 snoozes the job for Stripe's
// Retry-After without using up an attempt, and the read after it applies.
func TestRefreshWaitsForStripesRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fake := newStripeFake(t)
	burst := time.Now().Add(-time.Minute).Truncate(time.Second)
	sub := func(status string) map[string]any {
		return b.subscription(t, subSpec{id: "sub_rl", customer: b.customer, status: status, price: "price_pro", periodEnd: burst.Add(time.Hour)})
	}
	fake.set(sub("active"))
	fake.limited, fake.retryAfter = 1, "7"
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_b", billing.TypeSubscriptionCreated, burst, sub("incomplete"))))
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_a", billing.TypeSubscriptionUpdated, burst, sub("active"))))

	require.Equal(t, jobs.Summary{Worked: 1, Snoozed: 1}, b.refresh(t, fake))
	var waited float64
	require.NoError(t, b.pool.QueryRow(t.Context(), `select extract(epoch from scheduled_at - attempted_at) from private.river_job
		where kind = 'billing_refresh' and state = 'scheduled'`).Scan(&waited))
	require.InDelta(t, 7, waited, 1, "snoozed for Stripe's Retry-After")
	acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, "incomplete", acct.Status, "evt_b sorts after evt_a: the tie picked the wrong one until the refresh")

	b.exec(t, `update private.river_job set scheduled_at = now() where kind = 'billing_refresh'`)
	require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, b.refresh(t, fake))
	acct, err = billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, billing.StatusActive, acct.Status)
	require.Equal(t, 2, fake.readsOf("sub_rl"))
}
