package billing_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/sam"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
	"github.com/stripe/stripe-go/v76/webhook"
)

func TestWebhookRefusesDeliveriesItCannotTrust(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()
	valid := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_1", customer: b.customer, subscription: "sub_1", amount: 2000, paid: true}, now))
	oldVersion := []byte(strings.Replace(string(valid), billing.APIVersion, "2020-08-27", 1))
	tampered := []byte(strings.Replace(string(valid), `"amount_paid":2000`, `"amount_paid":1`, 1))
	require.NotEqual(t, string(valid), string(tampered))
	huge := []byte(`{"id":"evt_x","padding":"` + strings.Repeat("a", testMaxBody) + `"}`)

	wrongObject := []byte(strings.Replace(string(valid), `"object":"invoice"`, `"object":"charge"`, 1))
	const sig, body = "signature", "payload" // what delivery health notes as the reason
	cases := []struct {
		name    string
		body    []byte
		header  string
		status  int
		detail  string
		chunked bool // no Content-Length: the handler cuts the body while reading it
		noted   string
	}{
		{"missing header", valid, "", http.StatusBadRequest, "missing", false, sig},
		{"bad signature", valid, fmt.Sprintf("t=%d,v1=%s", now.Unix(), strings.Repeat("ab", 32)), http.StatusBadRequest, "no valid signature", false, sig},
		{"tampered body", tampered, billing.SignedTestEvent(testSecret, valid, now), http.StatusBadRequest, "no valid signature", false, sig},
		{"wrong secret", valid, billing.SignedTestEvent("whsec_someone_else", valid, now), http.StatusBadRequest, "no valid signature", false, sig},
		{"stale by 301 s", valid, billing.SignedTestEvent(testSecret, valid, now.Add(-301*time.Second)), http.StatusBadRequest, "too old", false, sig},
		{"10 min in the future", valid, billing.SignedTestEvent(testSecret, valid, now.Add(10*time.Minute)), http.StatusBadRequest, "future", false, sig},
		{"garbage header", valid, "not-a-signature", http.StatusBadRequest, "malformed", false, sig},
		{"malformed JSON", []byte(`{"id": "evt_1", "type":`), billing.SignedTestEvent(testSecret, []byte(`{"id": "evt_1", "type":`), now), http.StatusBadRequest, "not a Stripe event", false, body},
		{"not an event", []byte(`{"hello":"world"}`), billing.SignedTestEvent(testSecret, []byte(`{"hello":"world"}`), now), http.StatusBadRequest, "not a Stripe event", false, body},
		{"object of the wrong type", wrongObject, billing.SignedTestEvent(testSecret, wrongObject, now), http.StatusBadRequest, "not a Stripe event", false, body},
		{"other API version", oldVersion, billing.SignedTestEvent(testSecret, oldVersion, now), http.StatusBadRequest, billing.APIVersion, false, body},
		{"oversized body", huge, billing.SignedTestEvent(testSecret, huge, now), http.StatusRequestEntityTooLarge, "at most", false, body},
		{"oversized chunked body", huge, billing.SignedTestEvent(testSecret, huge, now), http.StatusRequestEntityTooLarge, "at most", true, body},
	}
	wantNotes := map[string]int{}
	for _, tc := range cases {
		req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe", bytes.NewReader(tc.body))
		if tc.chunked {
			req.ContentLength = -1
		}
		wantNotes[tc.noted]++
		rec := b.sendRequest(req, tc.header)
		require.Equal(t, tc.status, rec.Code, "%s: %s", tc.name, rec.Body.String())
		require.Equal(t, problem.ContentType, rec.Header().Get("Content-Type"), tc.name)
		var p problem.Problem
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p), tc.name)
		require.Contains(t, p.Detail, tc.detail, tc.name)
	}
	// Nothing of the events was written.
	require.Zero(t, b.count(t, `select count(*) from private.stripe_events`))
	require.Zero(t, b.count(t, `select count(*) from private.billing_accounts`))
	require.Zero(t, b.count(t, `select count(*) from private.river_job`))
	require.Zero(t, b.count(t, `select count(*) from public.tickets`))
	// Each refusal, oversized ones included, is noted for delivery health with why and how.
	notes := map[string]int{}
	for _, n := range b.strings(t, `select reason || ' ' || refused from private.webhook_rejection_counts`) {
		var reason string
		var refused int
		_, err := fmt.Sscan(n, &reason, &refused)
		require.NoError(t, err)
		notes[reason] += refused
	}
	require.Equal(t, wantNotes, notes)
	// One metric per delivery (a declared oversized length too: it reaches the handler), each
	// "rejected".
	metrics := b.metrics.Lines(t)
	require.Len(t, metrics, len(cases))
	for _, m := range metrics {
		require.Equal(t, "rejected", m["Outcome"])
		require.EqualValues(t, 1, m[billing.MetricDeliveries])
	}
}

