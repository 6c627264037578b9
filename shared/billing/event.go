package billing

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The event types the webhook acts on; every other type is recorded as ignored.
const (
	TypeCheckoutCompleted    = "checkout.session.completed"
	TypeSubscriptionCreated  = "customer.subscription.created"
	TypeSubscriptionUpdated  = "customer.subscription.updated"
	TypeSubscriptionDeleted  = "customer.subscription.deleted"
	TypeInvoicePaid          = "invoice.paid"
	TypeInvoicePaymentFailed = "invoice.payment_failed"
)

// MetadataTenantID is the metadata key checkout-create puts on the customer and subscription.
const MetadataTenantID = "tenant_id"

// effect is what an event asks of the database: the projection change, and what tells us
// which tenant it belongs to.
type effect struct {
	change Change
	// customerID is the Stripe customer the object belongs to ("" when Stripe sent none).
	customerID string
	// sessionID is the Checkout Session's id (checkout.session.completed only): bound to a
	// tenant when checkout-create recorded it.
	sessionID string
	// clientReferenceID is the tenant a checkout session claims (checkout.session.completed
	// only). The payer can set it on a Payment Link, so it binds nothing; it is logged when a
	// session claims a tenant without proof.
	clientReferenceID string
	// metadataTenant is metadata.tenant_id of the object (or of its subscription).
	metadataTenant string
	// failed is set for invoice.payment_failed: what a support ticket needs.
	failed *failedPayment
}

// failedPayment describes a failed invoice for the support ticket.
type failedPayment struct {
	InvoiceID string
	Amount    int64
	Currency  string
	Attempt   int64
	Email     string
	Reason    string
}

// The parts of Stripe's objects we read. Only these fields are decoded, so the many fields
// we ignore (and fields of newer API versions) cannot break a delivery. Each type is the
// fields every object carries plus its own.
type (
	checkoutSession struct {
		objectFields
		checkoutFields
	}
	subscription struct {
		objectFields
		subscriptionFields
	}
	invoice struct {
		objectFields
		invoiceFields
	}
)

// anyObject is the union of the three: ParseEvent decodes data.object into it in the same
// pass as the envelope, whatever the event's type (which Stripe sends after the object). Each
// typed struct's fields are fields of the union, so when the union decodes, the typed
// struct's decoding of the same bytes succeeds with the same values; when it does not (a field
// only another type reads has a shape the union cannot take), the event is decoded as before,
// envelope first, then the object by its type.
type anyObject struct {
	objectFields
	checkoutFields
	subscriptionFields
	invoiceFields
}

func (o *anyObject) checkoutSession() checkoutSession {
	return checkoutSession{o.objectFields, o.checkoutFields}
}
func (o *anyObject) subscription() subscription {
	return subscription{o.objectFields, o.subscriptionFields}
}
func (o *anyObject) invoice() invoice { return invoice{o.objectFields, o.invoiceFields} }

type objectFields struct {
	Object        string         `json:"object"`
	ID            string         `json:"id"`
	Customer      expandable     `json:"customer"`
	CustomerEmail string         `json:"customer_email"`
	Metadata      metadataTenant `json:"metadata"`
}

type checkoutFields struct {
	ClientReferenceID string `json:"client_reference_id"`
	CustomerDetails   struct {
		Email string `json:"email"`
	} `json:"customer_details"`
}

type subscriptionFields struct {
	Status            string `json:"status"`
	CancelAtPeriodEnd bool   `json:"cancel_at_period_end"`
	CurrentPeriodEnd  int64  `json:"current_period_end"`
	Items             struct {
		Data []struct {
			CurrentPeriodEnd int64 `json:"current_period_end"`
			Price            struct {
				ID        string `json:"id"`
				Nickname  string `json:"nickname"`
				LookupKey string `json:"lookup_key"`
			} `json:"price"`
		} `json:"data"`
	} `json:"items"`
}

