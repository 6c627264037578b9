package portal_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/checkout"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
	"github.com/portal-functions/portal-functions/shared/web"
)

func loadSpec(t *testing.T) routers.Router {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../../openapi.yaml")
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()))
	require.True(t, doc.IsOpenAPI31OrLater())
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	return router
}

// checkoutHandler builds checkout-create as Lambda does (config from the environment names,
// auth, tenant scope) on b's database and issuer, against stripe-mock.
func checkoutHandler(t *testing.T, b bundle) http.Handler {
	t.Helper()
	env := map[string]string{
		"STRIPE_API_KEY":      "sk_test_123",
		"STRIPE_API_BASE":     stripemock.Start(t),
		"STRIPE_PRICE_IDS":    "price_basic, pro=price_pro",
		"PORTAL_URL":          "https://portal.example.test",
		"SUPABASE_URL":        b.env.Issuer.URL(),
		"SUPABASE_JWT_SECRET": string(b.env.Issuer.Secret()),
	}
	h, err := checkout.Function.Handler(t.Context(), function.Deps{
		Name: "checkout-create", Pool: b.env.Pool,
		Logger:     slog.New(slog.DiscardHandler),
		Metrics:    telemetry.NewMetrics(io.Discard, "checkout-create"),
		HTTPClient: &http.Client{},
		Lookup:     func(k string) (string, bool) { v, ok := env[k]; return v, ok },
	})
	require.NoError(t, err)
	return h
}

