// Package helpdesk pushes portal tickets to the helpdesk (Zendesk Support): the worker of the
// helpdesk queue. One of our tickets becomes exactly one Zendesk ticket, whatever fails:
//
//   - the create carries our ticket id as external_id and as Zendesk's Idempotency-Key, so a
//     retry within Zendesk's two-hour window replays the first answer;
//   - every attempt after the first looks the ticket up by external_id before creating, so an
//     answer lost to a timeout or a crash (or a retry after the window) adopts the existing
//     Zendesk ticket instead of making a second one. That an attempt came before is known
//     from two records: River's fetch of this job (committed, and flushed, before Work runs),
//     and the ticket's helpdesk_attempted_at, stamped before each create for the jobs that
//     come later (a requeued dead letter). The stamp's commit does not wait for its WAL flush:
//     within the job, the fetch already says it; and a later job of the ticket can exist only
//     once this one is finalized, by a synchronous commit whose flush carries the stamp;
//   - transient failures (network, 5xx, 409, 429) come back as plain errors for the queue's
//     backoff, 429 as jobs.RetryAfter with Zendesk's Retry-After; permanent ones (400, 401,
//     403, 404, 422) as jobs.Permanent with Zendesk's message, and the ticket is marked failed.
//
// Attachments are linked with signed Storage download URLs; a file the user never uploaded is
// listed as such.
package helpdesk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/zendesk"
)

// DefaultLinkTTL is how long an attachment link in a Zendesk ticket works.
const DefaultLinkTTL = 7 * 24 * time.Hour

// Errors of this package.
var (
	// ErrTicketGone means the ticket no longer exists (deleted with its tenant): permanent.
	ErrTicketGone = errors.New("helpdesk: ticket not found")
	// ErrNotFoundAfterAmbiguous means Zendesk may have created the ticket but the lookup does not
	// show it yet: retry, looking it up first again.
	ErrNotFoundAfterAmbiguous = errors.New("helpdesk: ambiguous create, ticket not found by external_id yet")
)

// Helpdesk is what the worker needs from Zendesk (*zendesk.Client is one).
type Helpdesk interface {
	CreateTicket(ctx context.Context, t zendesk.NewTicket, idempotencyKey string) (zendesk.Ticket, error)
	FindByExternalID(ctx context.Context, externalID string) ([]zendesk.Ticket, error)
}

// DownloadSigner signs attachment links (storage.Client is one). A missing object must be an
// error for which IsMissing reports true.
type DownloadSigner interface {
	SignDownload(ctx context.Context, objectPath string, ttl time.Duration) (string, error)
}

var _ Helpdesk = (*zendesk.Client)(nil)

// Options tune a Pusher.
type Options struct {
	// LinkTTL is how long attachment links work (DefaultLinkTTL when zero).
	LinkTTL time.Duration
	// IsMissing tells a missing object apart from an unreachable Storage (e.g.
	// errors.Is(err, storage.ErrNotFound)); nil treats every signing error as transient.
	IsMissing func(error) bool
}

// Pusher creates the helpdesk copy of our tickets.
type Pusher struct {
	pool  *pgxpool.Pool
	desk  Helpdesk
	files DownloadSigner
	opts  Options
}

// NewPusher builds a Pusher on the database of pool.
func NewPusher(pool *pgxpool.Pool, desk Helpdesk, files DownloadSigner, opts Options) *Pusher {
	if opts.LinkTTL <= 0 {
		opts.LinkTTL = DefaultLinkTTL
	}
	if opts.IsMissing == nil {
		opts.IsMissing = func(error) bool { return false }
	}
	return &Pusher{pool: pool, desk: desk, files: files, opts: opts}
}

// Worker works jobs.HelpdeskTicketArgs for River; register it with river.AddWorker.
type Worker struct {
	river.WorkerDefaults[jobs.HelpdeskTicketArgs]
	pusher *Pusher
}

// NewWorker wraps p as the River worker of the helpdesk queue (the dev server and
// support-push register it into river.Workers).
func NewWorker(p *Pusher) *Worker { return &Worker{pusher: p} }

// Work pushes the job's ticket; on the last attempt a transient failure marks it failed too.
func (w *Worker) Work(ctx context.Context, job *river.Job[jobs.HelpdeskTicketArgs]) error {
	// River appends its client to attempted_by at every fetch of the job (a snooze gives the
	// attempt back, but not this), so more than one entry means an earlier attempt ran.
	return w.pusher.Push(ctx, job.Args.TenantID, job.Args.TicketID,
		Attempt{Last: job.Attempt >= job.MaxAttempts, Repeat: len(job.AttemptedBy) > 1})
}

