// Package health answers "is delivery working?" over a recent window: how Stripe's webhook
// deliveries fared, how many pushes to each integration were attempted and failed, how old the
// oldest waiting job is and how many jobs are dead-lettered. Ops read it as a table
// (`reconcile health`); tenant owners read their own tenant's slice in GET /v1/account
// (ForTenant), so the same numbers answer both.
//
// Two ways to the same numbers: Read recounts from history (the Stripe inbox, River's job
// table, sync status), for ops; ForTenant reads the summary rows that the writes keep (row
// triggers on River's job table, on sync status and on the Stripe inbox, and the webhook's own
// writes: migrations delivery_summary, webhook_delivery_counts and
// delivery_counts_on_the_account), so an owner's
// account page costs the same whatever the tenant's history. A test drives random concurrent
// job transitions and checks that both agree. The package writes nothing but
// RecordRejectedDelivery's rows; listing and requeueing dead letters is the jobs package's.
package health

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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
// q is the service pool, since the tables it reads are not readable by the portal role, and
// every query filters by tenantID.
//
// Unlike Read it computes nothing from history: it reads the rows the writes keep (see the
// migrations delivery_summary and webhook_delivery_counts: private.job_summary,
// private.job_attempts, private.sync_summary, and private.webhook_delivery_buckets: the
// counter table plus the billing account's current bucket), in one
// statement whose every part is an index probe or a range of 5-minute buckets bounded by the
// window, so its cost grows neither with the tenant's history nor with its traffic. Attempts
// and deliveries are kept in 5-minute buckets: the oldest bucket counted is the one holding
// Since, so the counts may reach up to 5 minutes before it. Rejected deliveries have no tenant
// and stay zero.
func ForTenant(ctx context.Context, q db.Querier, tenantID uuid.UUID, window time.Duration) (Report, error) {
	window, err := tenantWindow(tenantID, window)
	if err != nil {
		return Report{}, err
	}
	_, args := ForTenantQuery(tenantID, window)
	rows, err := q.Query(ctx, tenantCall, args...)
	if err != nil {
		return Report{}, fmt.Errorf("health: tenant summary: %w", db.Classify(err))
	}
	return scanTenant(rows, tenantID, window)
}

// tenantWindow checks ForTenant's arguments and defaults the window.
func tenantWindow(tenantID uuid.UUID, window time.Duration) (time.Duration, error) {
	if tenantID == uuid.Nil {
		return 0, ErrNoTenant
	}
	if window == 0 {
		window = DefaultWindow
	}
	if window < time.Minute || window > MaxWindow {
		return 0, ErrBadWindow
	}
	return window, nil
}

// scanTenant reads tenantQuery's rows (one per integration) into a Report, and closes them.
func scanTenant(rows pgx.Rows, tenantID uuid.UUID, window time.Duration) (Report, error) {
	defer rows.Close()
	r := Report{TenantID: tenantID, WindowSeconds: window.Seconds()}
	for rows.Next() {
		var (
			i      Integration
			oldest *time.Time
		)
		if err := rows.Scan(&r.Until, &r.Webhook.Received, &r.Webhook.Processed, &r.Webhook.Ignored,
			&r.Webhook.Unmatched, &r.Webhook.Refused, &r.Webhook.Unapplied, &i.Name, &i.Pending, &i.DeadLetters, &i.Attempts,
			&i.Failures, &i.FailingSubjects, &i.LastSuccessAt, &oldest); err != nil {
			return Report{}, fmt.Errorf("health: tenant summary: %w", db.Classify(err))
		}
		i.Attempts += i.Failures
		if oldest != nil && oldest.Before(r.Until) {
			i.OldestPendingSeconds = r.Until.Sub(*oldest).Seconds()
		}
		r.Integrations = append(r.Integrations, i)
	}
	if err := rows.Err(); err != nil {
		return Report{}, fmt.Errorf("health: tenant summary: %w", db.Classify(err))
	}
	r.Since = r.Until.Add(-window)
	r.Webhook.SuccessRate = 1
	if r.Webhook.Received > 0 {
		r.Webhook.SuccessRate = float64(r.Webhook.Processed+r.Webhook.Ignored) / float64(r.Webhook.Received)
	}
	return r, nil
}

// ForTenantQuery is ForTenant's statement and arguments, for EXPLAIN (the portal's plan check
// and the growth harness print its plan). ForTenant runs it inside private.tenant_health
// (migration portal_read_functions), a PL/pgSQL function that keeps its plan per connection
// instead of planning it on every account read; the function's text is this statement.
func ForTenantQuery(tenantID uuid.UUID, window time.Duration) (string, []any) {
	return tenantQuery, []any{tenantID, window.Seconds(), tenantID.String()}
}

// tenantCall runs tenantQuery with a kept plan.
const tenantCall = `select * from private.tenant_health($1, $2, $3)`

// TenantFunction is the function that holds tenantQuery, for the test that checks its text.
const TenantFunction = "private.tenant_health"

