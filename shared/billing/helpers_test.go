package billing_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
	"github.com/portal-functions/portal-functions/shared/web"
)

const testSecret = "whsec_test_secret_for_billing"

// testMaxBody is the webhook's own body limit.
const testMaxBody = billing.DefaultMaxBody

// bundle is what a webhook test works with: a fresh database, the real handler stack (web.Wrap,
// verifier, processor, River inserter), its metrics and log output, and Stripe's fixtures.
type bundle struct {
	pool     *pgxpool.Pool
	handler  http.Handler
	metrics  *telemetrytest.Buffer
	logs     *telemetrytest.Buffer
	fixtures map[string]map[string]any
	tenantID uuid.UUID
	customer string
}

type setupOptions struct {
	ignoreAPIVersion bool
	livemode         bool
	secrets          []string
	counter          **dbtest.Counter // set: the pool counts its round trips into it
	limit            *web.Limiter     // the bound on requests at once (none when nil)
	pool             []dbtest.Option  // how the pool is opened (dbtest's defaults when empty)
}

// pooled opens the bundle's pool with opts (dbtest.Prepared: prepared statements).
func pooled(opts ...dbtest.Option) func(*setupOptions) {
	return func(o *setupOptions) { o.pool = append(o.pool, opts...) }
}

// limited puts the handler behind l, as the dev server and Lambda put every function.
func limited(l *web.Limiter) func(*setupOptions) {
	return func(o *setupOptions) { o.limit = l }
}

// counted puts a dbtest.Counter on the bundle's pool and returns it through c.
func counted(c **dbtest.Counter) func(*setupOptions) {
	return func(o *setupOptions) { o.counter = c }
}

// setup builds the webhook on a fresh database with one tenant whose Stripe customer is mapped
// (as checkout-create leaves it).
func setup(t testing.TB, opts ...func(*setupOptions)) *bundle {
	t.Helper()
	o := setupOptions{secrets: []string{testSecret}}
	for _, f := range opts {
		f(&o)
	}
	var pool *pgxpool.Pool
	if o.counter != nil {
		pool, *o.counter = dbtest.NewCounted(t, o.pool...)
	} else {
		pool = dbtest.New(t, o.pool...)
	}
	b := &bundle{pool: pool, metrics: &telemetrytest.Buffer{}, logs: &telemetrytest.Buffer{}, fixtures: map[string]map[string]any{}}
	for _, r := range []string{"event", "invoice", "subscription", "checkout.session"} {
		b.fixtures[r] = stripemock.Fixture(t, r)
	}
	// The function's own definition builds the handler, as Lambda and the dev server do: its
	// config from the environment, its body limits, its metrics and its rejection notes.
	env := map[string]string{
		"STRIPE_WEBHOOK_SECRET":              strings.Join(o.secrets, ","),
		"STRIPE_IGNORE_API_VERSION_MISMATCH": fmt.Sprint(o.ignoreAPIVersion),
		"STRIPE_LIVEMODE":                    fmt.Sprint(o.livemode),
	}
	h, err := billing.WebhookFunction.Handler(context.Background(), function.Deps{
		Name:    "payment-webhook",
		Pool:    pool,
		Logger:  telemetry.NewLogger(b.logs, "payment-webhook", slog.LevelInfo),
		Metrics: telemetry.NewMetrics(b.metrics, "payment-webhook"),
		Lookup:  func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Limit:   o.limit,
	})
	require.NoError(t, err)
	b.handler = h
	b.tenantID = b.newTenant(t, false)
	b.customer = "cus_" + randomID(14)
	b.exec(t, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, b.customer, b.tenantID)
	return b
}

func (b *bundle) newTenant(t testing.TB, ticketRule bool) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`insert into public.tenants (name, ticket_on_payment_failure, contact_email) values ('Acme', $1, 'billing@acme.test') returning id`,
		ticketRule).Scan(&id))
	return id
}

func (b *bundle) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err)
}

func (b *bundle) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// strings returns the one text column of every row sql selects.
func (b *bundle) strings(t testing.TB, sql string, args ...any) []string {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), sql, args...)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out
}