func TestWebhookAPIVersionMismatchIsAConfigChoice(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *setupOptions) { o.ignoreAPIVersion = true })
	now := time.Now()
	ev := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_v", customer: b.customer, subscription: "sub_1", amount: 2000, paid: true}, now))
	ev = []byte(strings.Replace(string(ev), billing.APIVersion, "2025-03-31.basil", 1))
	require.Equal(t, "processed", b.outcome(t, ev))

	// Pinned (the default): refused with a problem that says what to do, and a log line too.
	pinned := setup(t)
	rec := pinned.deliver(t, ev, now, testSecret)
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, rec.Body.String(), billing.TypeAPIVersionMismatch)
	require.Contains(t, rec.Body.String(), "STRIPE_IGNORE_API_VERSION_MISMATCH")
	var warned bool
	for _, l := range pinned.logs.Lines(t) {
		if fix, _ := l["fix"].(string); strings.Contains(fix, billing.APIVersion) {
			warned = true
		}
	}
	require.True(t, warned, "a log line says how to fix the mismatch")
}

func TestWebhookAcceptsFreshAndRotatedSignatures(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *setupOptions) { o.secrets = []string{"whsec_old_secret", testSecret} })
	now := time.Now()
	event := func() []byte {
		return b.stripeEvent(t, "evt_"+randomID(24), "customer.created", now, map[string]any{"object": "customer", "id": b.customer})
	}
	// 299 s old: within the tolerance.
	rec := b.deliver(t, event(), now.Add(-299*time.Second), testSecret)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	// Signed with the second configured secret (rotation).
	rec = b.deliver(t, event(), now, "whsec_old_secret")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	// Two v1 signatures (Stripe during a roll): one wrong, one right.
	payload := event()
	good := hex.EncodeToString(webhook.ComputeSignature(now, payload, testSecret))
	wrong := hex.EncodeToString(webhook.ComputeSignature(now, payload, "whsec_unknown"))
	rec = b.send(payload, fmt.Sprintf("t=%d,v1=%s,v1=%s,v0=%s", now.Unix(), wrong, good, wrong))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, 3, b.count(t, `select count(*) from private.stripe_events where outcome = 'ignored'`))
}

