// Package health answers "is delivery working?" over a recent window: how Stripe's webhook
// deliveries fared, how many pushes to each integration were attempted and failed, how old the
// oldest waiting job is and how many jobs are dead-lettered. Ops read it as a table
// (`reconcile health`); tenant owners read their own tenant's slice in GET /v1/account
// (ForTenant), so the same numbers answer both.
//
// It reads the tables as they are (the Stripe inbox, River's job table, sync status) and
// writes nothing but RecordRejectedDelivery's rows; the queries aggregate, they never list jobs
// (listing and requeueing dead letters is the jobs package's).
package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/db"
)

// DefaultWindow is the window ops and the portal look at unless told otherwise: a day shows a
// whole cycle of traffic without burying today's incident in last week's.
const DefaultWindow = 24 * time.Hour

// MaxWindow bounds the window: River keeps finished jobs only for days, so a longer window
// would report numbers that look complete and are not.
const MaxWindow = 7 * 24 * time.Hour

// Integration names, as private.sync_status spells them.
const (
	CRM      = "crm"
	Helpdesk = "helpdesk"
)

// jobKinds maps each integration to the River job kind that pushes to it.
var jobKinds = [...]struct{ integration, kind string }{
	{CRM, "crm_sync"},
	{Helpdesk, "helpdesk_ticket"},
}

// Errors of this package.
var (
	// ErrBadWindow: the window is not positive or longer than MaxWindow.
	ErrBadWindow = errors.New("health: window must be between 1m and 168h")
	// ErrNoTenant: ForTenant was called without a tenant, which would read every tenant's
	// numbers for one owner.
	ErrNoTenant = errors.New("health: ForTenant needs a tenant id")
)

// Webhook is how Stripe's deliveries fared in the window.
type Webhook struct {
	// Received is the number of distinct events stored (accepted deliveries).
	Received int `json:"received"`
	// Processed, Ignored, Unmatched and Refused split Received by outcome. Refused events
	// claimed a tenant without proof (a checkout session we did not create naming a tenant):
	// kept for audit, never applied.
	Processed int `json:"processed"`
	Ignored   int `json:"ignored"`
	Unmatched int `json:"unmatched"`
	Refused   int `json:"refused"`
	// Unapplied were stored as processed but never applied (reconcile applies them).
	Unapplied int `json:"unapplied"`
	// Rejected deliveries never became an event (bad signature, unreadable body, another API
	// version or the other livemode, error before commit); only
	// counted for the whole system, since a rejected delivery has no tenant.
	Rejected int `json:"rejected"`
	// SuccessRate is (processed + ignored) / (received + rejected), 1 when nothing arrived.
	SuccessRate float64 `json:"success_rate"`
}

