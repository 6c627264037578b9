package billing

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/nudge"
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
