package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stripe/stripe-go/v76"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// Config is what reconcile reads from the environment besides DATABASE_URL. Stripe access is
// optional: only --from-stripe needs it.
type Config struct {
	StripeAPIKey  config.Secret `env:"STRIPE_API_KEY"`
	StripeAPIBase string        `env:"STRIPE_API_BASE"`
}

// Function is ReconcileFunction (functions/reconcile), invoked by hand with a Request as its
// event. A refused scope comes back as a ScopeError, never as a half-done run.
var Function = function.Invoked[Config, Request, *Report]{
	Name: "reconcile",
	Build: func(_ context.Context, deps function.Deps, cfg Config) (func(context.Context, Request) (*Report, error), error) {
		r, err := NewFromPool(deps.Pool, cfg, deps.HTTPClient)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, req Request) (*Report, error) {
			o, err := req.Options()
			if err != nil {
				deps.Logger.WarnContext(ctx, "reconcile refused", "error", err.Error())
				return nil, err
			}
			rep, err := r.Run(ctx, o)
			if err != nil {
				return nil, err
			}
			t := rep.Total()
			deps.Logger.InfoContext(ctx, "reconcile done", "scope", o.Scope.String(), "dry_run", rep.DryRun,
				"found", t.Found, "fine", t.Fine, "enqueued", t.Enqueued, "skipped", t.Skipped, "failed", t.Failed)
			return rep, nil
		}, nil
	},
}

// NewFromPool wires a Reconciler to the real collaborators: the queue's inserter, the
// webhook's processor and (when a key is set) Stripe's API.
func NewFromPool(pool *pgxpool.Pool, cfg Config, hc *http.Client) (*Reconciler, error) {
	ins, err := jobs.NewInserter(pool)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	d := Deps{Pool: pool, Enqueuer: ins, Applier: NewBillingApplier(pool, billing.NewProcessor(pool, ins))}
	if cfg.StripeAPIKey.IsSet() {
		d.Stripe = NewStripeEvents(cfg.StripeAPIKey.Reveal(), cfg.StripeAPIBase, hc)
	}
	return New(d), nil
}

// Processor is the webhook's event path (billing.Processor).
type Processor interface {
	Process(ctx context.Context, ev billing.Event) (billing.Result, error)
}

var _ Processor = (*billing.Processor)(nil)

// ErrNoStoredPath: billing does not yet export a way to apply an event that is already stored.
var ErrNoStoredPath = errors.New("billing exports no path to apply an already stored event yet")

// BillingApplier adapts the webhook's processor to EventApplier.
type BillingApplier struct {
	pool Pool
	p    Processor
}

var _ EventApplier = (*BillingApplier)(nil)

// NewBillingApplier builds the adapter.
func NewBillingApplier(pool Pool, p Processor) *BillingApplier {
	return &BillingApplier{pool: pool, p: p}
}

// Ingest parses an event listed by Stripe's API (fetched over TLS with our key, so it needs no
// webhook signature) and hands it to the webhook's processor, which dedupes on its id.
func (a *BillingApplier) Ingest(ctx context.Context, payload []byte) (Applied, error) {
	ev, err := parseEvent(payload)
	if err != nil {
		return Applied{}, err
	}
	res, err := a.p.Process(ctx, ev)
	if err != nil {
		return Applied{}, fmt.Errorf("ingest %s: %w", ev.ID, err)
	}
	return Applied{Outcome: string(res.Outcome), TenantID: res.TenantID, Duplicate: res.Outcome == billing.OutcomeDuplicate}, nil
}

// ApplyStored needs billing's stored-event path (see ErrNoStoredPath).
func (a *BillingApplier) ApplyStored(_ context.Context, eventID string) (Applied, error) {
	return Applied{}, fmt.Errorf("apply %s: %w", eventID, ErrNoStoredPath)
}

// ResolveTenant needs billing's read-only resolver (see ErrNoStoredPath).
func (a *BillingApplier) ResolveTenant(_ context.Context, _ db.Querier, _ []byte) (uuid.UUID, error) {
	return uuid.Nil, fmt.Errorf("resolve tenant: %w", ErrNoStoredPath)
}

// parseEvent reads a Stripe event as the webhook does after verifying it.
func parseEvent(payload []byte) (billing.Event, error) {
	var se stripe.Event
	if err := json.Unmarshal(payload, &se); err != nil {
		return billing.Event{}, fmt.Errorf("decode Stripe event: %w", err)
	}
	if se.ID == "" || se.Type == "" || se.Created <= 0 || se.Data == nil || len(se.Data.Raw) == 0 {
		return billing.Event{}, fmt.Errorf("decode Stripe event %q: %w", se.ID, billing.ErrMalformedEvent)
	}
	return billing.Event{
		ID:         se.ID,
		Type:       string(se.Type),
		APIVersion: se.APIVersion,
		Created:    time.Unix(se.Created, 0).UTC(),
		Livemode:   se.Livemode,
		Object:     se.Data.Raw,
		Payload:    payload,
	}, nil
}
