package billing_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/sam"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
)

// A Payment Link (or Pricing Table) lets the payer set client_reference_id. An attacker who
// knows a tenant's id pays through one naming it: the session is not one checkout-create
// created and carries no metadata our key wrote, so it binds nothing. Its customer stays
// nobody's, the victim's projection does not move however the attacker's subscription
// events go, and delivery health and the metrics show the refused session.
func TestForgedPaymentLinkSessionBindsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	victim := b.newTenant(t, true)
	// The victim has not checked out yet: no customer of its own, nothing to fall back on.
	victimCustomer := "cus_" + randomID(14)
	b.exec(t, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, victimCustomer, victim)
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionCreated, now,
		b.subscription(t, subSpec{id: "sub_victim", customer: victimCustomer, status: "trialing", price: "price_basic", periodEnd: now.Add(time.Hour)}))))
	before := b.row(t, victim)

	attacker := "cus_" + randomID(14)
	forged := b.checkoutSession(t, attacker, victim.String(), "sub_attacker", "mallory@evil.test")
	forged["payment_link"] = "plink_" + randomID(14)
	at := now.Add(time.Minute)
	require.Equal(t, "refused", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeCheckoutCompleted, at, forged)))
	for _, ev := range [][]byte{
		b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionCreated, at,
			b.subscription(t, subSpec{id: "sub_attacker", customer: attacker, status: "active", price: "price_pro", periodEnd: at.Add(time.Hour)})),
		b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaymentFailed, at.Add(time.Minute),
			b.invoice(t, invoiceSpec{id: "in_attacker", customer: attacker, subscription: "sub_attacker", amount: 100, attempt: 1}, at)),
	} {
		require.Equal(t, "unmatched", b.outcome(t, ev))
	}
	require.Zero(t, b.count(t, `select count(*) from private.stripe_customers where customer_id = $1`, attacker), "the attacker's customer is bound to nobody")
	require.Equal(t, before, b.row(t, victim), "the victim's projection is unchanged")
	require.Zero(t, b.count(t, `select count(*) from public.tickets where tenant_id = $1`, victim))
	require.Equal(t, 1, b.crmJobs(t, victim, ""), "only the victim's own event reached the CRM")

	rep, err := health.Read(t.Context(), b.pool, health.Query{})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Webhook.Refused)
	var warned bool
	for _, l := range b.logs.Lines(t) {
		if l["msg"] == "checkout session refused: not created by checkout-create" && l["client_reference_id"] == victim.String() {
			warned = true
		}
	}
	require.True(t, warned, "a log line names the session and the tenant it claimed")
	require.Equal(t, 1, b.refusedMetric(t, "foreign_session"))

	// The same session created by checkout-create (recorded when it was created) binds.
	ours := b.checkoutSession(t, "cus_"+randomID(14), "", "sub_ours", "owner@acme.test")
	b.exec(t, `insert into private.checkout_sessions (session_id, tenant_id) values ($1, $2)`, ours["id"], victim)
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeCheckoutCompleted, at, ours)))
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_customers where customer_id = $1 and tenant_id = $2`, ours["customer"], victim))
}

// An event of the other mode than the configured key's (a test-mode event reaching the live
// endpoint, or the reverse) is refused with 400 before anything is written, logged with the
// fix, counted, and noted in delivery health.
func TestWebhookRefusesTheOtherLivemode(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *setupOptions) { o.livemode = true })
	now := time.Now()
	ev := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_test", customer: b.customer, subscription: "sub_1", amount: 1, paid: true}, now))
	require.Contains(t, string(ev), `"livemode":false`)
	rec := b.deliver(t, ev, now, testSecret)
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, rec.Body.String(), billing.TypeLivemodeMismatch)
	require.Zero(t, b.count(t, `select count(*) from private.stripe_events`))
	require.Zero(t, b.count(t, `select count(*) from private.billing_accounts`))
	var warned bool
	for _, l := range b.logs.Lines(t) {
		if fix, _ := l["fix"].(string); strings.Contains(fix, "STRIPE_LIVEMODE") {
			warned = true
		}
	}
	require.True(t, warned, "a log line says how to fix the mismatch")
	require.Equal(t, 1, b.refusedMetric(t, "livemode"))
	rep, err := health.Read(t.Context(), b.pool, health.Query{})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Webhook.Rejected)

	var envelope map[string]any
	require.NoError(t, json.Unmarshal(ev, &envelope))
	envelope["livemode"] = true
	live, err := json.Marshal(envelope)
	require.NoError(t, err)
	require.Equal(t, "processed", b.outcome(t, live))
}

// refusedMetric sums the WebhookRefused metric of one reason.
func (b *bundle) refusedMetric(t testing.TB, reason string) int {
	t.Helper()
	n := 0
	for _, m := range b.metrics.Lines(t) {
		if v, ok := m[billing.MetricRefused].(float64); ok && m["Reason"] == reason {
			n += int(v)
		}
	}
	return n
}

// Events of a customer nobody is bound to yet are stored unmatched; the delivery that binds
// the customer (a session checkout-create created, or metadata our key wrote) applies them, in
// order, in its own transaction: no person has to run reconcile.
func TestUnmatchedEventsApplyWhenTheirCustomerIsBound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, bind := range []string{"session", "metadata"} {
		tenant := b.newTenant(t, true)
		customer := "cus_" + randomID(14)
		sub := "sub_" + randomID(10)
		early := []string{"evt_" + randomID(24), "evt_" + randomID(24), "evt_" + randomID(24)}
		events := [][]byte{
			b.stripeEvent(t, early[0], billing.TypeSubscriptionCreated, t0,
				b.subscription(t, subSpec{id: sub, customer: customer, status: "active", price: "price_pro", periodEnd: t0.Add(time.Hour)})),
			b.stripeEvent(t, early[1], billing.TypeInvoicePaid, t0.Add(time.Minute),
				b.invoice(t, invoiceSpec{id: "in_" + sub, customer: customer, subscription: sub, email: "payer@acme.test", amount: 4900, paid: true}, t0)),
			b.stripeEvent(t, early[2], billing.TypeInvoicePaymentFailed, t0.Add(2*time.Minute),
				b.invoice(t, invoiceSpec{id: "in_failed_" + sub, customer: customer, subscription: sub, amount: 4900, attempt: 1}, t0)),
		}
		for _, ev := range events {
			require.Equal(t, "unmatched", b.outcome(t, ev), bind)
		}
		var binding []byte
		switch bind {
		case "session":
			session := b.checkoutSession(t, customer, tenant.String(), sub, "owner@acme.test")
			b.exec(t, `insert into private.checkout_sessions (session_id, tenant_id) values ($1, $2)`, session["id"], tenant)
			binding = b.stripeEvent(t, "evt_"+randomID(24), billing.TypeCheckoutCompleted, t0.Add(3*time.Minute), session)
		case "metadata":
			binding = b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionUpdated, t0.Add(3*time.Minute),
				b.subscription(t, subSpec{id: sub, customer: customer, status: "active", price: "price_pro", periodEnd: t0.Add(time.Hour), metadataTenant: tenant.String()}))
		}
		require.Equal(t, "processed", b.outcome(t, binding), bind)

		require.Equal(t, 3, b.count(t, `select count(*) from private.stripe_events where id = any($1) and outcome = 'processed'
			and tenant_id = $2 and applied_at is not null`, early, tenant), bind)
		acct, err := billing.LoadAccount(t.Context(), b.pool, tenant)
		require.NoError(t, err)
		require.Equal(t, billing.StatusActive, acct.Status, bind)
		require.Equal(t, "in_"+sub, acct.LastInvoiceID, bind)
		require.Equal(t, "in_failed_"+sub, acct.LastFailureInvoiceID, bind)
		require.Equal(t, 1, b.count(t, `select count(*) from public.tickets where tenant_id = $1`, tenant), "%s: the failure-ticket rule applies to them too", bind)
		require.Positive(t, b.crmJobs(t, tenant, ""), bind)
		// Applied once: a redelivery of an early event is a duplicate.
		require.Equal(t, "duplicate", b.outcome(t, events[1]), bind)
	}
	var logged []any
	for _, l := range b.logs.Lines(t) {
		if n, ok := l["unmatched_applied"]; ok {
			logged = append(logged, n)
		}
	}
	require.Equal(t, []any{float64(3), float64(3)}, logged, "the binding delivery's log line says how many stored events it applied")
}

// The scheduled billing-refresh function measures the unmatched inbox on every run: how many
// events wait for a tenant and how long the oldest has waited, which template.yaml's alarm
// watches (older than an hour).
func TestUnmatchedEventsAreMeasured(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fake := newStripeFake(t)
	now := time.Now()
	b.refresh(t, fake)
	require.Equal(t, map[string]float64{billing.MetricUnmatchedEvents: 0, billing.MetricOldestUnmatchedAge: 0}, b.unmatchedGauges(t))

	for i := range 2 {
		require.Equal(t, "unmatched", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, now,
			b.invoice(t, invoiceSpec{id: "in_u" + randomID(4), customer: "cus_" + randomID(14), amount: int64(i), paid: true}, now))))
	}
	b.exec(t, `update private.stripe_events set received_at = now() - interval '2 hours' where id = (select min(id) from private.stripe_events)`)
	b.metrics.Take(t)
	b.refresh(t, fake)
	g := b.unmatchedGauges(t)
	require.Equal(t, float64(2), g[billing.MetricUnmatchedEvents])
	require.InDelta(t, 7200, g[billing.MetricOldestUnmatchedAge], 60)

	// template.yaml's alarm reads exactly this metric under exactly these dimensions.
	p, err := sam.Open(".")
	require.NoError(t, err)
	watched := 0
	for _, a := range p.Template.Alarms {
		if a.MetricName == billing.MetricOldestUnmatchedAge {
			dims := map[string]string{}
			for k, v := range a.Dimensions {
				dims[k] = v.Value
			}
			telemetrytest.RequireMetric(t, b.metrics.Lines(t), a.Namespace, a.MetricName, dims)
			watched++
		}
	}
	require.Equal(t, 1, watched)
}

// unmatchedGauges reads the unmatched-inbox metrics of the last run, checking their dimension
// set is exactly {Function} (what the template's alarm names).
func (b *bundle) unmatchedGauges(t testing.TB) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range b.metrics.Lines(t) {
		for _, name := range []string{billing.MetricUnmatchedEvents, billing.MetricOldestUnmatchedAge} {
			if v, ok := m[name].(float64); ok {
				require.Equal(t, billing.Refresh.Name, m["Function"])
				dims := m["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)[0].(map[string]any)["Dimensions"]
				require.Equal(t, []any{[]any{"Function"}}, dims)
				out[name] = v
			}
		}
	}
	return out
}
