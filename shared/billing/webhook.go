package billing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
)

// MetricDeliveries is the EMF metric counted once per delivery, with dimensions Outcome and
// EventType ("unknown" when the body was refused before it could be trusted).
const MetricDeliveries = "WebhookDeliveries"

// DefaultMaxBody bounds a delivery's body: web.Wrap's default, which function.HTTP applies
// before the handler (a declared Content-Length over it is answered there; a chunked body is
// cut here, counted and logged as rejected).
const DefaultMaxBody = web.DefaultMaxBody

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
	verifier  *Verifier
	processor *Processor
	metrics   Counter
	maxBody   int64
}

// NewWebhookHandler builds the webhook endpoint. metrics may be nil.
func NewWebhookHandler(v *Verifier, p *Processor, metrics Counter) *WebhookHandler {
	return &WebhookHandler{verifier: v, processor: p, metrics: metrics, maxBody: DefaultMaxBody}
}

// webhookResponse is the 200 body: Stripe shows it in the dashboard's delivery log.
type webhookResponse struct {
	Received bool    `json:"received"`
	EventID  string  `json:"event_id"`
	Outcome  Outcome `json:"outcome"`
}

// ServeHTTP answers 200 for processed, duplicate, ignored and unmatched events; 400 for a
// refused signature or body, 413 for an oversized one (nothing written in either case); 503
// when the database is unreachable and 500 otherwise, so Stripe retries.
func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	outcome, eventType := OutcomeFailed, "unknown"
	attrs := []slog.Attr{}
	defer func() {
		if h.metrics != nil {
			h.metrics.Count(ctx, MetricDeliveries, 1, map[string]string{"Outcome": string(outcome), "EventType": eventType})
		}
		web.AddLogAttrs(ctx, append(attrs, slog.String("outcome", string(outcome)), slog.String("event_type", eventType))...)
	}()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		outcome = OutcomeRejected
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
		outcome = OutcomeRejected
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
	eventType = ev.Type
	attrs = append(attrs, slog.String("event_id", ev.ID))
	res, err := h.processor.Process(ctx, ev)
	if err != nil {
		outcome = res.Outcome
		var de *DeliveryError
		if errors.As(err, &de) {
			attrs = append(attrs, slog.String("reason", reason(err)))
			web.Error(w, r, deliveryProblem(err))
			return
		}
		web.Error(w, r, err)
		return
	}
	outcome = res.Outcome
	if res.TenantID != uuid.Nil {
		attrs = append(attrs, slog.String("tenant_id", res.TenantID.String()),
			slog.Bool("updated", res.Updated), slog.Bool("crm_sync", res.CRMSync))
	}
	web.JSON(w, http.StatusOK, webhookResponse{Received: true, EventID: ev.ID, Outcome: res.Outcome})
}

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
	default:
		p = problem.BadRequest("the body is not a Stripe event this endpoint can read")
	}
	return p.WithCause(err)
}
