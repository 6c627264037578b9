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

// Upserter is what the worker needs from HubSpot: batch upserts of companies (by our tenant
// id) and contacts (by email). *hubspot.Client is one; tests use it against hubspotfake.
type Upserter interface {
	UpsertCompanies(ctx context.Context, inputs []hubspot.CompanyInput) (hubspot.BatchResult, error)
	UpsertContacts(ctx context.Context, inputs []hubspot.ContactInput) (hubspot.BatchResult, error)
}

var _ Upserter = (*hubspot.Client)(nil)

// Batching defaults: River runs up to jobs.DefaultMaxWorkers crm jobs at once, and the jobs
// that reach the worker within BatchWindow of each other share one HubSpot call per object type.
const (
	BatchWindow  = 25 * time.Millisecond
	MaxBatchSize = hubspot.MaxBatchSize
	// callTimeout bounds the batch's calls; it is not tied to one job's context, because many
	// jobs wait on them.
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

// NewWorker builds the worker: projections are read from q, records sent through hs.
func NewWorker(q db.Querier, hs Upserter, logger *slog.Logger) *Worker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{q: q, logger: logger, batch: &batcher{hs: hs, window: BatchWindow, max: MaxBatchSize}}
}

// Work pushes the tenant's current projection: its company (keyed by tenant id) and, once the
// tenant has an email, its contact. A tenant with no email yet (signed up, never checked out,
// no contact email set) gets its company only: there is no contact to key on, nothing is
// broken, and the change that brings an email (checkout, a settings edit) enqueues a new push.
// A deleted tenant is nothing to push.
func (w *Worker) Work(ctx context.Context, job *river.Job[jobs.CRMSyncArgs]) error {
	p, err := LoadProjection(ctx, w.q, job.Args.TenantID)
	if errors.Is(err, ErrTenantNotFound) {
		w.logger.InfoContext(ctx, "crm push skipped: tenant deleted", "tenant_id", job.Args.TenantID.String())
		return nil
	}
	if err != nil {
		return err
	}
	rec := record{company: hubspot.CompanyInput{TenantID: p.TenantID.String(), Properties: p.CompanyProperties()}}
	if p.Email != "" {
		rec.contact = &hubspot.ContactInput{Email: p.Email, Properties: p.Properties()}
	}
	if err := w.batch.upsert(ctx, rec); err != nil {
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

// record is one job's HubSpot records: the company always, the contact when there is an email.
type record struct {
	company hubspot.CompanyInput
	contact *hubspot.ContactInput
}

// batcher gathers the records of jobs running at the same moment into one companies call and
// one contacts call, and hands each job its own records' result.
type batcher struct {
	hs     Upserter
	window time.Duration
	max    int

	mu      sync.Mutex
	pending []*request
	timer   *time.Timer
}

type request struct {
	rec  record
	done chan error
}

func (b *batcher) upsert(ctx context.Context, rec record) error {
	r := &request{rec: rec, done: make(chan error, 1)}
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

// send upserts the batch's companies, then the contacts of the jobs whose company was written
// (a job whose company failed is retried whole, so its contact is not sent twice). Two jobs of
// one tenant (two Stripe events) carry the same records, which HubSpot refuses to see twice in
// a batch: each is sent once and both jobs get its result (both read the same current
// projection).
func (b *batcher) send(batch []*request) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	errs := make([]error, len(batch))

	companies := dedupe(batch, errs, func(r record) (string, hubspot.CompanyInput, bool) {
		return r.company.TenantID, r.company, true
	})
	res, err := b.hs.UpsertCompanies(ctx, companies.inputs)
	companies.settle(batch, errs, "companies", res, err)

	contacts := dedupe(batch, errs, func(r record) (string, hubspot.ContactInput, bool) {
		if r.contact == nil {
			return "", hubspot.ContactInput{}, false
		}
		return strings.ToLower(strings.TrimSpace(r.contact.Email)), *r.contact, true
	})
	if len(contacts.inputs) > 0 {
		res, err = b.hs.UpsertContacts(ctx, contacts.inputs)
		contacts.settle(batch, errs, "contacts", res, err)
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
}

// inputs is one object type's deduplicated inputs of a batch; owner[i] is the input of the
// batch's request i (-1: none).
type inputs[T any] struct {
	inputs []T
	owner  []int
}

// dedupe collects one input per key from the requests that have not failed yet.
func dedupe[T any](batch []*request, errs []error, pick func(record) (string, T, bool)) inputs[T] {
	out := inputs[T]{owner: make([]int, len(batch))}
	index := map[string]int{}
	for i, r := range batch {
		out.owner[i] = -1
		key, in, ok := pick(r.rec)
		if !ok || errs[i] != nil {
			continue
		}
		j, seen := index[key]
		if !seen {
			j = len(out.inputs)
			index[key] = j
			out.inputs = append(out.inputs, in)
		}
		out.owner[i] = j
	}
	return out
}

// settle records each request's result of the call that carried its input.
func (in inputs[T]) settle(batch []*request, errs []error, what string, res hubspot.BatchResult, err error) {
	for i := range batch {
		j := in.owner[i]
		switch {
		case j < 0:
		case err != nil:
			errs[i] = fmt.Errorf("upsert %d %s: %w", len(in.inputs), what, err)
		case j >= len(res.Records):
			errs[i] = fmt.Errorf("upsert %s: %w", what, errMissingResult)
		default:
			errs[i] = res.Records[j].Err
		}
	}
}
