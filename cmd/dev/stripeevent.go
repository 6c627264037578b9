package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/demo"
)

// ErrUnknownEventKind is a "send a Stripe event" request for a kind the console does not build.
var ErrUnknownEventKind = errors.New("dev: unknown Stripe event kind")

// eventKind is one choice of the console's "send a Stripe event" form: what Stripe sends when
// that happens to a tenant's subscription.
type eventKind struct {
	Kind  string `json:"kind"`
	Label string `json:"label"`
	// Type is Stripe's event type.
	Type string `json:"type"`
}

// eventKinds are the choices, in the order the form lists them. subscription_created is what
// Stripe sends when a Checkout completes a subscription: the portal's "complete payment" uses it.
var eventKinds = []eventKind{
	{"subscription_created", "Checkout completed: subscription created (active, with its plan)", billing.TypeSubscriptionCreated},
	{"payment_succeeded", "Payment succeeded (invoice paid)", billing.TypeInvoicePaid},
	{"payment_failed", "Payment failed (invoice payment failed)", billing.TypeInvoicePaymentFailed},
	{"subscription_updated", "Subscription updated (active, plan changed)", billing.TypeSubscriptionUpdated},
	{"subscription_cancelled", "Subscription cancelled", billing.TypeSubscriptionDeleted},
}

// eventBuilder makes Stripe events from stripe-mock's own fixture objects (Stripe's published
// shapes, with every field Stripe sends), made to say one thing about one seeded tenant.
type eventBuilder struct {
	fixtures map[string]map[string]any
	// price is the price a subscription event carries (the checkout's first allowed price).
	price string
	now   func() time.Time
}

// subscriptionID is the tenant's one subscription in the dev world, stable so that every
// event about it updates the same projection.
func subscriptionID(t demo.Tenant) string {
	return "sub_dev_" + strings.ReplaceAll(t.ID.String(), "-", "")[:16]
}

// build returns the event's JSON for tenant.
func (b eventBuilder) build(kind string, t demo.Tenant) ([]byte, string, error) {
	var k *eventKind
	for i := range eventKinds {
		if eventKinds[i].Kind == kind {
			k = &eventKinds[i]
		}
	}
	if k == nil {
		return nil, "", fmt.Errorf("%w: %q", ErrUnknownEventKind, kind)
	}
	now := b.now()
	var obj map[string]any
	var err error
	switch kind {
	case "payment_succeeded", "payment_failed":
		obj, err = b.invoice(t, kind == "payment_succeeded", now)
	default:
		status := "active"
		if kind == "subscription_cancelled" {
			status = "canceled"
		}
		obj, err = b.subscription(t, status, now)
	}
	if err != nil {
		return nil, "", err
	}
	ev, err := b.clone("event")
	if err != nil {
		return nil, "", err
	}
	id := "evt_dev_" + randomHex(12)
	ev["id"], ev["type"], ev["created"] = id, k.Type, now.Unix()
	ev["api_version"], ev["livemode"], ev["pending_webhooks"] = billing.APIVersion, false, 1
	ev["data"] = map[string]any{"object": obj, "previous_attributes": map[string]any{}}
	ev["request"] = map[string]any{"id": "req_" + randomHex(7), "idempotency_key": uuid.NewString()}
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, "", fmt.Errorf("encode event: %w", err)
	}
	return raw, id, nil
}

func (b eventBuilder) clone(resource string) (map[string]any, error) {
	src, ok := b.fixtures[resource]
	if !ok {
		return nil, fmt.Errorf("stripe-mock has no %q fixture", resource)
	}
	raw, err := json.Marshal(src)
	if err != nil {
		return nil, fmt.Errorf("copy %s fixture: %w", resource, err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("copy %s fixture: %w", resource, err)
	}
	return out, nil
}

// subscription is Stripe's subscription fixture as the tenant's subscription in status, on
// the configured price, renewing in 30 days.
func (b eventBuilder) subscription(t demo.Tenant, status string, now time.Time) (map[string]any, error) {
	obj, err := b.clone("subscription")
	if err != nil {
		return nil, err
	}
	id := subscriptionID(t)
	periodEnd := now.Add(30 * 24 * time.Hour).Unix()
	obj["id"], obj["customer"], obj["status"], obj["cancel_at_period_end"] = id, t.CustomerID, status, false
	obj["metadata"] = map[string]any{billing.MetadataTenantID: t.ID.String()}
	obj["current_period_end"] = periodEnd
	items, ok := obj["items"].(map[string]any)
	if !ok {
		return nil, errors.New("subscription fixture has no items")
	}
	data, _ := items["data"].([]any)
	if len(data) == 0 {
		return nil, errors.New("subscription fixture has no item")
	}
	item, _ := data[0].(map[string]any)
	price, _ := item["price"].(map[string]any)
	if item == nil || price == nil {
		return nil, errors.New("subscription fixture's item has no price")
	}
	item["current_period_end"], item["subscription"] = periodEnd, id
	price["id"], price["lookup_key"], price["nickname"] = b.price, "pro", "Pro"
	return obj, nil
}

// invoice is Stripe's invoice fixture as the tenant's monthly invoice, paid or failed.
func (b eventBuilder) invoice(t demo.Tenant, paid bool, now time.Time) (map[string]any, error) {
	obj, err := b.clone("invoice")
	if err != nil {
		return nil, err
	}
	sub := subscriptionID(t)
	obj["id"], obj["customer"], obj["customer_email"] = "in_dev_"+randomHex(10), t.CustomerID, t.Contact
	obj["subscription"], obj["billing_reason"] = sub, "subscription_cycle"
	obj["parent"] = map[string]any{"type": "subscription_details", "quote_details": nil,
		"subscription_details": map[string]any{"subscription": sub, "metadata": map[string]any{billing.MetadataTenantID: t.ID.String()}}}
	obj["amount_due"], obj["currency"], obj["last_finalization_error"] = 4900, "usd", nil
	if paid {
		obj["status"], obj["paid"], obj["amount_paid"], obj["amount_remaining"], obj["attempt_count"] = "paid", true, 4900, 0, 1
		obj["status_transitions"] = map[string]any{"paid_at": now.Unix(), "finalized_at": now.Unix(),
			"marked_uncollectible_at": nil, "voided_at": nil}
	} else {
		obj["status"], obj["paid"], obj["amount_paid"], obj["amount_remaining"], obj["attempt_count"] = "open", false, 0, 4900, 1
	}
	return obj, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
