package crm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// Upserter is what the worker needs from HubSpot: batch upserts of companies (by our tenant
// id) and contacts (by email), and the batch default association of contacts with companies.
// *hubspot.Client is one; tests use it against hubspotfake.
type Upserter interface {
	UpsertCompanies(ctx context.Context, inputs []hubspot.CompanyInput) (hubspot.BatchResult, error)
	UpsertContacts(ctx context.Context, inputs []hubspot.ContactInput) (hubspot.BatchResult, error)
	AssociateContactsWithCompanies(ctx context.Context, pairs []hubspot.Association) ([]error, error)
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

// Pool is what the worker needs from the database: reads of the projection, and the
// transaction that serialises one tenant's pushes and records what HubSpot was sent.
// *pgxpool.Pool is one.
type Pool interface {
	db.Querier
	db.Beginner
}

// Worker is the River worker of crm_sync jobs.
type Worker struct {
	river.WorkerDefaults[jobs.CRMSyncArgs]
	q      db.Querier
	batch  *batcher
	logger *slog.Logger
}

var _ river.Worker[jobs.CRMSyncArgs] = (*Worker)(nil)

// NewWorker builds the worker: projections are read from pool, records sent through hs.
func NewWorker(pool Pool, hs Upserter, logger *slog.Logger) *Worker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{q: pool, logger: logger, batch: &batcher{db: pool, hs: hs, window: BatchWindow, max: MaxBatchSize}}
}