// tenantQuery is ForTenant's one statement ($1 tenant, $2 window in seconds, $3 the tenant as
// River's args spell it): a row per integration, each carrying the window's end and the
// tenant's webhook counts (summed over at most 289 buckets for a day, and the account row's
// current bucket). The oldest waiting job
// is looked up only when a job waits, by a limit-1 probe of river_job_waiting_tenant_idx. The
// window is written with now() in each condition, not taken from a CTE: the planner estimates
// a condition on now() (a stable function) but not one on a CTE's column.
const tenantQuery = `
	with ev as (
	    select coalesce(sum(d.received), 0)::int as received,
	           coalesce(sum(d.processed), 0)::int as processed,
	           coalesce(sum(d.ignored), 0)::int as ignored,
	           coalesce(sum(d.unmatched), 0)::int as unmatched,
	           coalesce(sum(d.refused), 0)::int as refused,
	           coalesce(sum(d.unapplied), 0)::int as unapplied
	    from private.webhook_delivery_buckets d
	    where d.tenant_id = $1
	      and d.bucket >= date_bin('5 minutes', now() - make_interval(secs => $2), timestamptz '2000-01-01 00:00:00+00')
	      and d.bucket <= now())
	select now(), ev.received, ev.processed, ev.ignored, ev.unmatched, ev.refused, ev.unapplied,
	       i.integration, coalesce(j.waiting, 0), coalesce(j.dead, 0),
	       coalesce(a.succeeded, 0), coalesce(a.failed, 0), coalesce(s.failed, 0), s.last_success_at,
	       case when j.waiting > 0 then (
	           select r.created_at from private.river_job r
	           where r.kind = i.kind and r.args->>'tenant_id' = $3
	             and r.state in ('available', 'pending', 'retryable', 'running', 'scheduled')
	           order by r.created_at limit 1) end
	from ev
	cross join (values ('crm', 'crm_sync'), ('helpdesk', 'helpdesk_ticket')) as i (integration, kind)
	left join lateral (
	    select sum(js.waiting)::int as waiting, sum(js.dead)::int as dead
	    from private.job_summary js where js.tenant_id = $1 and js.integration = i.integration
	) j on true
	left join lateral (
	    select sum(ss.failed)::int as failed, max(ss.last_success_at) as last_success_at
	    from private.sync_summary ss where ss.tenant_id = $1 and ss.integration = i.integration
	) s on true
	left join lateral (
	    select sum(b.succeeded)::int as succeeded, sum(b.failed)::int as failed
	    from private.job_attempts b
	    where b.tenant_id = $1 and b.integration = i.integration
	      and b.bucket >= date_bin('5 minutes', now() - make_interval(secs => $2), timestamptz '2000-01-01 00:00:00+00')
	      and b.bucket <= now()
	) a on true
	order by i.integration`

// Read computes delivery health for the query from history: River's jobs (their errors and
// completions), the Stripe inbox and every subject's sync status. It is ops' view (reconcile
// health, any tenant or all of them) and the recount that ForTenant's kept rows are checked
// against; its cost grows with the jobs River keeps, which is fine for an operator's command
// and is why the portal does not call it.
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
	// The tenant as a uuid, never tenant_id::text: a cast column is one no index serves.
	var tenantID *uuid.UUID
	if tenant != nil {
		id := uuid.MustParse(*tenant)
		tenantID = &id
	}
	err = q.QueryRow(ctx, `
		select count(*) filter (where state = 'failed'), max(last_success_at)
		from private.sync_status
		where integration = $1 and ($2::uuid is null or tenant_id = $2)`,
		integration, tenantID).Scan(&i.FailingSubjects, &i.LastSuccessAt)
	if err != nil {
		return i, fmt.Errorf("health: %s sync status: %w", integration, db.Classify(err))
	}
	return i, nil
}

// Rebuild recounts the kept summary of tenantID (uuid.Nil: of every tenant) from history, in
// one statement (private.rebuild_delivery_summary): what ForTenant reads becomes what Read
// would count (jobs waiting and dead, attempts and webhook deliveries per 5-minute bucket over
// the last 8 days, subjects by sync state). For ops after the inbox or River's tables were
// edited with triggers off, and for bulk loads (reconcile rebuild-health). It holds back
// webhook deliveries, job and sync status writes while it runs (for all tenants: every one),
// so it is a repair, not a routine; run it for one tenant where possible.
func Rebuild(ctx context.Context, q db.Querier, tenantID uuid.UUID) error {
	var tenant *uuid.UUID
	if tenantID != uuid.Nil {
		tenant = &tenantID
	}
	if _, err := q.Exec(ctx, `select private.rebuild_delivery_summary($1)`, tenant); err != nil {
		return fmt.Errorf("health: rebuild summary: %w", db.Classify(err))
	}
	return nil
}

// tenantArg is the tenant filter as a nullable text argument.
func tenantArg(id uuid.UUID) *string {
	if id == uuid.Nil {
		return nil
	}
	s := id.String()
	return &s
}

// Check reads one tenant's health twice, for ops deciding whether the kept rows need a
// Rebuild: as the owner sees it (ForTenant, the kept rows) and recounted from history (Read),
// over DefaultWindow. The recount starts where ForTenant's oldest 5-minute bucket starts, so
// the two count the same span and any difference is drift, not the buckets' edge. Agree says
// whether they match (rejections have no tenant and are left out).
func Check(ctx context.Context, q db.Querier, tenantID uuid.UUID) (kept, recount Report, err error) {
	kept, err = ForTenant(ctx, q, tenantID, DefaultWindow)
	if err != nil {
		return Report{}, Report{}, err
	}
	// date_bin's origin (2000-01-01 UTC) is a multiple of 5 minutes from Go's zero time.
	from := kept.Since.Truncate(attemptBucket)
	recount, err = Read(ctx, q, Query{TenantID: tenantID, Now: kept.Until, Window: kept.Until.Sub(from)})
	if err != nil {
		return Report{}, Report{}, err
	}
	return kept, recount, nil
}

// Agree says whether a tenant's kept report and its recount (Check) hold the same numbers.
func Agree(kept, recount Report) bool {
	recount.Webhook.Rejected = 0
	return reflect.DeepEqual(kept.Webhook, recount.Webhook) && reflect.DeepEqual(kept.Integrations, recount.Integrations)
}

// attemptBucket is the width of the kept counters' buckets (private.job_attempts,
// private.webhook_delivery_buckets).
const attemptBucket = 5 * time.Minute