// Real answers of the checkout, ticket and portal handlers, successes and problems alike,
// validate against openapi.yaml: the document cannot drift from the code.
func TestResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	router := loadSpec(t)
	b := setup(t)
	checkout := checkoutHandler(t, b)
	seedDeliveries(t, b)
	member := join(t, b, b.a, "member")
	created := b.env.Create(t, b.a, "Contract", ticket.AttachmentRequest{Name: "x.png", Size: 1, ContentType: "image/png"})
	b.env.Create(t, b.a, "Second")
	exec(t, b, `insert into private.billing_accounts (tenant_id, status, plan, last_payment_at, last_payment_amount, last_payment_currency)
		values ($1, 'active', 'pro', now(), 4900, 'eur')`, b.a.TenantID)
	outsider := tickettest.Member{Token: b.env.Issuer.Token(t, uuid.New())}

	type call struct {
		name, method, target, key string
		member                    tickettest.Member
		body                      string
		status                    int
		before                    func()
		handler                   http.Handler // overrides the handler the target picks
	}
	valid := `{"subject":"Help","body":"Please","category":"technical","priority":"low","attachments":[{"name":"a.pdf","size":3,"content_type":"application/pdf"}]}`
	calls := []call{
		{name: "checkout", method: "POST", target: "/v1/checkout-sessions", key: "c1", member: b.a, body: `{"price_id":"price_pro","success_path":"/billing/done"}`, status: 201},
		{name: "checkout defaults", method: "POST", target: "/v1/checkout-sessions", member: b.a, body: `{"price_id":"price_basic"}`, status: 201},
		{name: "checkout member", method: "POST", target: "/v1/checkout-sessions", member: member, body: `{"price_id":"price_pro"}`, status: 403},
		{name: "checkout not member", method: "POST", target: "/v1/checkout-sessions", member: outsider, body: `{"price_id":"price_pro"}`, status: 403},
		{name: "checkout unknown price", method: "POST", target: "/v1/checkout-sessions", member: b.a, body: `{"price_id":"price_free"}`, status: 422},
		{name: "checkout open redirect", method: "POST", target: "/v1/checkout-sessions", member: b.a, body: `{"price_id":"price_pro","success_path":"//evil.example"}`, status: 422},
		{name: "checkout tenant in body", method: "POST", target: "/v1/checkout-sessions", member: b.a, body: `{"price_id":"price_pro","tenant_id":"x"}`, status: 400},
		{name: "checkout no token", method: "POST", target: "/v1/checkout-sessions", body: `{"price_id":"price_pro"}`, status: 401},
		{name: "billing portal", method: "POST", target: "/v1/billing-portal-sessions", member: b.a, body: `{"return_path":"/billing"}`, status: 201},
		{name: "billing portal member", method: "POST", target: "/v1/billing-portal-sessions", member: member, body: `{}`, status: 403},
		{name: "billing portal open redirect", method: "POST", target: "/v1/billing-portal-sessions", member: b.a, body: `{"return_path":"//evil.example"}`, status: 422},
		{name: "checkout with a live subscription", method: "POST", target: "/v1/checkout-sessions", member: b.a, body: `{"price_id":"price_pro"}`, status: 409,
			before: func() {
				exec(t, b, `insert into private.billing_subscriptions (tenant_id, subscription_id, status) values ($1, 'sub_live', 'active')`, b.a.TenantID)
			}},
		{name: "billing portal without a customer", method: "POST", target: "/v1/billing-portal-sessions", member: b.b, body: `{}`, status: 409},
		{name: "create", method: "POST", target: "/v1/tickets", key: "k1", member: b.a, body: valid, status: 201},
		{name: "create replay", method: "POST", target: "/v1/tickets", key: "k1", member: b.a, body: valid, status: 201},
		{name: "create key reused", method: "POST", target: "/v1/tickets", key: "k1", member: b.a, body: `{"subject":"Other","body":"x","category":"other"}`, status: 422},
		{name: "create no key", method: "POST", target: "/v1/tickets", member: b.a, body: valid, status: 400},
		{name: "create invalid", method: "POST", target: "/v1/tickets", key: "k2", member: b.a, body: `{"subject":"","body":"x","category":"nope"}`, status: 422},
		{name: "create unknown field", method: "POST", target: "/v1/tickets", key: "k3", member: b.a, body: `{"subject":"s","body":"x","category":"other","tenant_id":"x"}`, status: 400},
		{name: "create not member", method: "POST", target: "/v1/tickets", key: "k4", member: outsider, body: valid, status: 403},
		{name: "create no token", method: "POST", target: "/v1/tickets", key: "k5", body: valid, status: 401},
		{name: "create storage down", method: "POST", target: "/v1/tickets", key: "k6", member: b.a, body: valid, status: 503,
			before: func() { b.env.Storage.SetMode(storagefake.ModeDown) }},
		{name: "account", method: "GET", target: "/v1/account", member: b.a, status: 200,
			before: func() { b.env.Storage.SetMode(storagefake.ModeUp) }},
		{name: "account member", method: "GET", target: "/v1/account", member: member, status: 200},
		{name: "account other tenant header", method: "GET", target: "/v1/account", member: b.a, status: 403},
		{name: "list", method: "GET", target: "/v1/tickets?limit=1", member: b.a, status: 200},
		{name: "list bad limit", method: "GET", target: "/v1/tickets?limit=500", member: b.a, status: 400},
		{name: "get", method: "GET", target: "/v1/tickets/" + created.ID.String(), member: b.a, status: 200},
		{name: "get unknown", method: "GET", target: "/v1/tickets/" + uuid.NewString(), member: b.a, status: 404},
		{name: "get malformed", method: "GET", target: "/v1/tickets/not-a-uuid", member: b.a, status: 404},
		{name: "get no token", method: "GET", target: "/v1/tickets/" + created.ID.String(), status: 401},
		{name: "health", method: "GET", target: "/v1/health", status: 200},
		{name: "health database down", method: "GET", target: "/v1/health", status: 503, handler: deadDatabaseRead(t, b)},
	}
	for _, c := range calls {
		if c.before != nil {
			c.before()
		}
		var body io.Reader
		if c.body != "" {
			body = bytes.NewReader([]byte(c.body))
		}
		r := httptest.NewRequest(c.method, "http://127.0.0.1:3000"+c.target, body)
		if c.body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		if c.member.Token != "" {
			r.Header.Set("Authorization", "Bearer "+c.member.Token)
		}
		if c.key != "" {
			r.Header.Set("Idempotency-Key", c.key)
		}
		if c.name == "account other tenant header" {
			r.Header.Set("X-Tenant-Id", b.b.TenantID.String())
		}
		w := httptest.NewRecorder()
		switch {
		case c.handler != nil:
			c.handler.ServeHTTP(w, r)
		case strings.HasPrefix(c.target, "/v1/checkout-sessions"), strings.HasPrefix(c.target, "/v1/billing-portal-sessions"):
			checkout.ServeHTTP(w, r)
		case c.method == http.MethodPost:
			b.env.Handler.ServeHTTP(w, r)
		default:
			b.read.ServeHTTP(w, r)
		}
		require.Equal(t, c.status, w.Code, "%s: %s", c.name, w.Body.String())
		if c.name == "account" {
			require.Contains(t, w.Body.String(), `"health"`, "the owner's account carries health, so its schema is checked")
		}

		route, params, err := router.FindRoute(r)
		require.NoError(t, err, c.name)
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, ExcludeRequestBody: true}}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: w.Code, Header: w.Header(),
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
		out.SetBodyBytes(w.Body.Bytes())
		require.NoError(t, openapi3filter.ValidateResponse(context.Background(), out), "%s: %s", c.name, w.Body.String())
	}
}

