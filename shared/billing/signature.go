package billing

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

// DefaultTolerance is how far a signature's timestamp may be from now, either way.
const DefaultTolerance = webhook.DefaultTolerance

// APIVersion is the Stripe API version stripe-go/v76 reads events in. Create the webhook
// endpoint with it (Dashboard → Developers → Webhooks, or `api_version` when creating the
// endpoint through the API) unless IgnoreAPIVersionMismatch is set.
const APIVersion = stripe.APIVersion

// VerifierOptions configure a Verifier.
type VerifierOptions struct {
	// Secrets are the endpoint's signing secrets (whsec_...). Several are accepted while a
	// secret is being rolled: Stripe then signs with both and either may match.
	Secrets []string
	// Tolerance bounds the signature's age and how far in the future it may be
	// (DefaultTolerance when zero).
	Tolerance time.Duration
	// IgnoreAPIVersionMismatch accepts events of another API version than APIVersion. Off by
	// default: stripe-go/v76's types describe APIVersion, so the safe setup pins the endpoint.
	IgnoreAPIVersionMismatch bool
	// Now is the clock for the future check (time.Now when nil). stripe-go checks the age
	// against the real clock.
	Now func() time.Time
}

// Verifier checks that a webhook delivery comes from Stripe and is fresh, then reads it.
// Safe for concurrent use.
type Verifier struct {
	secrets   []string
	tolerance time.Duration
	ignoreVer bool
	now       func() time.Time
}

// NewVerifier checks o and builds a Verifier.
func NewVerifier(o VerifierOptions) (*Verifier, error) {
	var secrets []string
	for _, s := range o.Secrets {
		if s = strings.TrimSpace(s); s != "" {
			secrets = append(secrets, s)
		}
	}
	if len(secrets) == 0 {
		return nil, ErrNoSecret
	}
	if o.Tolerance <= 0 {
		o.Tolerance = DefaultTolerance
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Verifier{secrets: secrets, tolerance: o.Tolerance, ignoreVer: o.IgnoreAPIVersionMismatch, now: o.Now}, nil
}

// Event is a verified Stripe event: the envelope fields we store, and the raw bytes exactly as
// signed.
type Event struct {
	ID         string
	Type       string
	APIVersion string
	Created    time.Time
	Livemode   bool
	// Object is data.object, decoded later by the handler of Type, with any text PostgreSQL
	// cannot store (\u0000, a lone surrogate, invalid UTF-8) replaced by U+FFFD. Nil when
	// ParseEvent decoded the object with the envelope (decoded).
	Object json.RawMessage
	// Payload is the whole body as Stripe sent and signed it, unchanged.
	Payload []byte
	// decoded is data.object's fields that the handlers read, decoded with the envelope.
	decoded *anyObject
}

// Stamp is the event's place in the order of its account's history.
func (e Event) Stamp() Stamp { return Stamp{Created: e.Created, EventID: e.ID} }

// Verify checks the Stripe-Signature header against the raw payload with every configured
// secret, refuses a timestamp outside the tolerance in either direction, and only then parses
// the body. Every refusal is a *DeliveryError; on ErrAPIVersionMismatch the envelope (id,
// type, api_version) comes back with it, for the log line.
func (v *Verifier) Verify(payload []byte, header string) (Event, error) {
	if strings.TrimSpace(header) == "" {
		return Event{}, refuse(ErrMissingSignature, nil)
	}
	if err := v.checkSignature(payload, header); err != nil {
		return Event{}, err
	}
	ts, err := signedAt(header)
	if err != nil {
		return Event{}, err
	}
	if ahead := ts.Sub(v.now()); ahead > v.tolerance {
		return Event{}, refuse(ErrFutureTimestamp, fmt.Errorf("signed %s ahead of our clock", ahead.Round(time.Second)))
	}
	return v.parse(payload)
}

// checkSignature runs stripe-go's check once per secret. Only "no signature matched" moves on
// to the next secret: a missing, malformed or stale header is refused whatever the secret.
func (v *Verifier) checkSignature(payload []byte, header string) error {
	for _, secret := range v.secrets {
		err := webhook.ValidatePayloadWithTolerance(payload, header, secret, v.tolerance)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, webhook.ErrNoValidSignature):
			continue
		case errors.Is(err, webhook.ErrTooOld):
			return refuse(ErrStaleTimestamp, err)
		case errors.Is(err, webhook.ErrNotSigned):
			return refuse(ErrMissingSignature, err)
		default:
			return refuse(ErrMalformedSignature, err)
		}
	}
	return refuse(ErrInvalidSignature, nil)
}