// Attempt is what the queue knows of one attempt at a push.
type Attempt struct {
	// Last: no retry follows, so a transient failure marks the ticket failed too.
	Last bool
	// Repeat: an earlier attempt of the same job ran (and may have created the Zendesk ticket
	// and lost the answer, even if the ticket's attempt stamp was lost with it), so the push
	// looks the ticket up before creating.
	Repeat bool
}

// Push creates the Zendesk ticket of one of ours and records it. The error says what the queue
// should do: nil done, jobs.Permanent stop, jobs.RetryAfter wait, anything else retry.
func (p *Pusher) Push(ctx context.Context, tenantID, ticketID uuid.UUID, a Attempt) error {
	t, err := loadTicket(ctx, p.pool, tenantID, ticketID)
	if errors.Is(err, ErrTicketGone) {
		return jobs.Permanent(err)
	}
	if err != nil {
		return err
	}
	if t.HelpdeskID != nil {
		return nil // already pushed: a repeated job changes nothing
	}
	err = p.push(ctx, t, a.Repeat)
	if err == nil {
		return nil
	}
	var perm *jobs.PermanentError
	if errors.As(err, &perm) || a.Last {
		if ferr := markFailed(ctx, p.pool, t.ID); ferr != nil {
			return errors.Join(err, ferr)
		}
	}
	return err
}

func (p *Pusher) push(ctx context.Context, t ticketRow, repeat bool) error {
	externalID := t.ID.String()
	if t.AttemptedAt != nil || repeat {
		// An earlier attempt may have created it and lost the answer: look before creating.
		if found, err := p.adopt(ctx, t); found || err != nil {
			return err
		}
	}
	nt, err := p.newTicket(ctx, t)
	if err != nil {
		return err
	}
	if err := markAttempted(ctx, p.pool, t.ID); err != nil {
		return err
	}
	created, err := p.desk.CreateTicket(ctx, nt, externalID)
	if err == nil {
		return markSynced(ctx, p.pool, t.ID, created.ID)
	}
	if errors.Is(err, zendesk.ErrIdempotencyKeyReused) || zendesk.IsAmbiguous(err) {
		// Zendesk may hold the ticket already (our key with an earlier body, or a lost answer).
		if found, lerr := p.adopt(ctx, t); found || lerr != nil {
			return lerr
		}
		return fmt.Errorf("%w: %w", ErrNotFoundAfterAmbiguous, err)
	}
	return classify(err)
}

// adopt looks the ticket up by external_id and records the oldest match.
func (p *Pusher) adopt(ctx context.Context, t ticketRow) (bool, error) {
	list, err := p.desk.FindByExternalID(ctx, t.ID.String())
	if err != nil {
		return false, classify(err)
	}
	if len(list) == 0 {
		return false, nil
	}
	oldest := slices.MinFunc(list, func(a, b zendesk.Ticket) int { return cmp.Compare(a.ID, b.ID) })
	return true, markSynced(ctx, p.pool, t.ID, oldest.ID)
}

// classify turns a Zendesk failure into the queue's vocabulary, keeping Zendesk's message.
func classify(err error) error {
	var zerr *zendesk.Error
	if !errors.As(err, &zerr) {
		return fmt.Errorf("push ticket: %w", err)
	}
	up := jobs.Upstream(zerr.StatusCode, zerr.Title, fmt.Errorf("push ticket: %w", err))
	if d, ok := zendesk.RetryAfter(err); ok {
		return jobs.RetryAfter(d, up)
	}
	if zerr.Retryable() {
		return up
	}
	return jobs.Permanent(up)
}

// newTicket renders our ticket as Zendesk's, with links to the uploaded attachments.
func (p *Pusher) newTicket(ctx context.Context, t ticketRow) (zendesk.NewTicket, error) {
	var b strings.Builder
	b.WriteString(t.Body)
	if len(t.Attachments) > 0 {
		b.WriteString("\n\n---\nAttachments:\n")
		for _, a := range t.Attachments {
			link, err := p.files.SignDownload(ctx, a.ObjectPath, p.opts.LinkTTL)
			switch {
			case err == nil:
				fmt.Fprintf(&b, "- %s (%s, %d bytes): %s\n", a.Name, a.ContentType, a.Size, link)
			case p.opts.IsMissing(err):
				fmt.Fprintf(&b, "- %s (%s, %d bytes): not uploaded\n", a.Name, a.ContentType, a.Size)
			default:
				return zendesk.NewTicket{}, fmt.Errorf("sign attachment link: %w", err)
			}
		}
	}
	fmt.Fprintf(&b, "\n---\nPortal account: %s (%s)\n", t.TenantName, t.TenantID)

	nt := zendesk.NewTicket{
		Subject:    t.Subject,
		Body:       b.String(),
		ExternalID: t.ID.String(),
		Tags:       []string{"portal", "tenant_" + t.TenantID.String(), "category_" + t.Category, "source_" + t.Source},
		Priority:   zendesk.Priority(t.Priority),
	}
	if email := t.requesterEmail(); email != "" {
		nt.Requester = zendesk.Requester{Name: t.requesterName(), Email: email}
	}
	return nt, nil
}

