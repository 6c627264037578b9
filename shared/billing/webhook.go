package billing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
)

// MetricDeliveries is the EMF metric counted once per delivery, with dimensions Outcome and
// EventType ("unknown" when the body was refused before it could be trusted).
const MetricDeliveries = "WebhookDeliveries"

// MetricRefused is the EMF metric counted once per event the webhook refuses to apply
// although its signature verified, with dimension Reason: RefusedLivemode (answered 400) or
// RefusedForeignSession (recorded as refused, answered 200).
const MetricRefused = "WebhookRefused"

// Reasons of MetricRefused.
const (
	RefusedLivemode       = "livemode"
	RefusedForeignSession = "foreign_session"
)

// TypeLivemodeMismatch is the problem type of an event of the other mode than the key's.
const TypeLivemodeMismatch = "/problems/stripe-livemode-mismatch"

// DefaultMaxBody bounds a delivery's body (64 KiB; Stripe's events are well under it). The
// handler enforces it itself, so an oversized delivery is counted, logged and noted for
// delivery health like any other refusal.
const DefaultMaxBody = web.DefaultMaxBody

// EnvelopeMaxBody is the limit WebhookFunction gives web.Wrap: Lambda's own limit on a
// synchronous request payload (6 MB), so every delivery that reaches the function reaches the
// handler, which reads at most DefaultMaxBody of it and answers 413 beyond.
const EnvelopeMaxBody = 6 << 20

// rejectionTimeout bounds noting a refused delivery: the note must not hold up the answer.
const rejectionTimeout = 2 * time.Second

// ProcessTimeout bounds a verified delivery's database work. The work does not stop when the
// client hangs up: pgx closes a connection whose query is cancelled, so under overload, where
// clients give up, every abandoned delivery would cost a reconnect and its work would be
// thrown away only to be redone on Stripe's retry. It keeps an earlier deadline (Lambda's).
const ProcessTimeout = 10 * time.Second

// SignatureHeader is the header Stripe signs deliveries in.
const SignatureHeader = "Stripe-Signature"

// TypeAPIVersionMismatch is the problem type of an event of another API version.
const TypeAPIVersionMismatch = "/problems/stripe-api-version-mismatch"

// Counter records a metric (telemetry.Metrics).
type Counter interface {
	Count(ctx context.Context, name string, n float64, dims map[string]string)
}

// WebhookHandler serves POST /v1/webhooks/stripe: verify, record and apply, answer.
type WebhookHandler struct {
	verifier   *Verifier
	processor  *Processor
	metrics    Counter
	rejections db.Querier
	maxBody    int64
	livemode   bool
}

// WebhookOptions configure the webhook endpoint; every field is optional.
type WebhookOptions struct {
	// Metrics counts each delivery (MetricDeliveries).
	Metrics Counter
	// Rejections is where a refused delivery (400, 413, 5xx) is noted for delivery health
	// (health.RecordRejectedDelivery): the pool, outside the delivery's rolled-back
	// transaction. Nil: not noted.
	Rejections db.Querier
	// MaxBody bounds a delivery's body (DefaultMaxBody when zero).
	MaxBody int64
	// Livemode is the mode of the account's key (STRIPE_LIVEMODE): events of the other mode
	// are refused.
	Livemode bool
}

// NewWebhookHandler builds the webhook endpoint.
func NewWebhookHandler(v *Verifier, p *Processor, o WebhookOptions) *WebhookHandler {
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	return &WebhookHandler{verifier: v, processor: p, metrics: o.Metrics, rejections: o.Rejections, maxBody: o.MaxBody, livemode: o.Livemode}
}

// webhookResponse is the 200 body: Stripe shows it in the dashboard's delivery log.
type webhookResponse struct {
	Received bool    `json:"received"`
	EventID  string  `json:"event_id"`
	Outcome  Outcome `json:"outcome"`
}