// signedAt reads the header's t= the way stripe-go does (the last one wins), for the future
// check stripe-go does not make.
func signedAt(header string) (time.Time, error) {
	var ts time.Time
	found := false
	for _, pair := range strings.Split(header, ",") {
		k, val, ok := strings.Cut(pair, "=")
		if !ok {
			return time.Time{}, refuse(ErrMalformedSignature, nil)
		}
		if k != "t" {
			continue
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return time.Time{}, refuse(ErrMalformedSignature, fmt.Errorf("timestamp: %w", err))
		}
		ts, found = time.Unix(n, 0), true
	}
	if !found {
		return time.Time{}, refuse(ErrMalformedSignature, errors.New("no timestamp"))
	}
	return ts, nil
}

// parse reads the verified body and checks its API version unless told to ignore it.
func (v *Verifier) parse(payload []byte) (Event, error) {
	ev, err := ParseEvent(payload)
	if err != nil {
		return Event{}, err
	}
	if !v.ignoreVer && ev.APIVersion != APIVersion {
		// The envelope is returned with the error so the refusal can be logged by type.
		return Event{ID: ev.ID, Type: ev.Type, APIVersion: ev.APIVersion}, refuse(ErrAPIVersionMismatch, fmt.Errorf(
			"event %s has api_version %q, stripe-go/v76 reads %q", ev.ID, ev.APIVersion, APIVersion))
	}
	return ev, nil
}

// ParseEvent reads a Stripe event whose origin is already established: a verified delivery
// (Verify calls it after the signature check), an event in our inbox, or one fetched from
// Stripe's API with our key. It checks what every handled event needs (id, type, created,
// data.object), not the API version: that is a delivery-time choice (VerifierOptions). A body
// it cannot read is a *DeliveryError (ErrMalformedEvent). The object is read from the body made
// safe for the database (see jsonbSafe); Payload stays the bytes as given.
func ParseEvent(payload []byte) (Event, error) {
	safe := jsonbSafe(payload)
	// One pass: the envelope and data.object decoded together (anyObject), by encoding/json/v2's
	// decoder (go-json-experiment/json, which Go ships as encoding/json/v2 behind
	// GOEXPERIMENT=jsonv2): it validates while it decodes instead of scanning the body once
	// more first, and skips the fields nobody reads at a fraction of encoding/json's cost (half
	// the time and a third of the allocations for a 5 KB subscription event). Its names match
	// exactly, as Stripe writes them. A name twice is read as encoding/json reads it, the last
	// one wins: the decoder is told not to track every object's names for duplicates (a map of
	// them per object of Stripe's 50 to 80 fields, a third of the pass's time and half its
	// bytes). Any body this pass cannot take is decoded as before by encoding/json, and refused
	// or accepted for the same reasons.
	var fast struct {
		envelopeFields
		Data *struct {
			Object *anyObject `json:"object"`
		} `json:"data"`
	}
	if err := jsonv2.Unmarshal(safe, &fast, jsontext.AllowDuplicateNames(true)); err == nil && fast.ID != "" && fast.Type != "" && fast.Created > 0 &&
		fast.Data != nil && fast.Data.Object != nil {
		return fast.event(payload, fast.Data.Object, nil), nil
	}
	var se envelope
	if err := json.Unmarshal(safe, &se); err != nil {
		return Event{}, refuse(ErrMalformedEvent, fmt.Errorf("decode event: %w", err))
	}
	switch {
	case se.ID == "" || se.Type == "":
		return Event{}, refuse(ErrMalformedEvent, errors.New("event has no id or type"))
	case se.Created <= 0:
		return Event{}, refuse(ErrMalformedEvent, errors.New("event has no created time"))
	case se.Data == nil || len(se.Data.Object) == 0 || se.Data.Object[0] != '{':
		return Event{}, refuse(ErrMalformedEvent, errors.New("event has no data.object"))
	}
	return se.event(payload, nil, se.Data.Object), nil
}

// envelopeFields are the fields of an event (stripe.Event's of the same names) that every
// handled type needs.
type envelopeFields struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	APIVersion string `json:"api_version"`
	Created    int64  `json:"created"`
	Livemode   bool   `json:"livemode"`
}

func (e envelopeFields) event(payload []byte, decoded *anyObject, object json.RawMessage) Event {
	return Event{
		ID:         e.ID,
		Type:       e.Type,
		APIVersion: e.APIVersion,
		Created:    time.Unix(e.Created, 0).UTC(),
		Livemode:   e.Livemode,
		Object:     object,
		Payload:    payload,
		decoded:    decoded,
	}
}

// envelope is an event with data.object kept raw, decoded later by its type's handler:
// stripe.Event would also decode it into a map nobody reads, the most expensive step of a
// delivery's parsing.
type envelope struct {
	envelopeFields
	Data *struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

// SignedTestEvent signs payload with secret as Stripe would at time at, and returns the
// Stripe-Signature header to send with it. Tests, `make events` and local tools use it (it
// wraps stripe-go's webhook.GenerateTestSignedPayload).
func SignedTestEvent(secret string, payload []byte, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
		Payload:   payload,
		Secret:    secret,
		Timestamp: at,
	}).Header
}