// deadDatabaseRead is portal-read on a database nobody answers at (port 1).
func deadDatabaseRead(t *testing.T, b bundle) http.Handler {
	t.Helper()
	pool, err := db.Open(t.Context(), "postgres://postgres@127.0.0.1:1/pf?sslmode=disable", db.Options{Lazy: true})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	h := portal.NewHandler(portal.Deps{Pool: pool, Verifier: b.env.Issuer.Verifier(t)})
	return web.Wrap(h, web.Options{Logger: slog.New(slog.DiscardHandler)})
}

// The document's request schemas agree with the handler's rules on a valid and an invalid body.
func TestRequestSchemasAgreeWithTheHandler(t *testing.T) {
	t.Parallel()
	router := loadSpec(t)
	cases := []struct {
		name  string
		body  string
		valid bool
	}{
		{name: "valid", body: `{"subject":"s","body":"b","category":"billing"}`, valid: true},
		{name: "unknown field", body: `{"subject":"s","body":"b","category":"billing","x":1}`},
		{name: "bad category", body: `{"subject":"s","body":"b","category":"sales"}`},
		{name: "too big attachment", body: `{"subject":"s","body":"b","category":"billing","attachments":[{"name":"a","size":10485761,"content_type":"image/png"}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:3000/v1/tickets", bytes.NewReader([]byte(tc.body)))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Idempotency-Key", "k")
			route, params, err := router.FindRoute(r)
			require.NoError(t, err)
			err = openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
				Request: r, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}})
			require.Equal(t, tc.valid, err == nil, "%v", err)
		})
	}
}

// The ticket's validate tags (the rules the handler applies) and openapi.yaml's TicketRequest
// say the same limits and allow-lists, field by field, so neither can change alone.
func TestTicketRulesMatchTheDocument(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromFile("../../openapi.yaml")
	require.NoError(t, err)
	schemas := doc.Components.Schemas
	for _, tc := range []struct {
		name   string
		typ    reflect.Type
		schema *openapi3.Schema
	}{
		{name: "TicketRequest", typ: reflect.TypeFor[ticket.CreateRequest](), schema: schemas["TicketRequest"].Value},
		{name: "AttachmentRequest", typ: reflect.TypeFor[ticket.AttachmentRequest](), schema: schemas["AttachmentRequest"].Value},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Len(t, tc.schema.Properties, tc.typ.NumField(), "the same fields")
			for i := range tc.typ.NumField() {
				f := tc.typ.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				ref, ok := tc.schema.Properties[name]
				require.True(t, ok, "%s is documented", name)
				p := ref.Value
				for _, rule := range strings.Split(f.Tag.Get("validate"), ",") {
					key, val, _ := strings.Cut(rule, "=")
					switch key {
					case "required":
						require.Contains(t, tc.schema.Required, name)
					case "oneof":
						var enum []string
						for _, v := range p.Enum {
							enum = append(enum, v.(string))
						}
						require.Equal(t, strings.Fields(val), enum, "%s allow-list", name)
					case "max", "min":
						n, err := strconv.ParseUint(val, 10, 64)
						require.NoError(t, err)
						require.Equal(t, n, documentedBound(p, key), "%s %s", name, key)
					}
				}
			}
		})
	}
}

// documentedBound is the JSON Schema bound matching a validator min/max on p's type.
func documentedBound(p *openapi3.Schema, key string) uint64 {
	switch {
	case p.Type.Is("string") && key == "max":
		return *p.MaxLength
	case p.Type.Is("string"):
		return p.MinLength
	case p.Type.Is("array") && key == "max":
		return *p.MaxItems
	case p.Type.Is("array"):
		return p.MinItems
	case key == "max":
		return uint64(*p.Max)
	default:
		return uint64(*p.Min)
	}
}
