package billing

import (
	"errors"
	"fmt"
)

// Errors of this package, declared together. A refused delivery wraps one of the first group
// in a *DeliveryError; the webhook answers all of them with 400 and changes nothing.
var (
	// ErrMissingSignature is a delivery without a Stripe-Signature header.
	ErrMissingSignature = errors.New("missing Stripe-Signature header")
	// ErrMalformedSignature is a Stripe-Signature header that cannot be parsed.
	ErrMalformedSignature = errors.New("malformed Stripe-Signature header")
	// ErrInvalidSignature is a header with no v1 signature that matches any configured secret:
	// forged, tampered with, or signed with another endpoint's secret.
	ErrInvalidSignature = errors.New("no valid signature for any configured secret")
	// ErrStaleTimestamp is a signature older than the tolerance (a replayed delivery).
	ErrStaleTimestamp = errors.New("signature timestamp is older than the tolerance")
	// ErrFutureTimestamp is a signature dated further in the future than the tolerance
	// (stripe-go only checks age; a future stamp would stretch the replay window).
	ErrFutureTimestamp = errors.New("signature timestamp is in the future")
	// ErrMalformedEvent is a correctly signed body that is not a Stripe event we can read.
	ErrMalformedEvent = errors.New("malformed event")
	// ErrAPIVersionMismatch is an event rendered with another API version than the one
	// stripe-go/v76 is built for (see WebhookConfig.IgnoreAPIVersionMismatch).
	ErrAPIVersionMismatch = errors.New("event API version does not match stripe-go's")

	// ErrRefreshTied is a refresh read in the same second as an applied event that says
	// otherwise about the subscription: which is newer is unknown, so it is read again.
	ErrRefreshTied = errors.New("refresh read in the same second as a differing event")
	// ErrNoResponse is a Stripe call that returned no response to read.
	ErrNoResponse = errors.New("stripe returned no response")

	// ErrLivemodeMismatch is an event of the other mode (live or test) than the configured
	// key's (WebhookConfig.Livemode).
	ErrLivemodeMismatch = errors.New("event livemode does not match the configured key's")

	// ErrEventNotStored is an ApplyStored of an event id our inbox does not hold.
	ErrEventNotStored = errors.New("stripe event is not stored")

	// ErrNoSecret is a webhook configured without any signing secret.
	ErrNoSecret = errors.New("no webhook signing secret configured")
	// ErrNoPrices is a checkout configured without any allowed price.
	ErrNoPrices = errors.New("no allowed price configured")
	// ErrNoDecoder is a checkout or billing portal handler built without CheckoutOptions.Decode.
	ErrNoDecoder = errors.New("no request decoder configured")
	// ErrPortalURL is a PORTAL_URL that is not an absolute http(s) origin.
	ErrPortalURL = errors.New("portal URL must be an absolute http(s) URL")
	// ErrUnsafePath is a checkout return path that could leave the portal's origin (an open
	// redirect); the request is answered 422 naming the field.
	ErrUnsafePath = errors.New("return path must stay on the portal")
)

// DeliveryError is a webhook delivery refused before anything was written: Reason is one of
// the ErrX values above (what the metric and the log say), Cause the library's detail.
type DeliveryError struct {
	Reason error
	Cause  error
}

// Error says the reason and, when there is one, its cause.
func (e *DeliveryError) Error() string {
	if e.Cause == nil {
		return "refuse delivery: " + e.Reason.Error()
	}
	return fmt.Sprintf("refuse delivery: %s: %s", e.Reason, e.Cause)
}

// Unwrap exposes the reason and the cause to errors.Is and errors.As.
func (e *DeliveryError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Cause}
}

func refuse(reason, cause error) *DeliveryError {
	return &DeliveryError{Reason: reason, Cause: cause}
}