// writeReceived answers 200 with webhookResponse{Received: true, ...}, written directly: it
// goes out once per delivery, and encoding/json would find its fields by reflection, encode
// into a buffer of its own and copy it out.
func writeReceived(w http.ResponseWriter, eventID string, outcome Outcome) {
	body := make([]byte, 0, 64+len(eventID))
	body = append(body, `{"received":true,"event_id":`...)
	body, err := jsontext.AppendQuote(body, eventID)
	if err == nil {
		body = append(body, `,"outcome":`...)
		body, err = jsontext.AppendQuote(body, string(outcome))
	}
	if err != nil { // not UTF-8: encoding/json replaces what is not
		web.JSON(w, http.StatusOK, webhookResponse{Received: true, EventID: eventID, Outcome: outcome})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '}'))
}

// ServeHTTP answers 200 for processed, duplicate, ignored and unmatched events; 400 for a
// refused signature or body, 413 for an oversized one (nothing written in either case); 503
// when the database is unreachable and 500 otherwise, so Stripe retries.
func (h *WebhookHandler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	w := &statusWriter{ResponseWriter: rw}
	outcome, eventType, eventID := OutcomeFailed, "unknown", ""
	var refused error // why a 4xx was answered
	attrs := []slog.Attr{}
	defer func() {
		if h.metrics != nil {
			h.metrics.Count(ctx, MetricDeliveries, 1, map[string]string{"Outcome": string(outcome), "EventType": eventType})
		}
		web.AddLogAttrs(ctx, append(attrs, slog.String("outcome", string(outcome)), slog.String("event_type", eventType))...)
		h.noteRejection(ctx, w.status, refused, eventID)
	}()

	body, err := readBody(http.MaxBytesReader(rw, r.Body, h.maxBody), r.ContentLength, h.maxBody)
	if err != nil {
		outcome, refused = OutcomeRejected, err
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			web.Error(w, r, problem.TooLarge(maxErr.Limit).WithCause(err))
			return
		}
		web.Error(w, r, problem.BadRequest("the request body could not be read").WithCause(err))
		return
	}
	ev, err := h.verifier.Verify(body, r.Header.Get(SignatureHeader))
	if err != nil {
		outcome, refused = OutcomeRejected, err
		attrs = append(attrs, slog.String("reason", reason(err)))
		if errors.Is(err, ErrAPIVersionMismatch) {
			eventType = ev.Type
			web.Logger(ctx).Warn("stripe event refused: API version mismatch",
				"error", err.Error(),
				"fix", fmt.Sprintf("create the webhook endpoint with API version %s (stripe-go/v76), or set STRIPE_IGNORE_API_VERSION_MISMATCH=true to accept other versions", APIVersion))
		}
		web.Error(w, r, deliveryProblem(err))
		return
	}
	eventType, eventID = ev.Type, ev.ID
	attrs = append(attrs, slog.String("event_id", ev.ID))
	if ev.Livemode != h.livemode {
		outcome, refused = OutcomeRejected, refuse(ErrLivemodeMismatch, fmt.Errorf("event livemode %t, key livemode %t", ev.Livemode, h.livemode))
		attrs = append(attrs, slog.String("reason", reason(refused)))
		h.countRefused(ctx, RefusedLivemode)
		web.Logger(ctx).Warn("stripe event refused: livemode mismatch",
			"event_id", ev.ID, "event_livemode", ev.Livemode, "configured_livemode", h.livemode,
			"fix", "point the endpoint of this mode at the deployment whose STRIPE_LIVEMODE (derived from STRIPE_API_KEY's sk_live_/sk_test_ prefix) matches it")
		web.Error(w, r, deliveryProblem(refused))
		return
	}
	pctx, cancel := db.Detach(ctx, ProcessTimeout)
	defer cancel()
	res, err := h.processor.Process(pctx, ev)
	if err != nil {
		outcome = res.Outcome
		var de *DeliveryError
		if errors.As(err, &de) {
			refused = err
			attrs = append(attrs, slog.String("reason", reason(err)))
			web.Error(w, r, deliveryProblem(err))
			return
		}
		web.Error(w, r, err)
		return
	}
	outcome = res.Outcome
	if res.Outcome == OutcomeRefused {
		h.countRefused(ctx, RefusedForeignSession)
		web.Logger(ctx).Warn("checkout session refused: not created by checkout-create",
			"event_id", ev.ID, "client_reference_id", res.ClaimedTenant,
			"why", "the session names a tenant in client_reference_id (which a Payment Link payer can set) without a session record or metadata our key wrote; nothing was bound")
	}
	if res.TenantID != uuid.Nil {
		attrs = append(attrs, slog.String("tenant_id", res.TenantID.String()),
			slog.Bool("updated", res.Updated), slog.Bool("crm_sync", res.CRMSync))
		if res.UnmatchedApplied > 0 {
			attrs = append(attrs, slog.Int("unmatched_applied", res.UnmatchedApplied))
		}
	}
	writeReceived(w, ev.ID, res.Outcome)
}

