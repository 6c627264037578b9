package reconcile

import (
	"context"
	"fmt"
	"net/http"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

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
	d := Deps{Pool: pool, Enqueuer: ins, Applier: NewBillingApplier(billing.NewProcessor(pool, ins))}
	if cfg.StripeAPIKey.IsSet() {
		d.Stripe = NewStripeEvents(cfg.StripeAPIKey.Reveal(), cfg.StripeAPIBase, hc)
	}
	return New(d), nil
}

// Processor is the webhook's event path (billing.Processor): live deliveries and events
// already in the inbox go through the same steps.
type Processor interface {
	Process(ctx context.Context, ev billing.Event) (billing.Result, error)
	ApplyStored(ctx context.Context, eventID string) (billing.Result, error)
}

var _ Processor = (*billing.Processor)(nil)

// BillingApplier adapts the webhook's processor to EventApplier.
type BillingApplier struct {
	p Processor
}

var _ EventApplier = (*BillingApplier)(nil)

// NewBillingApplier builds the adapter.
func NewBillingApplier(p Processor) *BillingApplier {
	return &BillingApplier{p: p}
}

// Ingest parses an event listed by Stripe's API (fetched over TLS with our key, so it needs no
// webhook signature) and hands it to the webhook's processor, which dedupes on its id.
func (a *BillingApplier) Ingest(ctx context.Context, payload []byte) (Applied, error) {
	ev, err := billing.ParseEvent(payload)
	if err != nil {
		return Applied{}, fmt.Errorf("parse listed event: %w", err)
	}
	res, err := a.p.Process(ctx, ev)
	if err != nil {
		return Applied{}, err // billing's error names the event; the report adds what failed
	}
	return applied(res), nil
}

// ApplyStored applies an inbox event through the webhook's stored-event path, which locks its
// row and runs the live delivery's steps (an already applied one is a Duplicate).
func (a *BillingApplier) ApplyStored(ctx context.Context, eventID string) (Applied, error) {
	res, err := a.p.ApplyStored(ctx, eventID)
	if err != nil {
		return Applied{}, err // billing's error names the event; the report adds what failed
	}
	return applied(res), nil
}

// ResolveTenant is the webhook's tenant resolution, reading only.
func (a *BillingApplier) ResolveTenant(ctx context.Context, q db.Querier, payload []byte) (uuid.UUID, error) {
	return billing.ResolveTenant(ctx, q, payload)
}

func applied(res billing.Result) Applied {
	return Applied{Outcome: string(res.Outcome), TenantID: res.TenantID, Duplicate: res.Outcome == billing.OutcomeDuplicate}
}