// R1: a successful payment gives exactly one billing update and exactly one CRM sync job.
func TestSuccessfulPaymentUpdatesBillingOnceAndQueuesOneCRMSync(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	created := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionCreated, t0,
		b.subscription(t, subSpec{id: "sub_1", customer: b.customer, status: "active", price: "price_pro", periodEnd: t0.Add(30 * 24 * time.Hour)}))
	require.Equal(t, "processed", b.outcome(t, created))
	updates := b.countUpdates(t)
	jobsBefore := b.crmJobs(t, b.tenantID, "")

	paidID := "evt_" + randomID(24)
	paid := b.stripeEvent(t, paidID, billing.TypeInvoicePaid, t0.Add(time.Minute),
		b.invoice(t, invoiceSpec{id: "in_1", customer: b.customer, subscription: "sub_1", email: "payer@acme.test", amount: 4900, paid: true}, t0.Add(time.Minute)))
	require.Equal(t, "processed", b.outcome(t, paid))

	require.Equal(t, 1, updates())
	// The subscription's push, queued by the first event and not yet taken by a worker,
	// carries the payment too (it pushes the projection as it is when it runs): still one job.
	require.Equal(t, jobsBefore, b.crmJobs(t, b.tenantID, ""))
	require.Equal(t, 1, b.waitingCRMPushes(t, b.tenantID))
	acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, billing.StatusActive, acct.Status)
	require.Equal(t, int64(4900), acct.LastPaymentAmount)
	require.Equal(t, "usd", acct.LastPaymentCurrency)
	require.Equal(t, "in_1", acct.LastInvoiceID)
	require.Equal(t, "payer@acme.test", acct.CustomerEmail)
	require.Equal(t, "price_pro_plan", acct.Plan)
	require.Equal(t, 1, b.count(t, `select count(*) from private.sync_status where integration = 'crm' and tenant_id = $1 and state = 'pending'`, b.tenantID))
	require.Positive(t, acct.CRMVersion)

	// Once a worker has taken that push, the next CRM change gets a job of its own, queued for
	// the version its change made: the pusher completes a job only once HubSpot holds that version.
	_, err = b.pool.Exec(t.Context(), `update private.river_job set state = 'running', attempt = 1, attempted_at = now()
		where kind = 'crm_sync' and args->>'tenant_id' = $1`, b.tenantID.String())
	require.NoError(t, err)
	failedID := "evt_" + randomID(24)
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, failedID, billing.TypeSubscriptionUpdated, t0.Add(90*time.Second),
		b.subscription(t, subSpec{id: "sub_1", customer: b.customer, status: "past_due", price: "price_pro", periodEnd: t0.Add(30 * 24 * time.Hour)}))))
	acct, err = billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, 1, b.crmJobs(t, b.tenantID, failedID))
	require.Equal(t, jobsBefore+1, b.crmJobs(t, b.tenantID, ""))
	require.Equal(t, 1, b.count(t, `select count(*) from private.river_job where kind = 'crm_sync'
		and args->>'source_event' = $1 and (args->>'version')::bigint = $2`, failedID, acct.CRMVersion))
	jobsBefore++

	// A renewal that changes nothing the CRM shows updates billing but queues no CRM job.
	renewal := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, t0.Add(2*time.Minute),
		b.invoice(t, invoiceSpec{id: "in_2", customer: b.customer, subscription: "sub_1", email: "payer@acme.test", amount: 4900, paid: true}, t0.Add(2*time.Minute)))
	require.Equal(t, "processed", b.outcome(t, renewal))
	require.Equal(t, 3, updates())
	require.Equal(t, jobsBefore, b.crmJobs(t, b.tenantID, ""))
}

// R2: a failed payment opens no ticket unless the tenant's rule is on, then exactly one per
// invoice, however often and through however many events Stripe tells us.
func TestPaymentFailureOpensATicketOnlyWhenTheTenantAsks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		rule    bool
		tickets int
	}{
		{"rule off (the default)", false, 0},
		{"rule on", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.exec(t, `update public.tenants set ticket_on_payment_failure = $2 where id = $1`, b.tenantID, tc.rule)
			t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
			failed := func(attempt int64, at time.Time) []byte {
				return b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaymentFailed, at,
					b.invoice(t, invoiceSpec{id: "in_failed", customer: b.customer, subscription: "sub_1", amount: 4900, attempt: attempt}, at))
			}
			first := failed(1, t0)
			require.Equal(t, "processed", b.outcome(t, first))
			require.Equal(t, "duplicate", b.outcome(t, first))
			require.Equal(t, "processed", b.outcome(t, failed(2, t0.Add(time.Hour/2)))) // Stripe's retry failed too

			require.Equal(t, tc.tickets, b.count(t, `select count(*) from public.tickets where tenant_id = $1`, b.tenantID))
			require.Equal(t, tc.tickets, b.helpdeskJobs(t, b.tenantID))
			if tc.tickets > 0 {
				require.Equal(t, 1, b.count(t, `select count(*) from public.tickets where tenant_id = $1 and source = 'payment_failure'
					and source_ref = 'in_failed' and category = 'billing' and status = 'pending_sync' and requester_email = 'billing@acme.test'`, b.tenantID))
			}
			acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
			require.NoError(t, err)
			require.Equal(t, billing.StatusNone, acct.Status, "a failed invoice is a payment fact; the subscription's own update says past_due")
			require.Equal(t, "in_failed", acct.LastFailureInvoiceID)
			require.Contains(t, acct.LastFailureReason, "49.00 USD")
			require.Contains(t, acct.LastFailureReason, "attempt 2")
		})
	}
}