// readBody reads r to the end into one buffer of the announced length (io.ReadAll would grow
// it five times for a 3.5 KB event, copying it each time); a length that is missing, wrong or
// over limit changes nothing but the number of allocations.
func readBody(r io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength <= 0 || contentLength > limit {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, contentLength+1) // +1: EOF is seen without growing
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// countRefused counts an event refused for reason (MetricRefused).
func (h *WebhookHandler) countRefused(ctx context.Context, reason string) {
	if h.metrics != nil {
		h.metrics.Count(ctx, MetricRefused, 1, map[string]string{"Reason": reason})
	}
}

// noteRejection records a refused delivery (400, 413, 5xx) for delivery health, best effort:
// a failure to note it is logged and never changes the answer Stripe already has.
func (h *WebhookHandler) noteRejection(ctx context.Context, status int, refused error, eventID string) {
	if h.rejections == nil || status < http.StatusBadRequest {
		return
	}
	rej := health.Rejection{Reason: health.RejectedError, Status: status, EventID: eventID}
	if status < http.StatusInternalServerError {
		rej.Reason = health.RejectedPayload
		if isSignatureRefusal(refused) {
			rej.Reason = health.RejectedSignature
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rejectionTimeout)
	defer cancel()
	if err := health.RecordRejectedDelivery(ctx, h.rejections, rej); err != nil {
		web.Logger(ctx).Warn("could not note the refused delivery for delivery health", "error", err.Error(), "status", status)
	}
}

// isSignatureRefusal reports whether err refused the Stripe-Signature header, not the body.
func isSignatureRefusal(err error) bool {
	for _, sig := range []error{ErrMissingSignature, ErrMalformedSignature, ErrInvalidSignature, ErrStaleTimestamp, ErrFutureTimestamp} {
		if errors.Is(err, sig) {
			return true
		}
	}
	return false
}

// statusWriter remembers the status the handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// reason names a refusal for logs.
func reason(err error) string {
	var de *DeliveryError
	if errors.As(err, &de) {
		return de.Reason.Error()
	}
	return err.Error()
}

// deliveryProblem is the 400 a refused delivery gets. The details name the check that failed
// (what a developer reading Stripe's delivery log needs), never a secret or a signature.
func deliveryProblem(err error) *problem.Problem {
	var p *problem.Problem
	switch {
	case errors.Is(err, ErrMissingSignature):
		p = problem.BadRequest("the Stripe-Signature header is missing")
	case errors.Is(err, ErrMalformedSignature):
		p = problem.BadRequest("the Stripe-Signature header is malformed")
	case errors.Is(err, ErrInvalidSignature):
		p = problem.BadRequest("the Stripe-Signature header has no valid signature for this endpoint")
	case errors.Is(err, ErrStaleTimestamp):
		p = problem.BadRequest("the signature's timestamp is too old")
	case errors.Is(err, ErrFutureTimestamp):
		p = problem.BadRequest("the signature's timestamp is in the future")
	case errors.Is(err, ErrAPIVersionMismatch):
		p = problem.New(http.StatusBadRequest, TypeAPIVersionMismatch, "Stripe API version mismatch",
			fmt.Sprintf("this endpoint reads events of Stripe API version %s; create the webhook endpoint with that "+
				"version, or set STRIPE_IGNORE_API_VERSION_MISMATCH=true", APIVersion))
	case errors.Is(err, ErrLivemodeMismatch):
		p = problem.New(http.StatusBadRequest, TypeLivemodeMismatch, "Stripe livemode mismatch",
			"this endpoint serves the other mode's Stripe account (STRIPE_LIVEMODE); send this mode's events to its own deployment")
	default:
		p = problem.BadRequest("the body is not a Stripe event this endpoint can read")
	}
	return p.WithCause(err)
}