// countUpdates installs a trigger that counts UPDATEs of the tenant's billing row, so a test
// can say "exactly one billing update" about the database itself.
func (b *bundle) countUpdates(t testing.TB) func() int {
	t.Helper()
	b.exec(t, `
		create table public.test_billing_updates (tenant_id uuid not null);
		create function public.test_count_billing_update() returns trigger language plpgsql as $$
		begin insert into public.test_billing_updates values (new.tenant_id); return new; end $$;
		create trigger test_count_billing_update after update on private.billing_accounts
			for each row execute function public.test_count_billing_update();`)
	return func() int {
		return b.count(t, `select count(*) from public.test_billing_updates where tenant_id = $1`, b.tenantID)
	}
}

// crmJobs counts River crm_sync jobs for the tenant (optionally caused by one event).
func (b *bundle) crmJobs(t testing.TB, tenantID uuid.UUID, sourceEvent string) int {
	t.Helper()
	return b.count(t, `select count(*) from private.river_job where kind = 'crm_sync'
		and args->>'tenant_id' = $1 and ($2 = '' or args->>'source_event' = $2)`, tenantID.String(), sourceEvent)
}

// waitingCRMPushes counts the tenant's crm_sync jobs waiting to start: each pushes the
// projection as it is when it runs, so one of them carries every change committed before then
// (a change queued while one waits rides on it: 20261206320000_crm_sync_rides_a_waiting_push.sql).
func (b *bundle) waitingCRMPushes(t testing.TB, tenantID uuid.UUID) int {
	t.Helper()
	return b.count(t, `select count(*) from private.river_job where kind = 'crm_sync'
		and args->>'tenant_id' = $1 and state = 'available'`, tenantID.String())
}

func (b *bundle) helpdeskJobs(t testing.TB, tenantID uuid.UUID) int {
	t.Helper()
	return b.count(t, `select count(*) from private.river_job where kind = 'helpdesk_ticket' and args->>'tenant_id' = $1`, tenantID.String())
}

// row returns the tenant's projection row and its subscriptions' rows as JSON, without the
// wall-clock columns, crm_version (it counts the CRM-visible changes on the way, which
// depend on the delivery order; the state it ends at does not) and the webhook health's
// delivery tally (how many deliveries arrived, not what they said).
func (b *bundle) row(t testing.TB, tenantID uuid.UUID) string {
	t.Helper()
	var s string
	err := b.pool.QueryRow(context.Background(), `
		select coalesce((select (to_jsonb(a) - 'created_at' - 'updated_at' - 'crm_version'
			- 'delivery_bucket' - 'bucket_deliveries' - 'rolled_bucket' - 'rolled_deliveries')::text
			from private.billing_accounts a where tenant_id = $1), '')
		|| coalesce((select jsonb_agg(to_jsonb(s) order by subscription_id)::text
			from private.billing_subscriptions s where tenant_id = $1), '')`, tenantID).Scan(&s)
	require.NoError(t, err)
	return s
}

// clone deep-copies a fixture object so a test can change it.
func clone(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out))
	return out
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// stripeEvent builds a Stripe event around obj from the fixture's envelope, with every field
// Stripe sends (including those our code ignores).
func (b *bundle) stripeEvent(t testing.TB, id, typ string, created time.Time, obj map[string]any) []byte {
	t.Helper()
	ev := clone(t, b.fixtures["event"])
	ev["id"] = id
	ev["type"] = typ
	ev["created"] = created.Unix()
	ev["api_version"] = billing.APIVersion
	ev["pending_webhooks"] = 1
	ev["data"] = map[string]any{"object": obj, "previous_attributes": map[string]any{}}
	ev["request"] = map[string]any{"id": "req_" + randomID(14), "idempotency_key": uuid.NewString()}
	raw, err := json.Marshal(ev)
	require.NoError(t, err)
	return raw
}

type subSpec struct {
	id, customer, status, price string
	periodEnd                   time.Time
	cancelAtEnd                 bool
	metadataTenant              string
}

