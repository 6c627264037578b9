package reconcile

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db"
)

// Applied is what the webhook's path did with one event.
type Applied struct {
	// Outcome is the event's outcome after applying: processed, ignored or unmatched.
	Outcome string
	// TenantID is the tenant the event resolved to (uuid.Nil: none).
	TenantID uuid.UUID
	// Duplicate is true when the event had already been applied (by a live delivery racing
	// this run, or an earlier run): nothing was changed.
	Duplicate bool
}

// EventApplier is the webhook's event-application path (package billing). Reconcile applies
// events through it and no other way, so an event has one effect however it arrives.
type EventApplier interface {
	// ResolveTenant says, reading only, which tenant a stored event's payload belongs to now
	// (uuid.Nil: still none). Dry runs and tenant-scoped runs use it to decide.
	ResolveTenant(ctx context.Context, q db.Querier, payload []byte) (uuid.UUID, error)
	// ApplyStored applies an event already in private.stripe_events that was never applied or
	// is unmatched, in one transaction: lock its row, re-resolve the tenant, update the
	// projection, enqueue follow-ups, stamp applied_at. An already applied event is a Duplicate.
	ApplyStored(ctx context.Context, eventID string) (Applied, error)
	// Ingest stores and applies an event fetched from Stripe's API exactly as a verified
	// delivery would be (dedupe on the event id: a received one is a Duplicate).
	Ingest(ctx context.Context, payload []byte) (Applied, error)
}

// Enqueuer is the queue (jobs.Inserter): unique inserts in the caller's transaction.
type Enqueuer interface {
	EnqueueCRMSync(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, sourceEvent string, version int64) error
	EnqueueHelpdeskTicket(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID) error
}

// SourceEvent is one event as Stripe's API lists it.
type SourceEvent struct {
	ID      string
	Type    string
	Created time.Time
	// Payload is the event as JSON, the same shape a webhook delivery carries.
	Payload []byte
}

// EventSource lists Stripe's events created in [from, to) (StripeEvents in production).
type EventSource interface {
	Events(ctx context.Context, from, to time.Time) ([]SourceEvent, error)
}

// Pool is what a run needs from the database: reads and its own transactions.
type Pool interface {
	db.Querier
	db.Beginner
}

// Errors of a run (a refused scope is a *ScopeError instead).
var (
	// ErrNoEventSource: FromStripe was asked of a Reconciler built without Stripe access.
	ErrNoEventSource = errors.New("reconcile: --from-stripe needs STRIPE_API_KEY")
)

// Reconciler finds and repairs missing effects. Build one with New.
type Reconciler struct {
	pool     Pool
	applier  EventApplier
	enqueuer Enqueuer
	stripe   EventSource
}

// Deps are a Reconciler's collaborators. Stripe may be nil (FromStripe then fails).
type Deps struct {
	Pool     Pool
	Applier  EventApplier
	Enqueuer Enqueuer
	Stripe   EventSource
}

// New builds a Reconciler.
func New(d Deps) *Reconciler {
	return &Reconciler{pool: d.Pool, applier: d.Applier, enqueuer: d.Enqueuer, stripe: d.Stripe}
}

// Run reconciles the scope: it refuses an invalid one (*ScopeError) before touching anything,
// and otherwise returns the report. A repair that fails is recorded in the report (Failed,
// with its reason) and the run goes on; an error return means the run itself could not
// proceed (database unreachable, Stripe unreachable).
//
// Order matters: events first (applying them enqueues their own follow-ups), then pushes, so
// one run repairs a chain (unapplied event → missing CRM push) without a second pass.
func (r *Reconciler) Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.FromStripe && r.stripe == nil {
		return nil, ErrNoEventSource
	}
	rep := newReport(o)
	if err := r.storedEvents(ctx, o, rep); err != nil {
		return nil, err
	}
	if o.FromStripe {
		if err := r.missingEvents(ctx, o, rep); err != nil {
			return nil, err
		}
	}
	if err := r.crmSyncs(ctx, o, rep); err != nil {
		return nil, err
	}
	if err := r.helpdeskTickets(ctx, o, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// scopeArgs renders the scope as nullable query arguments: tenant, from, to.
func scopeArgs(s Scope) (tenant *uuid.UUID, from, to *time.Time) {
	if s.HasTenant() {
		t := s.TenantID
		tenant = &t
	}
	if s.HasRange() {
		f, e := s.From, s.To
		from, to = &f, &e
	}
	return tenant, from, to
}

// failReason is a short, loggable reason for a failed repair.
func failReason(what string, err error) string {
	if db.IsUnavailable(err) {
		return what + ": database unavailable"
	}
	return what + ": " + err.Error()
}