type attachmentRow struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	ObjectPath  string `json:"object_path"`
	Size        int64  `json:"size"`
}

type ticketRow struct {
	ID, TenantID                      uuid.UUID
	Subject, Body, Category, Priority string
	Source                            string
	RequesterEmail, RequesterName     *string
	TenantName                        string
	ContactEmail                      *string
	HelpdeskID                        *int64
	AttemptedAt                       *time.Time
	Attachments                       []attachmentRow
}

// requesterEmail is the user's address, or the tenant's contact for system tickets.
func (t ticketRow) requesterEmail() string {
	if t.RequesterEmail != nil && *t.RequesterEmail != "" {
		return *t.RequesterEmail
	}
	if t.ContactEmail != nil {
		return *t.ContactEmail
	}
	return ""
}

func (t ticketRow) requesterName() string {
	if t.RequesterName != nil && *t.RequesterName != "" {
		return *t.RequesterName
	}
	return t.TenantName
}

// loadTicket reads the ticket, its tenant and its attachments in one statement
// (private.helpdesk_ticket, whose plan Postgres keeps per connection).
func loadTicket(ctx context.Context, pool *pgxpool.Pool, tenantID, ticketID uuid.UUID) (ticketRow, error) {
	t := ticketRow{ID: ticketID, TenantID: tenantID}
	err := pool.QueryRow(ctx, `select * from private.helpdesk_ticket($1, $2)`, ticketID, tenantID).
		Scan(&t.Subject, &t.Body, &t.Category, &t.Priority, &t.Source, &t.RequesterEmail, &t.RequesterName,
			&t.TenantName, &t.ContactEmail, &t.HelpdeskID, &t.AttemptedAt, &t.Attachments)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("load ticket %s: %w", ticketID, ErrTicketGone)
	}
	if err != nil {
		return t, fmt.Errorf("load ticket %s: %w", ticketID, err)
	}
	return t, nil
}

// markAttempted stamps the ticket before a create is sent: a later job of the ticket looks it up
// by external_id first. Its commit does not wait for the WAL flush (see the package doc: the
// job's own retries know from River's fetch, and the job's finalizing commit flushes the stamp
// before a later job can exist). At 300 tickets/s on make dev this commit was the pusher's
// largest wait (LWLock:WALWrite and IO:WALSync), queued with the requests' commits on the
// same WAL flushes.
func markAttempted(ctx context.Context, pool *pgxpool.Pool, id uuid.UUID) error {
	if _, err := pool.Exec(ctx, `select private.helpdesk_mark_attempted($1)`, id); err != nil {
		return fmt.Errorf("mark helpdesk attempt of %s: %w", id, err)
	}
	return nil
}

// markSynced records the Zendesk ticket. Its commit does not wait for the WAL flush: the job's
// completion, which River commits after Work returns, waits for it and carries this record
// with it (WAL is flushed in order), and a push whose record a server crash lost is not
// completed either, so it runs again and adopts the Zendesk ticket (the attempt was recorded,
// synchronously, before the create). One statement (private.helpdesk_mark_synced sets
// synchronous_commit for its own transaction).
func markSynced(ctx context.Context, pool *pgxpool.Pool, id uuid.UUID, helpdeskID int64) error {
	if _, err := pool.Exec(ctx, `select private.helpdesk_mark_synced($1, $2)`, id, helpdeskID); err != nil {
		return fmt.Errorf("mark ticket %s synced: %w", id, err)
	}
	return nil
}

func markFailed(ctx context.Context, pool *pgxpool.Pool, id uuid.UUID) error {
	if _, err := pool.Exec(ctx, `update public.tickets set status = 'failed', updated_at = now()
		where id = $1 and helpdesk_ticket_id is null`, id); err != nil {
		return fmt.Errorf("mark ticket %s failed: %w", id, err)
	}
	return nil
}
