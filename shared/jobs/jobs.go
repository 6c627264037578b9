package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/portal-functions/portal-functions/shared/db"
)

// Integrations: one River queue each, so a HubSpot outage never holds up Zendesk pushes. The
// names are also the integration column of private.sync_status.
const (
	// QueueCRM carries crm_sync jobs (HubSpot).
	QueueCRM = "crm"
	// QueueHelpdesk carries helpdesk_ticket jobs (Zendesk).
	QueueHelpdesk = "helpdesk"
	// QueueBilling carries billing_refresh jobs (Stripe reads). It is not a push: its jobs
	// keep no sync status, so the portal's integrations stay the ones a tenant's data goes to.
	QueueBilling = "billing"
)

// Job kinds, as stored in river_job.kind.
const (
	// KindCRMSync pushes one tenant's current projection to the CRM.
	KindCRMSync = "crm_sync"
	// KindHelpdeskTicket pushes one ticket to the helpdesk.
	KindHelpdeskTicket = "helpdesk_ticket"
	// KindBillingRefresh reads one subscription from Stripe and applies it to the projection.
	KindBillingRefresh = "billing_refresh"
)

// CRMSyncArgs asks for the tenant's current billing projection to be pushed to the CRM. It is
// unique per (tenant, source event): the same Stripe event enqueued ten times is one job, while
// a newer event gets its own job (which reads the projection as it is when it runs).
type CRMSyncArgs struct {
	// TenantID is the tenant whose projection is pushed.
	TenantID uuid.UUID `json:"tenant_id" river:"unique"`
	// SourceEvent names what caused the push (a Stripe event id, "reconcile:<run>"...).
	SourceEvent string `json:"source_event" river:"unique"`
	// Version is the projection's crm_version the job was queued for: the job is done only
	// once HubSpot has been sent this version or a newer one. Not part of the unique key.
	Version int64 `json:"version,omitempty"`
}

// Kind implements river.JobArgs.
func (CRMSyncArgs) Kind() string { return KindCRMSync }

// InsertOpts puts the job on the crm queue, unique by its args, with the integration's attempts.
func (CRMSyncArgs) InsertOpts() river.InsertOpts { return insertOpts(QueueCRM) }

// HelpdeskTicketArgs asks for one ticket to be created in the helpdesk; unique per ticket.
type HelpdeskTicketArgs struct {
	// TenantID is the ticket's tenant (for logs, sync status and scoped requeues).
	TenantID uuid.UUID `json:"tenant_id"`
	// TicketID is public.tickets.id, sent to the helpdesk as external_id.
	TicketID uuid.UUID `json:"ticket_id" river:"unique"`
}

// Kind implements river.JobArgs.
func (HelpdeskTicketArgs) Kind() string { return KindHelpdeskTicket }

// InsertOpts puts the job on the helpdesk queue, unique per ticket.
func (HelpdeskTicketArgs) InsertOpts() river.InsertOpts { return insertOpts(QueueHelpdesk) }

// BillingRefreshArgs asks for a subscription to be read from Stripe's API and applied to the
// projection, because two of its events of the same second (Stripe's created has one-second
// resolution) said different things. It is unique per (subscription, tied second) while it is
// pending, scheduled, available, retryable or running: a storm of deliveries of the same tie
// is one request to Stripe. A tie of a later second gets its own job even while one runs,
// because that job's read may have been taken before the later events happened.
type BillingRefreshArgs struct {
	// TenantID is the tenant whose projection the subscription belongs to.
	TenantID uuid.UUID `json:"tenant_id"`
	// SubscriptionID is the Stripe subscription to read.
	SubscriptionID string `json:"subscription_id" river:"unique"`
	// TiedSecond is the created second (Unix) of the events that could not be ordered.
	TiedSecond int64 `json:"tied_second" river:"unique"`
}

// Kind implements river.JobArgs.
func (BillingRefreshArgs) Kind() string { return KindBillingRefresh }

// InsertOpts puts the job on the billing queue. A completed refresh does not block the next
// one (River's default unique states include completed; this list leaves it out).
func (BillingRefreshArgs) InsertOpts() river.InsertOpts {
	o := insertOpts(QueueBilling)
	o.UniqueOpts.ByState = []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
		rivertype.JobStateRetryable, rivertype.JobStateRunning, rivertype.JobStateScheduled}
	return o
}