// R5: the same event delivered 10 times serially and 50 times concurrently has one effect.
func TestReplayedEventHasOneEffect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	updates := b.countUpdates(t)
	now := time.Now()
	id := "evt_" + randomID(24)
	paid := b.stripeEvent(t, id, billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_r5", customer: b.customer, subscription: "sub_1", email: "payer@acme.test", amount: 900, paid: true}, now))

	outcomes := map[string]int{}
	for range 10 {
		outcomes[b.outcome(t, paid)]++
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for range 50 {
		wg.Go(func() {
			o := b.outcome(t, paid)
			mu.Lock()
			outcomes[o]++
			mu.Unlock()
		})
	}
	wg.Wait()

	require.Equal(t, map[string]int{"processed": 1, "duplicate": 59}, outcomes)
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_events where id = $1`, id))
	require.Equal(t, 1, updates())
	require.Equal(t, 1, b.crmJobs(t, b.tenantID, ""))
}

// Stripe does not deliver in order: the same events in at least 100 orders must leave the same
// row, and that row must be what the newest event of each facet says.
func TestAnyDeliveryOrderGivesTheSameProjection(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	sub := func(status, price string, cancel bool) map[string]any {
		return b.subscription(t, subSpec{id: "sub_o", customer: b.customer, status: status, price: price,
			periodEnd: at(60 * 24 * 30), cancelAtEnd: cancel, metadataTenant: b.tenantID.String()})
	}
	inv := func(id string, paid bool, attempt int64) map[string]any {
		return b.invoice(t, invoiceSpec{id: id, customer: b.customer, subscription: "sub_o", email: "payer@acme.test", amount: 1500, paid: paid, attempt: attempt}, at(5))
	}
	// Fixed ids so the tie-break (same created second: by event id) is part of the test.
	events := [][]byte{
		b.stripeEvent(t, "evt_a_checkout", billing.TypeCheckoutCompleted, at(0), b.checkoutSession(t, b.customer, b.tenantID.String(), "sub_o", "first@acme.test")),
		b.stripeEvent(t, "evt_b_created", billing.TypeSubscriptionCreated, at(0), sub("incomplete", "price_basic", false)),
		b.stripeEvent(t, "evt_c_paid", billing.TypeInvoicePaid, at(1), inv("in_a", true, 1)),
		b.stripeEvent(t, "evt_d_active", billing.TypeSubscriptionUpdated, at(1), sub("active", "price_basic", false)),
		b.stripeEvent(t, "evt_e_upgrade", billing.TypeSubscriptionUpdated, at(10), sub("active", "price_pro", false)),
		b.stripeEvent(t, "evt_f_failed", billing.TypeInvoicePaymentFailed, at(20), inv("in_b", false, 1)),
		b.stripeEvent(t, "evt_g_pastdue", billing.TypeSubscriptionUpdated, at(20), sub("past_due", "price_pro", false)),
		b.stripeEvent(t, "evt_h_failed2", billing.TypeInvoicePaymentFailed, at(30), inv("in_b", false, 2)),
		b.stripeEvent(t, "evt_i_cancel", billing.TypeSubscriptionUpdated, at(30), sub("past_due", "price_pro", true)),
		b.stripeEvent(t, "evt_j_ignored", "customer.updated", at(40), map[string]any{"object": "customer", "id": b.customer}),
	}
	reset := func() {
		b.exec(t, `delete from private.stripe_events; delete from private.billing_accounts; delete from private.river_job; delete from private.sync_status`)
	}
	apply := func(order []int) string {
		reset()
		for _, i := range order {
			b.outcome(t, events[i])
		}
		return b.row(t, b.tenantID)
	}

	inOrder := make([]int, len(events))
	for i := range inOrder {
		inOrder[i] = i
	}
	want := apply(inOrder)
	acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, billing.StatusPastDue, acct.Status, "evt_i_cancel (same second as evt_h_failed2, larger id) says past_due")
	require.Equal(t, "price_pro", acct.PriceID)
	require.True(t, acct.CancelAtPeriodEnd)
	require.Equal(t, "in_a", acct.LastInvoiceID)
	require.Equal(t, "payer@acme.test", acct.CustomerEmail)
	require.Contains(t, acct.LastFailureReason, "attempt 2")
	require.Equal(t, billing.Stamp{Created: at(30).UTC(), EventID: "evt_i_cancel"}, acct.Source())

	seed := time.Now().UnixNano()
	t.Logf("shuffle seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	reversed := make([]int, len(events))
	for i := range reversed {
		reversed[i] = len(events) - 1 - i
	}
	require.Equal(t, want, apply(reversed), "reversed order")
	for n := range 110 {
		order := rng.Perm(len(events))
		require.Equal(t, want, apply(order), "shuffle %d: %v", n, order)
	}
}

func TestUnknownTenantIsStoredAsUnmatched(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()
	stranger := "cus_" + randomID(14)
	cases := []struct {
		name     string
		obj      map[string]any
		typ      string
		outcome  string
		tenantOK bool
	}{
		{"unknown customer, no metadata", b.invoice(t, invoiceSpec{id: "in_u1", customer: stranger, subscription: "sub_x", email: "billing@acme.test", amount: 1, paid: true}, now),
			billing.TypeInvoicePaid, "unmatched", false},
		{"metadata names a tenant that does not exist", b.subscription(t, subSpec{id: "sub_x", customer: stranger, status: "active", price: "price_basic", periodEnd: now, metadataTenant: uuid.NewString()}),
			billing.TypeSubscriptionUpdated, "unmatched", false},
		{"metadata is not a tenant id", b.subscription(t, subSpec{id: "sub_x", customer: stranger, status: "active", price: "price_basic", periodEnd: now, metadataTenant: "acme"}),
			billing.TypeSubscriptionUpdated, "unmatched", false},
	}
	for _, tc := range cases {
		id := "evt_" + randomID(24)
		require.Equal(t, tc.outcome, b.outcome(t, b.stripeEvent(t, id, tc.typ, now, tc.obj)), tc.name)
		require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_events where id = $1 and outcome = 'unmatched' and tenant_id is null and applied_at is null`, id), tc.name)
	}
	// Never guessed by email: the tenant's contact email matched the invoice's, still unmatched.
	require.Zero(t, b.count(t, `select count(*) from private.billing_accounts`))
	require.Zero(t, b.count(t, `select count(*) from private.stripe_customers where customer_id = $1`, stranger))
	// Visible to ops: each delivery's log line and metric say unmatched, with the event type.
	var logged []string
	for _, l := range b.logs.Lines(t) {
		if l["msg"] == "request" {
			logged = append(logged, fmt.Sprint(l["outcome"], " ", l["event_type"]))
		}
	}
	require.Equal(t, []string{"unmatched invoice.paid", "unmatched customer.subscription.updated", "unmatched customer.subscription.updated"}, logged)
	var counted []string
	for _, m := range b.metrics.Lines(t) {
		counted = append(counted, fmt.Sprint(m["Outcome"], " ", m["EventType"]))
	}
	require.Equal(t, logged, counted)
}

