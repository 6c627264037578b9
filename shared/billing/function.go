package billing

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/nudge"
	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Routes of the two functions (template.yaml and the dev server use the same).
const (
	WebhookRoute       = "POST /v1/webhooks/stripe"
	CheckoutRoute      = "POST " + CheckoutPath
	BillingPortalRoute = "POST " + BillingPortalPath
)

// Paths of checkout-create's endpoints, as problems name them to the portal.
const (
	CheckoutPath      = "/v1/checkout-sessions"
	BillingPortalPath = "/v1/billing-portal-sessions"
)

// WebhookConfig is payment-webhook's environment (names fixed by DESIGN.md section 8).
type WebhookConfig struct {
	// WebhookSecret is the endpoint's signing secret; during a rotation, several separated by
	// commas (both are accepted until the old one expires).
	WebhookSecret config.Secret `env:"STRIPE_WEBHOOK_SECRET" required:"true"`
	// IgnoreAPIVersionMismatch accepts events of another Stripe API version than
	// stripe-go/v76's (APIVersion). Default false: pin the endpoint's API version instead,
	// because v76's types describe that version; a mismatch is answered 400 and logged.
	IgnoreAPIVersionMismatch bool `env:"STRIPE_IGNORE_API_VERSION_MISMATCH" default:"false"`
	// Livemode is the mode of the account's API key: true for sk_live_/rk_live_ keys.
	// template.yaml derives it from StripeApiKey, so the webhook itself never holds the key.
	// Events of the other mode are refused (400).
	Livemode bool `env:"STRIPE_LIVEMODE" default:"false"`
}

// Secrets splits the configured secret list.
func (c WebhookConfig) Secrets() []string {
	var out []string
	for _, s := range strings.Split(c.WebhookSecret.Reveal(), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// WebhookFunction is payment-webhook: POST /v1/webhooks/stripe. Its envelope limit is
// EnvelopeMaxBody so the handler itself refuses (and counts) bodies over DefaultMaxBody.
var WebhookFunction = function.HTTP[WebhookConfig]{Name: "payment-webhook", Build: BuildWebhook, MaxBody: EnvelopeMaxBody}

// BuildWebhook wires the webhook endpoint from deps and cfg.
func BuildWebhook(_ context.Context, deps function.Deps, cfg WebhookConfig) (http.Handler, error) {
	v, err := NewVerifier(VerifierOptions{Secrets: cfg.Secrets(), IgnoreAPIVersionMismatch: cfg.IgnoreAPIVersionMismatch})
	if err != nil {
		return nil, fmt.Errorf("STRIPE_WEBHOOK_SECRET: %w", err)
	}
	inserter, err := jobs.NewInserter(deps.Pool)
	if err != nil {
		return nil, fmt.Errorf("job inserter: %w", err)
	}
	// After a delivery that queued a CRM push commits, crm-push is nudged (when
	// CRM_PUSH_FUNCTION names it) so the push starts now rather than on its schedule.
	crmPush, err := nudge.FromEnv(deps.Lookup, "CRM_PUSH_FUNCTION", deps.HTTPClient, deps.Logger)
	if err != nil {
		return nil, err
	}
	inserter.OnInsert(nudge.Mark)
	mux := http.NewServeMux()
	mux.Handle(WebhookRoute, NewWebhookHandler(v, NewProcessor(deps.Pool, inserter), WebhookOptions{
		Metrics:    deps.Metrics,
		Rejections: deps.Pool,
		Livemode:   cfg.Livemode,
	}))
	return nudge.Middleware(crmPush, jobs.QueueCRM)(web.Route(mux)), nil
}

// CheckoutConfig is checkout-create's environment.
type CheckoutConfig struct {
	// StripeAPIKey is the secret key checkout creates customers and sessions with.
	StripeAPIKey config.Secret `env:"STRIPE_API_KEY" required:"true"`
	// StripeAPIBase points the client elsewhere than api.stripe.com (stripe-mock locally).
	StripeAPIBase string `env:"STRIPE_API_BASE" default:"https://api.stripe.com"`
	// PriceIDs are the prices a tenant may subscribe to, comma-separated.
	PriceIDs []string `env:"STRIPE_PRICE_IDS" required:"true"`
	// PortalURL is where Checkout sends the browser back to; return paths stay on it.
	PortalURL *url.URL `env:"PORTAL_URL" required:"true"`
	// SupabaseURL is the project whose tokens (issuer, JWKS) identify the caller.
	SupabaseURL string `env:"SUPABASE_URL" required:"true"`
	// SupabaseJWTSecret verifies legacy HS256 tokens (optional when the project uses JWKS).
	SupabaseJWTSecret config.Secret `env:"SUPABASE_JWT_SECRET"`
}

// CheckoutFunction is checkout-create: POST /v1/checkout-sessions and POST
// /v1/billing-portal-sessions.
var CheckoutFunction = function.HTTP[CheckoutConfig]{Name: "checkout-create", Build: BuildCheckout}

// BuildCheckout wires the checkout and billing portal endpoints: auth, tenant scope, then the
// handler.
func BuildCheckout(ctx context.Context, deps function.Deps, cfg CheckoutConfig) (http.Handler, error) {
	verifier, err := auth.NewVerifier(ctx, auth.Config{
		SupabaseURL: cfg.SupabaseURL,
		JWTSecret:   cfg.SupabaseJWTSecret,
		HTTPClient:  deps.HTTPClient,
		Logger:      deps.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	api := NewStripeClient(cfg.StripeAPIKey, cfg.StripeAPIBase, deps.HTTPClient)
	opts := CheckoutOptions{Prices: cfg.PriceIDs, PortalURL: cfg.PortalURL}
	h, err := NewCheckoutHandler(deps.Pool, api, opts)
	if err != nil {
		return nil, fmt.Errorf("STRIPE_PRICE_IDS / PORTAL_URL: %w", err)
	}
	portal, err := NewBillingPortalHandler(deps.Pool, api, opts)
	if err != nil {
		return nil, fmt.Errorf("PORTAL_URL: %w", err)
	}
	guard := func(h http.Handler) http.Handler { return auth.Require(verifier)(tenant.Middleware(deps.Pool)(h)) }
	mux := http.NewServeMux()
	mux.Handle(CheckoutRoute, guard(h))
	mux.Handle(BillingPortalRoute, guard(portal))
	return web.Route(mux), nil
}