// subscription is Stripe's subscription fixture made to say spec (the fixture's shape is of a
// newer API version: the period lives on the items, which the webhook reads too).
func (b *bundle) subscription(t testing.TB, s subSpec) map[string]any {
	t.Helper()
	obj := clone(t, b.fixtures["subscription"])
	obj["id"], obj["customer"], obj["status"], obj["cancel_at_period_end"] = s.id, s.customer, s.status, s.cancelAtEnd
	obj["metadata"] = map[string]any{}
	if s.metadataTenant != "" {
		obj["metadata"] = map[string]any{"tenant_id": s.metadataTenant}
	}
	items := obj["items"].(map[string]any)["data"].([]any)
	item := items[0].(map[string]any)
	item["current_period_end"] = s.periodEnd.Unix()
	item["subscription"] = s.id
	price := item["price"].(map[string]any)
	price["id"], price["lookup_key"] = s.price, s.price+"_plan"
	return obj
}

type invoiceSpec struct {
	id, customer, subscription, email string
	amount                            int64
	paid                              bool
	attempt                           int64
}

// invoice is Stripe's invoice fixture made to say spec; the subscription is given the API
// 2023-10-16 way (top-level) and the newer way (parent.subscription_details) alike.
func (b *bundle) invoice(t testing.TB, s invoiceSpec, paidAt time.Time) map[string]any {
	t.Helper()
	obj := clone(t, b.fixtures["invoice"])
	obj["id"], obj["customer"], obj["customer_email"] = s.id, s.customer, s.email
	obj["subscription"] = s.subscription
	obj["billing_reason"] = "subscription_cycle"
	obj["parent"] = map[string]any{"type": "subscription_details", "quote_details": nil,
		"subscription_details": map[string]any{"subscription": s.subscription, "metadata": map[string]any{}}}
	obj["amount_due"], obj["attempt_count"], obj["currency"] = s.amount, s.attempt, "usd"
	obj["last_finalization_error"] = nil
	if s.paid {
		obj["status"], obj["paid"], obj["amount_paid"], obj["amount_remaining"] = "paid", true, s.amount, 0
		obj["status_transitions"] = map[string]any{"paid_at": paidAt.Unix(), "finalized_at": paidAt.Unix(), "marked_uncollectible_at": nil, "voided_at": nil}
	} else {
		obj["status"], obj["paid"], obj["amount_paid"], obj["amount_remaining"] = "open", false, 0, s.amount
	}
	return obj
}

// checkoutSession is Stripe's checkout.session fixture as a completed subscription checkout.
func (b *bundle) checkoutSession(t testing.TB, customer, clientRef, subscription, email string) map[string]any {
	t.Helper()
	obj := clone(t, b.fixtures["checkout.session"])
	obj["id"] = "cs_test_" + randomID(24)
	obj["mode"], obj["status"], obj["payment_status"] = "subscription", "complete", "paid"
	obj["customer"], obj["subscription"] = customer, subscription
	obj["client_reference_id"] = clientRef
	if clientRef == "" {
		obj["client_reference_id"] = nil
	}
	obj["customer_details"].(map[string]any)["email"] = email
	return obj
}

// deliver signs payload at signedAt with secret and sends it through the handler.
func (b *bundle) deliver(t testing.TB, payload []byte, signedAt time.Time, secret string) *httptest.ResponseRecorder {
	t.Helper()
	return b.send(payload, billing.SignedTestEvent(secret, payload, signedAt))
}

func (b *bundle) send(payload []byte, header string) *httptest.ResponseRecorder {
	return b.sendRequest(httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe", bytes.NewReader(payload)), header)
}

func (b *bundle) sendRequest(req *http.Request, header string) *httptest.ResponseRecorder {
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if header != "" {
		req.Header.Set(billing.SignatureHeader, header)
	}
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

// outcome delivers payload freshly signed and returns the outcome of a 200 answer.
func (b *bundle) outcome(t testing.TB, payload []byte) string {
	t.Helper()
	rec := b.deliver(t, payload, time.Now(), testSecret)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var body struct {
		Outcome string `json:"outcome"`
	}
	require.NoError(t, json.NewDecoder(io.Reader(rec.Body)).Decode(&body))
	return body.Outcome
}