func TestTenantResolution(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()

	// A checkout session checkout-create recorded binds its customer to the session's tenant.
	other := b.newTenant(t, false)
	newCustomer := "cus_" + randomID(14)
	session := b.checkoutSession(t, newCustomer, other.String(), "sub_new", "owner@other.test")
	b.exec(t, `insert into private.checkout_sessions (session_id, tenant_id) values ($1, $2)`, session["id"], other)
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeCheckoutCompleted, now, session)))
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_customers where customer_id = $1 and tenant_id = $2`, newCustomer, other))
	// ... so a later invoice without any metadata finds it.
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_n", customer: newCustomer, subscription: "sub_new", amount: 10, paid: true}, now))))
	acct, err := billing.LoadAccount(t.Context(), b.pool, other)
	require.NoError(t, err)
	require.Equal(t, "in_n", acct.LastInvoiceID)
	require.Equal(t, "owner@other.test", acct.CustomerEmail)

	// metadata.tenant_id of an existing tenant resolves (and records the mapping).
	third := b.newTenant(t, false)
	metaCustomer := "cus_" + randomID(14)
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionCreated, now,
		b.subscription(t, subSpec{id: "sub_m", customer: metaCustomer, status: "trialing", price: "price_basic", periodEnd: now, metadataTenant: third.String()}))))
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_customers where customer_id = $1 and tenant_id = $2`, metaCustomer, third))
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_events where tenant_id = $1 and outcome = 'processed' and applied_at is not null`, third))

	// Our own mapping wins over metadata naming another tenant.
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionUpdated, now.Add(time.Second),
		b.subscription(t, subSpec{id: "sub_1", customer: b.customer, status: "active", price: "price_basic", periodEnd: now, metadataTenant: third.String()}))))
	acct, err = billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, "sub_1", acct.SubscriptionID)
}

func TestOtherEventTypesAreIgnoredButRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := "evt_" + randomID(24)
	require.Equal(t, "ignored", b.outcome(t, b.stripeEvent(t, id, "invoice.finalized", time.Now(),
		b.invoice(t, invoiceSpec{id: "in_i", customer: b.customer, amount: 1}, time.Now()))))
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_events where id = $1 and outcome = 'ignored' and type = 'invoice.finalized'`, id))
	require.Zero(t, b.count(t, `select count(*) from private.billing_accounts`))
	require.Equal(t, "duplicate", b.outcome(t, b.stripeEvent(t, id, "invoice.finalized", time.Now(), map[string]any{"object": "invoice", "id": "in_i"})))

	// One log line and one metric per delivery, with outcome and event type.
	var requests []map[string]any
	for _, l := range b.logs.Lines(t) {
		if l["msg"] == "request" {
			requests = append(requests, l)
		}
	}
	require.Len(t, requests, 2)
	require.Equal(t, "ignored", requests[0]["outcome"])
	require.Equal(t, "duplicate", requests[1]["outcome"])
	require.Equal(t, "invoice.finalized", requests[1]["event_type"])
	metrics := b.metrics.Lines(t)
	require.Len(t, metrics, 2)
	require.Equal(t, "duplicate", metrics[1]["Outcome"])
	require.Equal(t, "invoice.finalized", metrics[1]["EventType"])
}