// insertOpts keeps River's default unique states (every state but cancelled and discarded), so a
// dead-lettered job does not block reconcile from enqueueing the same push again.
func insertOpts(queue string) river.InsertOpts {
	return river.InsertOpts{
		Queue:       queue,
		MaxAttempts: MaxAttempts,
		UniqueOpts:  river.UniqueOpts{ByArgs: true},
	}
}

// CRMSubject is the sync_status subject of a tenant's CRM record.
func CRMSubject(tenantID uuid.UUID) string { return "tenant:" + tenantID.String() }

// TicketSubject is the sync_status subject of a ticket's helpdesk record.
func TicketSubject(ticketID uuid.UUID) string { return "ticket:" + ticketID.String() }

// Inserter enqueues jobs inside the caller's transaction. Safe for concurrent use; build one per
// process.
type Inserter struct {
	client   *river.Client[pgx.Tx]
	onInsert func(ctx context.Context, queue string)
}

// OnInsert makes every enqueue that inserts a job (not a duplicate) call f with the request's
// context and the job's queue, inside the caller's transaction: the nudge package marks the
// request there, and nudges the queue's pusher after the transaction committed. Set it before
// the Inserter is shared.
func (i *Inserter) OnInsert(f func(ctx context.Context, queue string)) { i.onInsert = f }

// NewInserter builds an insert-only River client on pool (it never works jobs).
func NewInserter(pool *pgxpool.Pool) (*Inserter, error) {
	client, err := river.NewClient[pgx.Tx](quietDriver{riverpgxv5.New(pool)}, &river.Config{Schema: Schema})
	if err != nil {
		return nil, fmt.Errorf("river insert client: %w", err)
	}
	return &Inserter{client: client}, nil
}

// quietDriver is River's pgx driver without LISTEN/NOTIFY, for the insert-only client: River
// follows an insert with a pg_notify to wake listening workers, but ours run poll-only
// (Run's PollOnly: Lambda and Supavisor's transaction mode have no listeners), so the notify
// was a statement and a round trip (and a notify-queue lock at commit) that nobody heard.
type quietDriver struct{ *riverpgxv5.Driver }

// SupportsListenNotify tells River not to notify on insert.
func (quietDriver) SupportsListenNotify() bool { return false }

// SupportsListener tells River not to listen.
func (quietDriver) SupportsListener() bool { return false }

// EnqueueCRMSync queues a CRM push of tenantID caused by sourceEvent, for the projection's
// crm_version version (saved in tx), and marks the tenant's CRM sync status pending in the
// same tx. A repeat of the same (tenant, source event) is a no-op, whatever state the first job
// reached (except dead-lettered, which is re-queued).
func (i *Inserter) EnqueueCRMSync(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, sourceEvent string, version int64) error {
	if tenantID == uuid.Nil {
		return fmt.Errorf("enqueue crm sync: %w", ErrNoTenant)
	}
	if sourceEvent == "" {
		return fmt.Errorf("enqueue crm sync for tenant %s: %w", tenantID, ErrNoSourceEvent)
	}
	return i.insert(ctx, tx, CRMSyncArgs{TenantID: tenantID, SourceEvent: sourceEvent, Version: version}, QueueCRM, tenantID, CRMSubject(tenantID))
}

// EnqueueHelpdeskTicket queues the helpdesk push of ticketID, in tx, and marks the ticket's
// helpdesk sync status pending in the same tx. A repeat for the same ticket is a no-op.
func (i *Inserter) EnqueueHelpdeskTicket(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID) error {
	if tenantID == uuid.Nil {
		return fmt.Errorf("enqueue helpdesk ticket: %w", ErrNoTenant)
	}
	if ticketID == uuid.Nil {
		return fmt.Errorf("enqueue helpdesk ticket: %w", ErrNoTicket)
	}
	return i.insert(ctx, tx, HelpdeskTicketArgs{TenantID: tenantID, TicketID: ticketID}, QueueHelpdesk, tenantID, TicketSubject(ticketID))
}