// Integration is how the pushes to one integration fared in the window, and what waits now.
type Integration struct {
	Name string `json:"integration"`
	// Attempts and Failures count push attempts that finished in the window.
	Attempts int `json:"attempts"`
	Failures int `json:"failures"`
	// Pending jobs wait to run (or to run again); OldestPendingSeconds is the oldest one's age.
	Pending              int     `json:"pending"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
	// DeadLetters are jobs River gave up on (discarded or cancelled), until requeued or resolved.
	DeadLetters int `json:"dead_letters"`
	// FailingSubjects are subjects (a tenant's CRM record, a ticket) whose last push failed.
	FailingSubjects int `json:"failing_subjects"`
	// LastSuccessAt is the last successful push of any subject in scope.
	LastSuccessAt *time.Time `json:"last_success_at"`
}

// Report is delivery health for the whole system or one tenant. It carries counts and times
// only, never an upstream error text, so it is safe to show a tenant owner.
type Report struct {
	TenantID      uuid.UUID     `json:"tenant_id,omitzero"`
	Since         time.Time     `json:"since"`
	Until         time.Time     `json:"until"`
	WindowSeconds float64       `json:"window_seconds"`
	Webhook       Webhook       `json:"webhook"`
	Integrations  []Integration `json:"integrations"`
}

// Integration returns the named integration's numbers (zero when it has none).
func (r Report) Integration(name string) Integration {
	for _, i := range r.Integrations {
		if i.Name == name {
			return i
		}
	}
	return Integration{Name: name}
}

// Query is what Read needs: one tenant (zero: all) and the window (zero: DefaultWindow).
type Query struct {
	TenantID uuid.UUID
	Window   time.Duration
	// Now is the end of the window (zero: the database's now()).
	Now time.Time
}

// ForTenant is the health of one tenant's deliveries, for GET /v1/account. The caller has
// already checked that the user is an owner of tenantID (the portal shows it to owners only);
// q is the service pool, since River's table is not readable by the portal role, and every
// query filters by tenantID.
func ForTenant(ctx context.Context, q db.Querier, tenantID uuid.UUID, window time.Duration) (Report, error) {
	if tenantID == uuid.Nil {
		return Report{}, ErrNoTenant
	}
	return Read(ctx, q, Query{TenantID: tenantID, Window: window})
}

// Read computes delivery health for the query.
func Read(ctx context.Context, q db.Querier, in Query) (Report, error) {
	if in.Window == 0 {
		in.Window = DefaultWindow
	}
	if in.Window < time.Minute || in.Window > MaxWindow {
		return Report{}, ErrBadWindow
	}
	if in.Now.IsZero() {
		if err := q.QueryRow(ctx, `select now()`).Scan(&in.Now); err != nil {
			return Report{}, fmt.Errorf("health: read clock: %w", db.Classify(err))
		}
	}
	r := Report{TenantID: in.TenantID, Until: in.Now, Since: in.Now.Add(-in.Window), WindowSeconds: in.Window.Seconds()}
	tenant := tenantArg(in.TenantID)

	err := q.QueryRow(ctx, `
		select count(*),
		       count(*) filter (where outcome = 'processed'),
		       count(*) filter (where outcome = 'ignored'),
		       count(*) filter (where outcome = 'unmatched'),
		       count(*) filter (where outcome = 'refused'),
		       count(*) filter (where outcome = 'processed' and applied_at is null)
		from private.stripe_events
		where received_at >= $1 and received_at <= $2 and ($3::uuid is null or tenant_id = $3)`,
		r.Since, r.Until, tenant).Scan(&r.Webhook.Received, &r.Webhook.Processed, &r.Webhook.Ignored,
		&r.Webhook.Unmatched, &r.Webhook.Refused, &r.Webhook.Unapplied)
	if err != nil {
		return Report{}, fmt.Errorf("health: webhook deliveries: %w", db.Classify(err))
	}
	if in.TenantID == uuid.Nil {
		// Counted per minute: the window's first and last minutes count whole.
		err := q.QueryRow(ctx, `select coalesce(sum(refused), 0)::bigint from private.webhook_rejection_counts
			where minute >= date_trunc('minute', $1::timestamptz) and minute <= $2`,
			r.Since, r.Until).Scan(&r.Webhook.Rejected)
		if err != nil {
			return Report{}, fmt.Errorf("health: rejected deliveries: %w", db.Classify(err))
		}
	}
	r.Webhook.SuccessRate = 1
	if total := r.Webhook.Received + r.Webhook.Rejected; total > 0 {
		r.Webhook.SuccessRate = float64(r.Webhook.Processed+r.Webhook.Ignored) / float64(total)
	}

	for _, k := range jobKinds {
		i, err := readIntegration(ctx, q, k.integration, k.kind, r.Since, r.Until, tenant)
		if err != nil {
			return Report{}, err
		}
		r.Integrations = append(r.Integrations, i)
	}
	return r, nil
}

func readIntegration(ctx context.Context, q db.Querier, integration, kind string, since, until time.Time, tenant *string) (Integration, error) {
	i := Integration{Name: integration}
	var oldest *time.Time
	// A failed attempt leaves an entry in errors (with its time); a successful one completes the
	// job. Pending is every state River will still run.
	err := q.QueryRow(ctx, `
		select
		    coalesce(sum((select count(*) from unnest(j.errors) e
		                  where (e->>'at')::timestamptz between $2 and $3)), 0)::int,
		    count(*) filter (where j.state = 'completed' and j.finalized_at between $2 and $3),
		    count(*) filter (where j.state in ('available', 'pending', 'retryable', 'running', 'scheduled')),
		    min(j.created_at) filter (where j.state in ('available', 'pending', 'retryable', 'running', 'scheduled')),
		    count(*) filter (where j.state in ('discarded', 'cancelled') and not j.metadata ? 'resolved_at')
		from private.river_job j
		where j.kind = $1 and ($4::text is null or j.args->>'tenant_id' = $4)`,
		kind, since, until, tenant).Scan(&i.Failures, &i.Attempts, &i.Pending, &oldest, &i.DeadLetters)
	if err != nil {
		return i, fmt.Errorf("health: %s jobs: %w", integration, db.Classify(err))
	}
	i.Attempts += i.Failures
	if oldest != nil && oldest.Before(until) {
		i.OldestPendingSeconds = until.Sub(*oldest).Seconds()
	}
	err = q.QueryRow(ctx, `
		select count(*) filter (where state = 'failed'), max(last_success_at)
		from private.sync_status
		where integration = $1 and ($2::text is null or tenant_id::text = $2)`,
		integration, tenant).Scan(&i.FailingSubjects, &i.LastSuccessAt)
	if err != nil {
		return i, fmt.Errorf("health: %s sync status: %w", integration, db.Classify(err))
	}
	return i, nil
}

// tenantArg is the tenant filter as a nullable text argument.
func tenantArg(id uuid.UUID) *string {
	if id == uuid.Nil {
		return nil
	}
	s := id.String()
	return &s
}