// Valid JSON that jsonb refuses (\u0000, a lone surrogate), as a customer can type it into a
// name or a payment error can carry it, is applied once like any event instead of failing on
// every one of Stripe's retries: the readable text gets U+FFFD, and the verified bytes are kept
// unchanged (the only copy stored), so a stored event is applied again from exactly what Stripe
// signed.
func TestEventWithTextJSONBRefusesIsAppliedAndKeptAsSigned(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, `update public.tenants set ticket_on_payment_failure = true where id = $1`, b.tenantID)
	now := time.Now().Truncate(time.Second)
	withBadText := func(id, customer string) []byte {
		inv := b.invoice(t, invoiceSpec{id: "in_nul_" + randomID(6), customer: customer, subscription: "sub_1", amount: 4900, attempt: 1}, now)
		inv["customer_name"] = "Acme\x00 Ltd LONE_SURROGATE"
		inv["metadata"] = map[string]any{"note": "a\x00b"}
		inv["last_finalization_error"] = map[string]any{"message": "card\x00declined", "type": "card_error"}
		raw := b.stripeEvent(t, id, billing.TypeInvoicePaymentFailed, now, inv)
		require.Contains(t, string(raw), `\u0000`)
		return bytes.ReplaceAll(raw, []byte("LONE_SURROGATE"), []byte(`\ud83d`))
	}

	id := "evt_" + randomID(24)
	payload := withBadText(id, b.customer)
	require.Equal(t, "processed", b.outcome(t, payload))
	require.Equal(t, "duplicate", b.outcome(t, payload))
	var raw []byte
	var jsonbCopy bool
	var customer string
	require.NoError(t, b.pool.QueryRow(t.Context(), `select raw_payload, payload is not null, customer_id
		from private.stripe_events where id = $1`, id).Scan(&raw, &jsonbCopy, &customer))
	require.Equal(t, string(payload), string(raw), "the verified bytes, unchanged")
	require.False(t, jsonbCopy, "the event is stored once, as Stripe signed it")
	require.Equal(t, b.customer, customer)
	acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, "in_nul_", acct.LastFailureInvoiceID[:len("in_nul_")])
	require.Contains(t, acct.LastFailureReason, "card\uFFFDdeclined")
	require.Equal(t, 1, b.count(t, `select count(*) from public.tickets where tenant_id = $1 and body like '%card' || chr(65533) || 'declined%'`, b.tenantID))

	// Unmatched when it came, applied later (reconcile's path) from the bytes Stripe signed.
	stranger := "cus_" + randomID(14)
	late := "evt_" + randomID(24)
	require.Equal(t, "unmatched", b.outcome(t, withBadText(late, stranger)))
	b.exec(t, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, stranger, b.tenantID)
	res, err := b.processor(t).ApplyStored(t.Context(), late)
	require.NoError(t, err)
	require.Equal(t, billing.OutcomeProcessed, res.Outcome)
	require.Equal(t, 2, b.count(t, `select count(*) from public.tickets where tenant_id = $1`, b.tenantID))
}