type invoiceFields struct {
	AmountDue    int64      `json:"amount_due"`
	AmountPaid   int64      `json:"amount_paid"`
	Currency     string     `json:"currency"`
	AttemptCount int64      `json:"attempt_count"`
	Subscription expandable `json:"subscription"`
	// subscription_details (API 2023-10-16) and parent.subscription_details (newer versions)
	// carry the subscription's metadata, where checkout-create put the tenant id.
	SubscriptionDetails struct {
		Metadata metadataTenant `json:"metadata"`
	} `json:"subscription_details"`
	Parent struct {
		SubscriptionDetails struct {
			Subscription expandable     `json:"subscription"`
			Metadata     metadataTenant `json:"metadata"`
		} `json:"subscription_details"`
	} `json:"parent"`
	StatusTransitions struct {
		PaidAt int64 `json:"paid_at"`
	} `json:"status_transitions"`
	LastFinalizationError struct {
		Message string `json:"message"`
	} `json:"last_finalization_error"`
}

// HandledTypes are the event types the webhook acts on: the events its Stripe endpoint must
// enable (`reconcile setup` checks them).
var HandledTypes = []string{TypeCheckoutCompleted, TypeSubscriptionCreated, TypeSubscriptionUpdated,
	TypeSubscriptionDeleted, TypeInvoicePaid, TypeInvoicePaymentFailed}

// handled reports whether the webhook acts on events of type t.
func handled(t string) bool { return slices.Contains(HandledTypes, t) }

// effectOf decodes a handled event's object into its effect. A body of the wrong shape is a
// *DeliveryError (ErrMalformedEvent).
func effectOf(ev Event) (effect, error) {
	switch ev.Type {
	case TypeCheckoutCompleted:
		var s checkoutSession
		if ev.decoded != nil {
			s = ev.decoded.checkoutSession()
		}
		if err := decodeObject(ev, "checkout.session", &s, &s.Object, &s.ID); err != nil {
			return effect{}, err
		}
		return checkoutEffect(ev, s), nil
	case TypeSubscriptionCreated, TypeSubscriptionUpdated, TypeSubscriptionDeleted:
		var s subscription
		if ev.decoded != nil {
			s = ev.decoded.subscription()
		}
		if err := decodeObject(ev, "subscription", &s, &s.Object, &s.ID); err != nil {
			return effect{}, err
		}
		return subscriptionEffect(ev, s), nil
	case TypeInvoicePaid, TypeInvoicePaymentFailed:
		var in invoice
		if ev.decoded != nil {
			in = ev.decoded.invoice()
		}
		if err := decodeObject(ev, "invoice", &in, &in.Object, &in.ID); err != nil {
			return effect{}, err
		}
		return invoiceEffect(ev, in), nil
	}
	return effect{}, refuse(ErrMalformedEvent, fmt.Errorf("event type %q is not handled", ev.Type))
}

// decodeObject decodes ev's object into dst, unless ParseEvent already did (dst then holds
// it), and checks that it is a want with an id.
func decodeObject(ev Event, want string, dst any, object, id *string) error {
	if ev.decoded == nil {
		if err := json.Unmarshal(ev.Object, dst); err != nil {
			return refuse(ErrMalformedEvent, fmt.Errorf("decode %s of %s: %w", want, ev.ID, err))
		}
	}
	if *object != want || *id == "" {
		return refuse(ErrMalformedEvent, fmt.Errorf("%s carries object %q (id %q), want a %s", ev.Type, *object, *id, want))
	}
	return nil
}

func checkoutEffect(ev Event, s checkoutSession) effect {
	e := effect{change: Change{Stamp: ev.Stamp()}, customerID: string(s.Customer), metadataTenant: string(s.Metadata),
		sessionID: s.ID, clientReferenceID: s.ClientReferenceID}
	if e.customerID != "" {
		e.change.CustomerID = ptr(e.customerID)
	}
	email := s.CustomerEmail
	if s.CustomerDetails.Email != "" {
		email = s.CustomerDetails.Email
	}
	if email != "" {
		e.change.Email = ptr(email)
	}
	return e
}

func subscriptionEffect(ev Event, s subscription) effect {
	return effect{change: subscriptionChange(ev.Stamp(), s), customerID: string(s.Customer), metadataTenant: string(s.Metadata)}
}