// Work pushes the tenant's current projection: its company (keyed by tenant id) and, once the
// tenant has an email, its contact. A tenant with no email yet (signed up, never checked out,
// no contact email set) gets its company only: there is no contact to key on, nothing is
// broken, and the change that brings an email (checkout, a settings edit) enqueues a new push.
// A deleted tenant is nothing to push.
//
// The job is done only when HubSpot has been sent the version it was queued for or a newer
// one. When the state it read was overtaken before it could be sent (a newer change committed,
// or another push sent a newer version first), it runs again at once (jobs.Again) and reads
// the newest state.
func (w *Worker) Work(ctx context.Context, job *river.Job[jobs.CRMSyncArgs]) error {
	p, err := LoadProjection(ctx, w.q, job.Args.TenantID)
	if errors.Is(err, ErrTenantNotFound) {
		w.logger.InfoContext(ctx, "crm push skipped: tenant deleted", "tenant_id", job.Args.TenantID.String())
		return nil
	}
	if err != nil {
		return err
	}
	if p.Version < job.Args.Version {
		// Never expected: the job is queued in the transaction that saves its version.
		return jobs.Again(fmt.Errorf("projection of tenant %s is at version %d, the job is for %d: %w",
			p.TenantID, p.Version, job.Args.Version, errOvertaken))
	}
	rec := record{
		tenantID: p.TenantID, version: p.Version,
		company: hubspot.CompanyInput{TenantID: p.TenantID.String(), Properties: p.CompanyProperties()},
	}
	if p.Email != "" {
		rec.contact = &hubspot.ContactInput{Email: p.Email, Properties: p.Properties()}
	}
	err = w.batch.upsert(ctx, rec)
	if errors.Is(err, errOvertaken) {
		return jobs.Again(err)
	}
	if err != nil {
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

// record is one job's HubSpot records: the company always, the contact when there is an email,
// read at the projection's version.
type record struct {
	tenantID uuid.UUID
	version  int64
	company  hubspot.CompanyInput
	contact  *hubspot.ContactInput
}

// batcher gathers the records of jobs running at the same moment into one companies call and
// one contacts call, and hands each job its own records' result.
type batcher struct {
	db     db.Beginner
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

// send pushes one batch, one tenant at a time across every process: in one transaction it
// takes each tenant's push lock (so two batches can never be at HubSpot with records of one
// tenant at once, and the last write HubSpot applies is the last one sent), reads the
// tenants' current versions, sends only records that are still current (a record overtaken by
// a newer change fails with errOvertaken: its job reads again), and records the version sent
// per tenant before the locks are released.
//
// Two jobs of one tenant in a batch share its newest record, sent once.
func (b *batcher) send(batch []*request) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	errs := make([]error, len(batch))
	err := db.Tx(ctx, b.db, func(tx pgx.Tx) error {
		newest := newestPerTenant(batch)
		current, err := lockTenants(ctx, tx, slices.Collect(maps.Keys(newest)))
		if err != nil {
			return err
		}
		for i, r := range batch {
			top := batch[newest[r.rec.tenantID]].rec
			if v := current[r.rec.tenantID]; v > top.version {
				errs[i] = fmt.Errorf("record of tenant %s at version %d, the projection is at %d: %w",
					top.tenantID, top.version, v, errOvertaken)
				continue
			}
			if newest[r.rec.tenantID] != i {
				// The tenant's newest record is another job's, at least as new as this job's
				// version: it is sent once and this job takes its result.
				errs[i] = errSharesRecord
			}
		}
		b.push(ctx, batch, errs)
		for i, r := range batch {
			if errs[i] == errSharesRecord {
				errs[i] = errs[newest[r.rec.tenantID]]
			}
		}
		return recordSent(ctx, tx, batch, errs)
	})
	for i, r := range batch {
		if err != nil && errs[i] == nil {
			errs[i] = err
		}
		r.done <- errs[i]
	}
}

// push upserts the batch's companies (the tenants' billing facts), then the contacts of the
// jobs whose company was written (a job whose company failed is retried whole, so its contact
// is not sent twice), then associates each contact with its tenant's company by the record
// ids HubSpot returned. A contact shared by two tenants (one email) is upserted once and
// associated with both companies: it carries nothing tenant-specific, so neither overwrites
// the other.
func (b *batcher) push(ctx context.Context, batch []*request, errs []error) {
	companies := dedupe(batch, errs, func(_ int, r record) (string, hubspot.CompanyInput, bool) {
		return r.company.TenantID, r.company, true
	})
	if len(companies.inputs) == 0 {
		return
	}
	res, err := b.hs.UpsertCompanies(ctx, companies.inputs)
	companyIDs := companies.settle(batch, errs, "companies", res, err)

	contacts := dedupe(batch, errs, func(_ int, r record) (string, hubspot.ContactInput, bool) {
		if r.contact == nil {
			return "", hubspot.ContactInput{}, false
		}
		return strings.ToLower(strings.TrimSpace(r.contact.Email)), *r.contact, true
	})
	if len(contacts.inputs) == 0 {
		return
	}
	res, err = b.hs.UpsertContacts(ctx, contacts.inputs)
	contactIDs := contacts.settle(batch, errs, "contacts", res, err)

	pairs := dedupe(batch, errs, func(i int, r record) (string, hubspot.Association, bool) {
		a := hubspot.Association{ContactID: contactIDs[i], CompanyID: companyIDs[i]}
		return a.ContactID + "/" + a.CompanyID, a, r.contact != nil && a.ContactID != "" && a.CompanyID != ""
	})
	if len(pairs.inputs) == 0 {
		return
	}
	pairErrs, err := b.hs.AssociateContactsWithCompanies(ctx, pairs.inputs)
	res = hubspot.BatchResult{Records: make([]hubspot.RecordResult, len(pairErrs))}
	for i, e := range pairErrs {
		res.Records[i].Err = e
	}
	pairs.settle(batch, errs, "associations", res, err)
}

// newestPerTenant picks, per tenant, the request whose record has the highest version (the
// last one on a tie: read later).
func newestPerTenant(batch []*request) map[uuid.UUID]int {
	out := map[uuid.UUID]int{}
	for i, r := range batch {
		j, ok := out[r.rec.tenantID]
		if !ok || r.rec.version >= batch[j].rec.version {
			out[r.rec.tenantID] = i
		}
	}
	return out
}

// lockTenants takes the push lock of each tenant (in one order, so two batches cannot
// deadlock) and then reads their projections' current versions: after the locks, so a version
// sent by the batch that held them is seen.
func lockTenants(ctx context.Context, tx pgx.Tx, tenants []uuid.UUID) (map[uuid.UUID]int64, error) {
	if _, err := tx.Exec(ctx, `
		select pg_advisory_xact_lock(hashtextextended('crm_push:' || t::text, 0))
		from (select t from unnest($1::uuid[]) t order by t) s`, tenants); err != nil {
		return nil, fmt.Errorf("lock crm pushes: %w", err)
	}
	rows, err := tx.Query(ctx, `
		select b.tenant_id, b.crm_version from private.billing_accounts b where b.tenant_id = any($1)`, tenants)
	if err != nil {
		return nil, fmt.Errorf("read crm versions: %w", err)
	}
	out := map[uuid.UUID]int64{}
	var (
		id uuid.UUID
		v  int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &v}, func() error { out[id] = v; return nil }); err != nil {
		return nil, fmt.Errorf("read crm versions: %w", err)
	}
	return out, nil
}

// recordSent stores, per tenant whose record HubSpot took, the version sent (never lowering
// it), so jobs and reconcile can tell what HubSpot holds.
func recordSent(ctx context.Context, tx pgx.Tx, batch []*request, errs []error) error {
	sent := map[uuid.UUID]int64{}
	for i, r := range batch {
		if v, ok := sent[r.rec.tenantID]; errs[i] == nil && (!ok || r.rec.version > v) {
			sent[r.rec.tenantID] = r.rec.version
		}
	}
	if len(sent) == 0 {
		return nil
	}
	ids, versions := make([]uuid.UUID, 0, len(sent)), make([]int64, 0, len(sent))
	for id, v := range sent {
		ids, versions = append(ids, id), append(versions, v)
	}
	_, err := tx.Exec(ctx, `
		insert into private.crm_pushes (tenant_id, sent_version)
		select s.tenant_id, s.version from unnest($1::uuid[], $2::bigint[]) s (tenant_id, version)
		where exists (select 1 from public.tenants t where t.id = s.tenant_id)
		on conflict (tenant_id) do update
		set sent_version = greatest(private.crm_pushes.sent_version, excluded.sent_version), sent_at = now()`,
		ids, versions)
	if err != nil {
		return fmt.Errorf("record crm versions sent: %w", err)
	}
	return nil
}

// inputs is one object type's deduplicated inputs of a batch; owner[i] is the input of the
// batch's request i (-1: none).
type inputs[T any] struct {
	inputs []T
	owner  []int
}

// dedupe collects one input per key from the requests that have not failed yet.
func dedupe[T any](batch []*request, errs []error, pick func(int, record) (string, T, bool)) inputs[T] {
	out := inputs[T]{owner: make([]int, len(batch))}
	index := map[string]int{}
	for i, r := range batch {
		out.owner[i] = -1
		key, in, ok := pick(i, r.rec)
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

// settle records each request's result of the call that carried its input, and returns the
// HubSpot record id each request's input got ("" when none).
func (in inputs[T]) settle(batch []*request, errs []error, what string, res hubspot.BatchResult, err error) []string {
	ids := make([]string, len(batch))
	for i := range batch {
		j := in.owner[i]
		switch {
		case j < 0:
		case err != nil:
			errs[i] = fmt.Errorf("upsert %d %s: %w", len(in.inputs), what, err)
		case j >= len(res.Records):
			errs[i] = fmt.Errorf("upsert %s: %w", what, errMissingResult)
		default:
			errs[i], ids[i] = res.Records[j].Err, res.Records[j].ObjectID
		}
	}
	return ids
}
