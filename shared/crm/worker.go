package crm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// Contacts is what the worker needs from HubSpot: one batch upsert of contacts by email.
// *hubspot.Client is one; tests use it against hubspotfake.
type Contacts interface {
	UpsertContacts(ctx context.Context, inputs []hubspot.ContactInput) (hubspot.BatchResult, error)
}

var _ Contacts = (*hubspot.Client)(nil)

// Batching defaults: River runs up to jobs.DefaultMaxWorkers crm jobs at once, and the jobs
// that reach the worker within BatchWindow of each other share one HubSpot call.
const (
	BatchWindow  = 25 * time.Millisecond
	MaxBatchSize = hubspot.MaxBatchSize
	// callTimeout bounds one batch call; it is not tied to one job's context, because many
	// jobs wait on it.
	callTimeout = 20 * time.Second
)

// Worker is the River worker of crm_sync jobs.
type Worker struct {
	river.WorkerDefaults[jobs.CRMSyncArgs]
	q      db.Querier
	batch  *batcher
	logger *slog.Logger
}

var _ river.Worker[jobs.CRMSyncArgs] = (*Worker)(nil)

// NewWorker builds the worker: projections are read from q, contacts sent through hs.
func NewWorker(q db.Querier, hs Contacts, logger *slog.Logger) *Worker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{q: q, logger: logger, batch: &batcher{hs: hs, window: BatchWindow, max: MaxBatchSize}}
}

// NewWorkers registers the crm worker in a fresh bundle for jobs.Run.
func NewWorkers(q db.Querier, hs Contacts, logger *slog.Logger) *river.Workers {
	ws := river.NewWorkers()
	river.AddWorker(ws, NewWorker(q, hs, logger))
	return ws
}

// Work pushes the tenant's current projection. A tenant with no contact email yet (signed up,
// never checked out, no contact email set) is a success with nothing sent: there is no CRM
// record to key it on, nothing is broken, and the change that brings an email (checkout, a
// settings edit) enqueues a new push. A deleted tenant is also nothing to push.
func (w *Worker) Work(ctx context.Context, job *river.Job[jobs.CRMSyncArgs]) error {
	p, err := LoadProjection(ctx, w.q, job.Args.TenantID)
	if errors.Is(err, ErrTenantNotFound) {
		w.logger.InfoContext(ctx, "crm push skipped: tenant deleted", "tenant_id", job.Args.TenantID.String())
		return nil
	}
	if err != nil {
		return err
	}
	if p.Email == "" {
		w.logger.InfoContext(ctx, "crm push skipped: tenant has no contact email yet", "tenant_id", p.TenantID.String())
		return nil
	}
	if err := w.batch.upsert(ctx, hubspot.ContactInput{Email: p.Email, Properties: p.Properties()}); err != nil {
		return classify(err)
	}
	return nil
}

// classify turns a HubSpot failure into the queue's language: refused for good (400, 401, 403,
// 409...) is permanent, a rate limit with a wait is a snooze, anything else is retried.
func classify(err error) error {
	var he *hubspot.Error
	if errors.As(err, &he) {
		up := jobs.Upstream(he.StatusCode, he.Category, err)
		switch {
		case !he.Retryable():
			return jobs.Permanent(up)
		case he.RetryAfter > 0:
			return jobs.RetryAfter(he.RetryAfter, up)
		default:
			return up
		}
	}
	if errors.Is(err, hubspot.ErrNoAccessToken) || errors.Is(err, hubspot.ErrEmptyID) || errors.Is(err, hubspot.ErrBatchTooLarge) {
		return jobs.Permanent(err)
	}
	return err
}

// batcher gathers the contacts of jobs running at the same moment into one HubSpot call and
// hands each job its own record's result.
type batcher struct {
	hs     Contacts
	window time.Duration
	max    int

	mu      sync.Mutex
	pending []*request
	timer   *time.Timer
}

type request struct {
	in   hubspot.ContactInput
	done chan error
}

func (b *batcher) upsert(ctx context.Context, in hubspot.ContactInput) error {
	r := &request{in: in, done: make(chan error, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, r)
	switch {
	case len(b.pending) >= b.max:
		batch := b.takeLocked()
		b.mu.Unlock()
		go b.send(batch)
	case len(b.pending) == 1:
		b.timer = time.AfterFunc(b.window, b.flush)
		b.mu.Unlock()
	default:
		b.mu.Unlock()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for hubspot batch: %w", ctx.Err())
	}
}

func (b *batcher) flush() {
	b.mu.Lock()
	batch := b.takeLocked()
	b.mu.Unlock()
	if len(batch) > 0 {
		b.send(batch)
	}
}

func (b *batcher) takeLocked() []*request {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	batch := b.pending
	b.pending = nil
	return batch
}

// send makes one call for the batch. Two jobs of one tenant (two Stripe events) carry the same
// contact, which HubSpot refuses to see twice in a batch: it is sent once and both jobs get its
// result (both read the same current projection).
func (b *batcher) send(batch []*request) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	index := map[string]int{}
	var inputs []hubspot.ContactInput
	owners := make([]int, len(batch))
	for i, r := range batch {
		key := strings.ToLower(strings.TrimSpace(r.in.Email))
		j, ok := index[key]
		if !ok {
			j = len(inputs)
			index[key] = j
			inputs = append(inputs, r.in)
		}
		owners[i] = j
	}
	res, err := b.hs.UpsertContacts(ctx, inputs)
	for i, r := range batch {
		switch {
		case err != nil:
			r.done <- fmt.Errorf("upsert %d contacts: %w", len(inputs), err)
		case owners[i] >= len(res.Records):
			r.done <- fmt.Errorf("upsert contact %s: %w", r.in.Email, errMissingResult)
		default:
			r.done <- res.Records[owners[i]].Err
		}
	}
}

// errMissingResult means HubSpot's answer had fewer records than inputs (never expected; the
// job is retried).
var errMissingResult = errors.New("crm: hubspot returned no result for this contact")
