package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth/authtest"
	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/checkout"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/validation"
)

// stripeCall is one request the checkout sent to Stripe (stripe-mock), as form values.
type stripeCall struct {
	path           string
	form           url.Values
	idempotencyKey string
}

// recorder is an http.RoundTripper that keeps what we send to Stripe: stripe-mock is
// stateless, so the parameters we sent are what there is to assert.
type recorder struct {
	mu    sync.Mutex
	host  string
	calls []stripeCall
	inner http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == r.host && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		r.mu.Lock()
		r.calls = append(r.calls, stripeCall{path: req.URL.Path, form: form, idempotencyKey: req.Header.Get("Idempotency-Key")})
		r.mu.Unlock()
	}
	return r.inner.RoundTrip(req)
}

func (r *recorder) take() []stripeCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	return out
}

type checkoutBundle struct {
	pool     *pgxpool.Pool
	handler  http.Handler
	issuer   *authtest.Issuer
	stripe   *recorder
	tenantID uuid.UUID
	users    map[string]uuid.UUID // by role
}

// setupCheckout builds checkout-create exactly as Lambda does (config from the environment
// names, auth, tenant scope) against stripe-mock and a fresh database with a tenant that has
// an owner, an admin and a member.
func setupCheckout(t *testing.T) *checkoutBundle {
	t.Helper()
	pool := dbtest.New(t)
	base := stripemock.Start(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	rec := &recorder{host: u.Host, inner: http.DefaultTransport}
	iss := authtest.New(t)
	env := map[string]string{
		"STRIPE_API_KEY":      "sk_test_123",
		"STRIPE_API_BASE":     base,
		"STRIPE_PRICE_IDS":    "price_basic, price_pro",
		"PORTAL_URL":          "https://portal.example.test",
		"SUPABASE_URL":        iss.URL(),
		"SUPABASE_JWT_SECRET": string(iss.Secret()),
	}
	deps := function.Deps{
		Name: "checkout-create", Pool: pool,
		Logger:     telemetry.NewLogger(io.Discard, "checkout-create", slog.LevelInfo),
		Metrics:    telemetry.NewMetrics(io.Discard, "checkout-create"),
		HTTPClient: &http.Client{Transport: rec},
		Lookup:     func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	}
	h, err := checkout.Function.Handler(t.Context(), deps)
	require.NoError(t, err)
	b := &checkoutBundle{pool: pool, handler: h, issuer: iss, stripe: rec, users: map[string]uuid.UUID{}}
	require.NoError(t, pool.QueryRow(context.Background(),
		`insert into public.tenants (name, contact_email) values ('Acme', 'billing@acme.test') returning id`).Scan(&b.tenantID))
	for _, role := range []string{"owner", "admin", "member"} {
		b.users[role] = uuid.New()
		_, err := pool.Exec(context.Background(), `insert into public.memberships (tenant_id, user_id, role) values ($1, $2, $3)`,
			b.tenantID, b.users[role], role)
		require.NoError(t, err)
	}
	return b
}

func (b *checkoutBundle) post(t *testing.T, role, body string) *httptest.ResponseRecorder {
	t.Helper()
	return b.postWithKey(t, role, body, "")
}

// postWithKey posts with the client's Idempotency-Key header (none when key is empty).
func (b *checkoutBundle) postWithKey(t *testing.T, role, body, key string) *httptest.ResponseRecorder {
	t.Helper()
	return b.postTo(t, billing.CheckoutPath, role, body, key)
}

func TestCheckoutCreatesASessionForTheCallersTenant(t *testing.T) {
	t.Parallel()
	b := setupCheckout(t)

	rec := b.post(t, "owner", `{"price_id":"price_pro","success_path":"/billing/done?session={CHECKOUT_SESSION_ID}","cancel_path":"/billing"}`)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	var out struct{ ID, URL string }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	require.True(t, strings.HasPrefix(out.ID, "cs_"), out.ID)
	require.True(t, strings.HasPrefix(out.URL, "https://"), out.URL)
	require.Equal(t, "private, no-store", rec.Header().Get("Cache-Control"))

	calls := b.stripe.take()
	require.Len(t, calls, 2)
	cust, sess := calls[0], calls[1]
	require.Equal(t, "/v1/customers", cust.path)
	require.Equal(t, b.tenantID.String(), cust.form.Get("metadata[tenant_id]"))
	require.Equal(t, "billing@acme.test", cust.form.Get("email"))
	require.Equal(t, "portal-customer-"+b.tenantID.String(), cust.idempotencyKey)

	var customerID string
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`select customer_id from private.stripe_customers where tenant_id = $1`, b.tenantID).Scan(&customerID))
	require.True(t, strings.HasPrefix(customerID, "cus_"), customerID)

	require.Equal(t, "/v1/checkout/sessions", sess.path)
	require.Equal(t, "subscription", sess.form.Get("mode"))
	require.Equal(t, customerID, sess.form.Get("customer"))
	require.Equal(t, b.tenantID.String(), sess.form.Get("client_reference_id"))
	require.Equal(t, b.tenantID.String(), sess.form.Get("subscription_data[metadata][tenant_id]"))
	require.Equal(t, "price_pro", sess.form.Get("line_items[0][price]"))
	require.Equal(t, "1", sess.form.Get("line_items[0][quantity]"))
	require.Equal(t, "https://portal.example.test/billing/done?session={CHECKOUT_SESSION_ID}", sess.form.Get("success_url"))
	require.Equal(t, "https://portal.example.test/billing", sess.form.Get("cancel_url"))
	require.True(t, strings.HasPrefix(sess.idempotencyKey, "portal-checkout-"), sess.idempotencyKey)
	// The session is recorded as ours in the same request: its completion may bind a customer.
	require.Equal(t, 1, countRows(t, b.pool, `select count(*) from private.checkout_sessions where session_id = $1 and tenant_id = $2`, out.ID, b.tenantID))

	// An admin's second checkout reuses the tenant's customer: no second customer at Stripe.
	rec = b.post(t, "admin", `{"price_id":"price_basic"}`)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	calls = b.stripe.take()
	require.Len(t, calls, 1)
	require.Equal(t, "/v1/checkout/sessions", calls[0].path)
	require.Equal(t, customerID, calls[0].form.Get("customer"))
	require.Equal(t, "https://portal.example.test/billing?checkout=canceled", calls[0].form.Get("cancel_url"))
	require.Equal(t, 1, countRows(t, b.pool, `select count(*) from private.stripe_customers where tenant_id = $1`, b.tenantID))

	// The session's idempotency key at Stripe: the same for a retry of the same request with
	// the client's Idempotency-Key (Stripe then answers with the same session), another for
	// another key or another body, and a fresh one for every request without a key.
	sessionKey := func(body, key string) string {
		t.Helper()
		rec := b.postWithKey(t, "owner", body, key)
		require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
		calls := b.stripe.take()
		require.Len(t, calls, 1)
		return calls[0].idempotencyKey
	}
	const pro, basic = `{"price_id":"price_pro"}`, `{"price_id":"price_basic"}`
	first := sessionKey(pro, "retry-1")
	require.Equal(t, first, sessionKey(pro, "retry-1"))
	require.NotEqual(t, first, sessionKey(pro, "retry-2"))
	require.NotEqual(t, first, sessionKey(basic, "retry-1"))
	require.NotEqual(t, sessionKey(pro, ""), sessionKey(pro, ""))
}