// A tenant that moved to a new subscription keeps it whatever the old one's last events say
// and in whatever order they all arrive: an update of the old subscription after the new one
// started, its deletion (newer than every event of the new one) and its final invoice failing
// neither cancel the tenant nor make it past due. When the current subscription itself
// ends, the tenant is canceled.
func TestEndOfAnOldSubscriptionKeepsTheCurrentOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	sub := func(id, status, price string, cancel bool) map[string]any {
		return b.subscription(t, subSpec{id: id, customer: b.customer, status: status, price: price,
			periodEnd: at(60 * 24 * 30), cancelAtEnd: cancel})
	}
	events := [][]byte{
		b.stripeEvent(t, "evt_b_new_created", billing.TypeSubscriptionCreated, at(10), sub("sub_new", "active", "price_pro", false)),
		b.stripeEvent(t, "evt_c_old_updated", billing.TypeSubscriptionUpdated, at(11), sub("sub_old", "active", "price_basic", true)),
		b.stripeEvent(t, "evt_d_old_deleted", billing.TypeSubscriptionDeleted, at(20), sub("sub_old", "canceled", "price_basic", true)),
		b.stripeEvent(t, "evt_e_old_final", billing.TypeInvoicePaymentFailed, at(25),
			b.invoice(t, invoiceSpec{id: "in_old_final", customer: b.customer, subscription: "sub_old", amount: 700, attempt: 1}, at(25))),
	}
	apply := func(order []int) string {
		b.exec(t, `delete from private.stripe_events; delete from private.billing_accounts; delete from private.river_job; delete from private.sync_status`)
		for _, i := range order {
			require.Equal(t, "processed", b.outcome(t, events[i]))
		}
		return b.row(t, b.tenantID)
	}
	var want string
	for n, order := range permutations(len(events)) { // all 24 orders
		got := apply(order)
		if n == 0 {
			want = got
			acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
			require.NoError(t, err)
			require.Equal(t, "sub_new", acct.SubscriptionID)
			require.Equal(t, "price_pro", acct.PriceID)
			require.Equal(t, billing.StatusActive, acct.Status)
			require.False(t, acct.CancelAtPeriodEnd)
			require.Equal(t, "in_old_final", acct.LastFailureInvoiceID, "the failure itself is still on record")
			require.Equal(t, billing.StatusCanceled, acct.Subscriptions["sub_old"].Status)
		}
		require.Equal(t, want, got, "order %v", order)
	}

	// The current subscription's own end does cancel the tenant, and the CRM hears of it.
	endID := "evt_" + randomID(24)
	require.Equal(t, "processed", b.outcome(t, b.stripeEvent(t, endID, billing.TypeSubscriptionDeleted, at(30), sub("sub_new", "canceled", "price_pro", false))))
	acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, "sub_new", acct.SubscriptionID)
	require.Equal(t, billing.StatusCanceled, acct.Status)
	require.Equal(t, billing.LifecycleChurned, acct.CRMView().Lifecycle)
	require.Equal(t, 1, b.waitingCRMPushes(t, b.tenantID), "a push waits, which reads the projection when it runs")
}