// subscriptionChange is what a subscription object says, stamped st: the event's stamp, or
// the time a refresh read it from Stripe's API.
func subscriptionChange(st Stamp, s subscription) Change {
	c := Change{Stamp: st, SubscriptionID: s.ID}
	if customer := string(s.Customer); customer != "" {
		c.CustomerID = ptr(customer)
	}
	facet := SubscriptionFacet{CancelAtPeriodEnd: s.CancelAtPeriodEnd}
	periodEnd := s.CurrentPeriodEnd
	if len(s.Items.Data) > 0 {
		item := s.Items.Data[0]
		facet.PriceID = item.Price.ID
		facet.Plan = planName(item.Price.LookupKey, item.Price.Nickname, item.Price.ID)
	}
	if periodEnd == 0 {
		// Newer API versions moved the period to the items; take the latest of them.
		for _, item := range s.Items.Data {
			periodEnd = max(periodEnd, item.CurrentPeriodEnd)
		}
	}
	if periodEnd > 0 {
		facet.CurrentPeriodEnd = time.Unix(periodEnd, 0).UTC()
	}
	c.Subscription = &facet
	if knownStatus[s.Status] {
		c.Status = ptr(s.Status)
	}
	return c
}

func invoiceEffect(ev Event, in invoice) effect {
	e := effect{change: Change{Stamp: ev.Stamp()}, customerID: string(in.Customer), metadataTenant: string(in.Metadata)}
	if e.metadataTenant == "" {
		e.metadataTenant = string(in.SubscriptionDetails.Metadata)
	}
	if e.metadataTenant == "" {
		e.metadataTenant = string(in.Parent.SubscriptionDetails.Metadata)
	}
	if e.customerID != "" {
		e.change.CustomerID = ptr(e.customerID)
	}
	email := in.CustomerEmail
	if email != "" {
		e.change.Email = ptr(email)
	}
	if ev.Type == TypeInvoicePaid {
		paidAt := ev.Created
		if in.StatusTransitions.PaidAt > 0 {
			paidAt = time.Unix(in.StatusTransitions.PaidAt, 0).UTC()
		}
		// A payment fact only: a paid invoice says nothing certain about the subscription (a
		// trial's $0 invoice, one of several open invoices, a first invoice paid while the
		// subscription is still incomplete); its own events, or a refresh, say its status.
		e.change.Payment = &PaymentFacet{At: paidAt, Amount: in.AmountPaid, Currency: in.Currency, InvoiceID: in.ID}
		return e
	}
	reason := fmt.Sprintf("payment of %s failed (attempt %d)", money(in.AmountDue, in.Currency), in.AttemptCount)
	if msg := in.LastFinalizationError.Message; msg != "" {
		reason += ": " + msg
	}
	// A failure fact only: an incomplete subscription whose first payment fails stays
	// incomplete, and a past_due or unpaid one is said so by its own update.
	e.change.Failure = &FailureFacet{At: ev.Created, Reason: reason, InvoiceID: in.ID}
	e.failed = &failedPayment{InvoiceID: in.ID, Amount: in.AmountDue, Currency: in.Currency,
		Attempt: in.AttemptCount, Email: email, Reason: reason}
	return e
}

// planName is the name the portal and CRM show: the price's lookup key, else its nickname,
// else its id.
func planName(lookupKey, nickname, id string) string {
	for _, s := range [...]string{lookupKey, nickname} {
		if v := strings.TrimSpace(s); v != "" {
			return v
		}
	}
	return id
}

// zeroDecimal are the currencies Stripe counts in whole units.
var zeroDecimal = map[string]bool{"bif": true, "clp": true, "djf": true, "gnf": true, "jpy": true,
	"kmf": true, "krw": true, "mga": true, "pyg": true, "rwf": true, "ugx": true, "vnd": true,
	"vuv": true, "xaf": true, "xof": true, "xpf": true}

// money formats an amount in Stripe's smallest currency unit for a person to read.
func money(minor int64, currency string) string {
	code := strings.ToUpper(currency)
	if zeroDecimal[strings.ToLower(currency)] {
		return fmt.Sprintf("%d %s", minor, code)
	}
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, minor/100, minor%100, code)
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