func TestCheckoutRefusals(t *testing.T) {
	t.Parallel()
	b := setupCheckout(t)
	cases := []struct {
		name   string
		role   string
		body   string
		status int
		field  string
	}{
		{"member may not subscribe", "member", `{"price_id":"price_pro"}`, http.StatusForbidden, ""},
		{"price not configured", "owner", `{"price_id":"price_free_forever"}`, http.StatusUnprocessableEntity, "price_id"},
		{"missing price", "owner", `{}`, http.StatusUnprocessableEntity, "price_id"},
		{"tenant in the body", "owner", `{"price_id":"price_pro","tenant_id":"` + uuid.NewString() + `"}`, http.StatusBadRequest, ""},
		{"protocol-relative", "owner", `{"price_id":"price_pro","success_path":"//evil.example/x"}`, http.StatusUnprocessableEntity, "success_path"},
		{"absolute URL", "owner", `{"price_id":"price_pro","success_path":"https://evil.example/"}`, http.StatusUnprocessableEntity, "success_path"},
		{"javascript scheme", "owner", `{"price_id":"price_pro","cancel_path":"javascript:alert(1)"}`, http.StatusUnprocessableEntity, "cancel_path"},
		{"backslash host", "owner", `{"price_id":"price_pro","success_path":"/\\evil.example"}`, http.StatusUnprocessableEntity, "success_path"},
		{"encoded slashes", "owner", `{"price_id":"price_pro","success_path":"/%2F%2Fevil.example"}`, http.StatusUnprocessableEntity, "success_path"},
		{"encoded backslash", "owner", `{"price_id":"price_pro","success_path":"/%5Cevil.example"}`, http.StatusUnprocessableEntity, "success_path"},
		{"double-encoded slashes", "owner", `{"price_id":"price_pro","success_path":"/%252F%252Fevil.example"}`, http.StatusUnprocessableEntity, "success_path"},
		{"relative without slash", "owner", `{"price_id":"price_pro","success_path":"evil.example"}`, http.StatusUnprocessableEntity, "success_path"},
		{"dot segments", "owner", `{"price_id":"price_pro","cancel_path":"/billing/../../x"}`, http.StatusUnprocessableEntity, "cancel_path"},
		{"control character", "owner", `{"price_id":"price_pro","cancel_path":"/\t/evil.example"}`, http.StatusUnprocessableEntity, "cancel_path"},
		{"userinfo trick", "owner", `{"price_id":"price_pro","success_path":"@evil.example"}`, http.StatusUnprocessableEntity, "success_path"},
	}
	for _, tc := range cases {
		rec := b.post(t, tc.role, tc.body)
		require.Equal(t, tc.status, rec.Code, "%s: %s", tc.name, rec.Body.String())
		require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"), tc.name)
		if tc.field != "" {
			require.Contains(t, rec.Body.String(), `"field":"`+tc.field+`"`, tc.name)
		}
	}
	require.Empty(t, b.stripe.take(), "no refused request reached Stripe")
	require.Zero(t, countRows(t, b.pool, `select count(*) from private.stripe_customers`))

	// No token at all: 401.
	req := httptest.NewRequest(http.MethodPost, "/v1/checkout-sessions", strings.NewReader(`{"price_id":"price_pro"}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	require.Equal(t, http.StatusUnauthorized, rec.Code)
}

func countRows(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// postTo posts body to path (checkout-create serves two) as role, with the client's
// Idempotency-Key header (none when key is empty).
func (b *checkoutBundle) postTo(t *testing.T, path, role, body, key string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.Header.Set("Authorization", "Bearer "+b.issuer.Token(t, b.users[role], authtest.WithEmail(role+"@acme.test")))
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

// A tenant with a live subscription cannot start a second one through checkout (two tabs, a
// plan change, a retry without an Idempotency-Key would each bill twice): checkout answers 409
// naming the billing portal endpoint, which changes the plan of the one subscription. An
// ended subscription does not count.
func TestSecondCheckoutGoesToTheBillingPortal(t *testing.T) {
	t.Parallel()
	b := setupCheckout(t)
	customer := "cus_" + uuid.NewString()[:14]
	_, err := b.pool.Exec(t.Context(), `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, customer, b.tenantID)
	require.NoError(t, err)
	_, err = b.pool.Exec(t.Context(), `insert into private.billing_accounts (tenant_id) values ($1)`, b.tenantID)
	require.NoError(t, err)
	subscribe := func(id, status string) {
		_, err := b.pool.Exec(t.Context(), `insert into private.billing_subscriptions (tenant_id, subscription_id, status) values ($1, $2, $3)
			on conflict (tenant_id, subscription_id) do update set status = excluded.status`, b.tenantID, id, status)
		require.NoError(t, err)
	}
	subscribe("sub_old", "canceled")
	require.Equal(t, http.StatusCreated, b.post(t, "owner", `{"price_id":"price_pro"}`).Code, "an ended subscription is no obstacle")
	b.stripe.take()

	for _, status := range []string{"active", "trialing", "past_due", "unpaid", "paused"} {
		subscribe("sub_live", status)
		rec := b.post(t, "admin", `{"price_id":"price_basic"}`)
		require.Equal(t, http.StatusConflict, rec.Code, "%s: %s", status, rec.Body.String())
		require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
		var p struct{ Type, Detail string }
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
		require.Equal(t, billing.TypeSubscriptionExists, p.Type)
		require.Contains(t, p.Detail, billing.BillingPortalPath)
	}
	require.Empty(t, b.stripe.take(), "no second subscription was started at Stripe")

	// The billing portal session, against stripe-mock: the tenant's customer, a return URL on
	// the portal.
	rec := b.postTo(t, billing.BillingPortalPath, "admin", `{"return_path":"/billing?from=portal"}`, "")
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	var out struct{ ID, URL string }
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
	require.True(t, strings.HasPrefix(out.ID, "bps_"), out.ID)
	require.True(t, strings.HasPrefix(out.URL, "https://"), out.URL)
	require.Equal(t, "private, no-store", rec.Header().Get("Cache-Control"))
	calls := b.stripe.take()
	require.Len(t, calls, 1)
	require.Equal(t, "/v1/billing_portal/sessions", calls[0].path)
	require.Equal(t, customer, calls[0].form.Get("customer"))
	require.Equal(t, "https://portal.example.test/billing?from=portal", calls[0].form.Get("return_url"))

	rec = b.postTo(t, billing.BillingPortalPath, "owner", `{}`, "")
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	require.Equal(t, "https://portal.example.test/billing", b.stripe.take()[0].form.Get("return_url"), "the default return path")
}

func TestBillingPortalRefusals(t *testing.T) {
	t.Parallel()
	b := setupCheckout(t)
	cases := []struct {
		name, role, body string
		status           int
		field            string
	}{
		{"no customer yet", "owner", `{}`, http.StatusConflict, ""},
		{"member", "member", `{}`, http.StatusForbidden, ""},
		{"open redirect", "owner", `{"return_path":"//evil.example"}`, http.StatusUnprocessableEntity, "return_path"},
		{"encoded open redirect", "owner", `{"return_path":"/%2F%2Fevil.example"}`, http.StatusUnprocessableEntity, "return_path"},
		{"customer in the body", "owner", `{"customer":"cus_someone_else"}`, http.StatusBadRequest, ""},
	}
	for _, tc := range cases {
		rec := b.postTo(t, billing.BillingPortalPath, tc.role, tc.body, "")
		require.Equal(t, tc.status, rec.Code, "%s: %s", tc.name, rec.Body.String())
		require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"), tc.name)
		if tc.field != "" {
			require.Contains(t, rec.Body.String(), `"field":"`+tc.field+`"`, tc.name)
		}
		if tc.name == "no customer yet" {
			require.Contains(t, rec.Body.String(), "/v1/checkout-sessions", "says where to start instead")
		}
	}
	require.Empty(t, b.stripe.take(), "no refused request reached Stripe")
}

// A checkout or billing portal handler wired without its request decoder is refused when it is
// built (at cold start, with a named error), not at the first request.
func TestCheckoutHandlersNeedARequestDecoder(t *testing.T) {
	t.Parallel()
	portal, err := url.Parse("https://portal.example.test")
	require.NoError(t, err)
	o := billing.CheckoutOptions{Prices: []string{"price_1"}, PortalURL: portal}
	_, err = billing.NewCheckoutHandler(nil, nil, o)
	require.ErrorIs(t, err, billing.ErrNoDecoder)
	_, err = billing.NewBillingPortalHandler(nil, nil, o)
	require.ErrorIs(t, err, billing.ErrNoDecoder)
	o.Decode = validation.DecodeJSON
	_, err = billing.NewCheckoutHandler(nil, nil, o)
	require.NoError(t, err)
	_, err = billing.NewBillingPortalHandler(nil, nil, o)
	require.NoError(t, err)
}
