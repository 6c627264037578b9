package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// StripeEvents lists events with Stripe's API (GET /v1/events with a created range), the
// source of --from-stripe. Stripe keeps events for 30 days, which is why a run's range is
// bounded by about that.
type StripeEvents struct {
	api *client.API
}

var _ EventSource = (*StripeEvents)(nil)

// NewStripeEvents builds the lister. base is STRIPE_API_BASE (empty: Stripe's API); hc may be
// nil (stripe-go's default client).
func NewStripeEvents(key, base string, hc *http.Client) *StripeEvents {
	cfg := &stripe.BackendConfig{MaxNetworkRetries: stripe.Int64(2), LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull}}
	if base != "" {
		cfg.URL = stripe.String(base)
	}
	if hc != nil {
		cfg.HTTPClient = hc
	}
	api := client.New(key, &stripe.Backends{
		API:     stripe.GetBackendWithConfig(stripe.APIBackend, cfg),
		Connect: stripe.GetBackendWithConfig(stripe.ConnectBackend, cfg),
		Uploads: stripe.GetBackendWithConfig(stripe.UploadsBackend, cfg),
	})
	return &StripeEvents{api: api}
}

// Events lists every event created in [from, to), paging through the list.
func (s *StripeEvents) Events(ctx context.Context, from, to time.Time) ([]SourceEvent, error) {
	params := &stripe.EventListParams{
		CreatedRange: &stripe.RangeQueryParams{
			GreaterThanOrEqual: from.Unix(),
			// created is in whole seconds: [from, to) is created <= to-1s.
			LesserThanOrEqual: to.Add(-time.Second).Unix(),
		},
	}
	params.Context = ctx
	params.Limit = stripe.Int64(100)
	var out []SourceEvent
	it := s.api.Events.List(params)
	for it.Next() {
		ev := it.Event()
		payload, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("encode Stripe event %s: %w", ev.ID, err)
		}
		out = append(out, SourceEvent{ID: ev.ID, Type: string(ev.Type), Created: time.Unix(ev.Created, 0).UTC(), Payload: payload})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list Stripe events: %w", err)
	}
	return out, nil
}