// permutations lists every order of 0..n-1 (Heap's algorithm), the identity first.
func permutations(n int) [][]int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	out := [][]int{slices.Clone(p)}
	c := make([]int, n)
	for i := 0; i < n; {
		if c[i] < i {
			if i%2 == 0 {
				p[0], p[i] = p[i], p[0]
			} else {
				p[c[i]], p[i] = p[i], p[c[i]]
			}
			out = append(out, slices.Clone(p))
			c[i]++
			i = 0
		} else {
			c[i] = 0
			i++
		}
	}
	return out
}

// A storm of junk deliveries (an attacker at the API's throttle) must cost the database
// nothing that grows with it: refusals are counted in one row per minute and reason, and
// delivery health still shows every one of them.
func TestJunkDeliveriesLeaveBoundedCounters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 10000
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				body := fmt.Appendf(nil, `{"id":"evt_junk_%d"}`, i)
				header := "t=1,v1=" + strings.Repeat("0", 64)
				if i%2 == 0 {
					header = "" // no signature at all
				}
				if rec := b.send(body, header); rec.Code != http.StatusBadRequest {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	require.Zero(t, bad.Load(), "every junk delivery is refused with 400")
	rows := b.count(t, `select count(*) from private.webhook_rejection_counts`)
	require.LessOrEqual(t, rows, 4, "one row per minute and reason (the run may straddle a minute)")
	rep, err := health.Read(context.Background(), b.pool, health.Query{})
	require.NoError(t, err)
	require.Equal(t, n, rep.Webhook.Rejected)
	require.Zero(t, rep.Webhook.SuccessRate)

	// The rejected-deliveries alarm reads the metric the refusals emit, under its exact dimensions.
	p, err := sam.Open(".")
	require.NoError(t, err)
	a, found := sam.Alarm{}, false
	for _, x := range p.Template.Alarms {
		if x.LogicalID == "WebhookRejectedAlarm" {
			a, found = x, true
		}
	}
	require.True(t, found)
	dims := map[string]string{}
	for k, v := range a.Dimensions {
		dims[k] = v.Value
	}
	telemetrytest.RequireMetric(t, b.metrics.Lines(t), a.Namespace, a.MetricName, dims)
}
