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