func (i *Inserter) insert(ctx context.Context, tx pgx.Tx, args river.JobArgs, integration string, tenantID uuid.UUID, subject string) error {
	if p, ok := tx.(*db.Pipe); ok {
		return i.deferInsert(ctx, p, args, integration, tenantID, subject)
	}
	res, err := i.client.InsertTx(ctx, tx, args, nil)
	if err != nil {
		return fmt.Errorf("enqueue %s for %s: %w", args.Kind(), subject, err)
	}
	if res.UniqueSkippedAsDuplicate {
		// The first job owns the status: marking it pending again would leave a completed
		// push looking unfinished forever.
		return nil
	}
	if err := markPending(ctx, tx, integration, subject, tenantID); err != nil {
		return fmt.Errorf("enqueue %s for %s: %w", args.Kind(), subject, err)
	}
	if i.onInsert != nil {
		i.onInsert(ctx, integration)
	}
	return nil
}

// markPending records that a push of subject is queued. attempts restarts: it counts the
// attempts at the newest change. A status already pending with no attempt is left as it is
// (as private.river_insert_unique does): a new row version would change nothing.
func markPending(ctx context.Context, tx pgx.Tx, integration, subject string, tenantID uuid.UUID) error {
	const sql = `
		insert into private.sync_status (integration, subject, tenant_id, state, attempts)
		values ($1, $2, $3, 'pending', 0)
		on conflict (integration, subject) do update
		set state = 'pending', attempts = 0, updated_at = now()
		where (sync_status.state, sync_status.attempts) is distinct from ('pending', 0)`
	// Nobody waits for its answer: on a db.Pipe it goes with the transaction's next statement.
	if err := db.Defer(ctx, tx, sql, integration, subject, tenantID); err != nil {
		return fmt.Errorf("mark sync status pending: %w", err)
	}
	return nil
}

// EnqueueBillingRefresh queues a read of subscriptionID from Stripe for tenantID, in tx,
// because its events of the second tied could not be ordered. A repeat while one is pending
// is a no-op.
func (i *Inserter) EnqueueBillingRefresh(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, subscriptionID string, tied time.Time) error {
	if tenantID == uuid.Nil {
		return fmt.Errorf("enqueue billing refresh: %w", ErrNoTenant)
	}
	if subscriptionID == "" {
		return fmt.Errorf("enqueue billing refresh for tenant %s: %w", tenantID, ErrNoSubscription)
	}
	args := BillingRefreshArgs{TenantID: tenantID, SubscriptionID: subscriptionID, TiedSecond: tied.Unix()}
	if p, ok := tx.(*db.Pipe); ok {
		// The webhook's transaction: the job goes with its other writes, without a round trip
		// of its own (a refresh has no sync status; the billing-refresh function's schedule
		// works it).
		return i.deferInsert(ctx, p, args, "", tenantID, subscriptionID)
	}
	if _, err := i.client.InsertTx(ctx, tx, args, nil); err != nil {
		return fmt.Errorf("enqueue billing refresh of %s: %w", subscriptionID, err)
	}
	return nil
}

// PermanentError is a failure no retry can fix (the provider refused the record, the
// credentials are wrong): the job is cancelled at once and lands on the dead-letter list.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent: the job is cancelled now, with err as its last error.
func Permanent(err error) error {
	if err == nil {
		err = errors.New("permanent failure")
	}
	return &PermanentError{Err: err}
}

// AgainError says the job's work is not done yet through no fault of the provider (the record
// it sent was overtaken by a newer one): the job runs again at once (snooze 0), without using
// up an attempt or counting as a failure.
type AgainError struct{ Err error }

func (e *AgainError) Error() string { return "again: " + e.Err.Error() }
func (e *AgainError) Unwrap() error { return e.Err }

// Again asks for the job to run again at once, because err says its work is not finished.
func Again(err error) error {
	if err == nil {
		err = errors.New("not finished")
	}
	return &AgainError{Err: err}
}

// RetryAfterError is a failure the provider told us when to retry (429 Retry-After): the job is
// snoozed for Wait, which does not use up one of its attempts.
type RetryAfterError struct {
	Wait time.Duration
	Err  error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("retry after %s: %v", e.Wait, e.Err)
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter asks for the job to run again after d (at least one second), without counting it
// as a failed attempt.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("rate limited")
	}
	return &RetryAfterError{Wait: max(d, time.Second), Err: err}
}
