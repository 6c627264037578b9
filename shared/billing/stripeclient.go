package billing

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/portal-functions/portal-functions/shared/config"
)

// DefaultAPIBase is Stripe's API host (STRIPE_API_BASE overrides it, for stripe-mock).
const DefaultAPIBase = stripe.APIURL

// StripeClient is StripeAPI on stripe-go's client.API, with its own backend so that tests and
// the dev server can point it at stripe-mock and nothing touches stripe-go's global state.
type StripeClient struct {
	api *client.API
}

var _ StripeAPI = (*StripeClient)(nil)

// NewStripeClient builds a client for key on base (DefaultAPIBase when empty). hc sends the
// requests (a client with a timeout: Lambda must not wait on Stripe until it dies).
func NewStripeClient(key config.Secret, base string, hc *http.Client) *StripeClient {
	if base == "" {
		base = DefaultAPIBase
	}
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(strings.TrimRight(base, "/")),
		HTTPClient:        hc,
		MaxNetworkRetries: stripe.Int64(2),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelError},
	})
	api := client.New(key.Reveal(), &stripe.Backends{API: backend, Connect: backend, Uploads: backend})
	return &StripeClient{api: api}
}

// NewCustomer creates a customer (POST /v1/customers).
func (c *StripeClient) NewCustomer(ctx context.Context, params *stripe.CustomerParams) (*stripe.Customer, error) {
	params.Context = ctx
	cust, err := c.api.Customers.New(params)
	if err != nil {
		return nil, fmt.Errorf("stripe: create customer: %w", err)
	}
	return cust, nil
}

// NewCheckoutSession creates a Checkout Session (POST /v1/checkout/sessions).
func (c *StripeClient) NewCheckoutSession(ctx context.Context, params *stripe.CheckoutSessionParams) (*stripe.CheckoutSession, error) {
	params.Context = ctx
	sess, err := c.api.CheckoutSessions.New(params)
	if err != nil {
		return nil, fmt.Errorf("stripe: create checkout session: %w", err)
	}
	return sess, nil
}

// GetSubscription reads a subscription (GET /v1/subscriptions/{id}) and returns Stripe's JSON
// as it came, so the refresh decodes it with the same types as an event's object. Nothing is
// expanded: the projection reads the items' prices, which Stripe always includes.
func (c *StripeClient) GetSubscription(ctx context.Context, id string) ([]byte, error) {
	params := &stripe.SubscriptionParams{}
	params.Context = ctx
	sub, err := c.api.Subscriptions.Get(id, params)
	if err != nil {
		return nil, fmt.Errorf("stripe: read subscription %s: %w", id, err)
	}
	if sub.LastResponse == nil {
		return nil, fmt.Errorf("stripe: read subscription %s: %w", id, ErrNoResponse)
	}
	return sub.LastResponse.RawJSON, nil
}

// WebhookEndpoints lists the account's webhook endpoints (GET /v1/webhook_endpoints), for
// `reconcile setup` to check the API version and events of ours.
func (c *StripeClient) WebhookEndpoints(ctx context.Context) ([]*stripe.WebhookEndpoint, error) {
	params := &stripe.WebhookEndpointListParams{}
	params.Context = ctx
	var out []*stripe.WebhookEndpoint
	it := c.api.WebhookEndpoints.List(params)
	for it.Next() {
		out = append(out, it.WebhookEndpoint())
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("stripe: list webhook endpoints: %w", err)
	}
	return out, nil
}

// NewBillingPortalSession creates a Customer Portal session (POST /v1/billing_portal/sessions).
func (c *StripeClient) NewBillingPortalSession(ctx context.Context, params *stripe.BillingPortalSessionParams) (*stripe.BillingPortalSession, error) {
	params.Context = ctx
	sess, err := c.api.BillingPortalSessions.New(params)
	if err != nil {
		return nil, fmt.Errorf("stripe: create billing portal session: %w", err)
	}
	return sess, nil
}
