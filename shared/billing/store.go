package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/portal-functions/portal-functions/shared/db"
)

// Enqueuer queues follow-up jobs inside the caller's transaction (shared/jobs.Inserter), so a
// job exists exactly when the change that caused it committed.
type Enqueuer interface {
	EnqueueCRMSync(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, sourceEvent string, version int64) error
	EnqueueHelpdeskTicket(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID) error
	EnqueueBillingRefresh(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, subscriptionID string, tied time.Time) error
}

// Outcome is what became of one delivery: the value of the log line's outcome, of the
// WebhookDeliveries metric's Outcome dimension and (for the stored ones) of
// private.stripe_events.outcome.
type Outcome string

// Delivery outcomes.
const (
	OutcomeProcessed Outcome = "processed" // applied (even if every facet was already newer)
	OutcomeDuplicate Outcome = "duplicate" // this event id was already recorded: nothing done
	OutcomeIgnored   Outcome = "ignored"   // a type we do not act on, recorded
	OutcomeUnmatched Outcome = "unmatched" // no tenant found, recorded for reconcile
	OutcomeRefused   Outcome = "refused"   // claims a tenant without proof (a session we did not create): recorded, never applied
	OutcomeRejected  Outcome = "rejected"  // refused before anything was written (4xx)
	OutcomeFailed    Outcome = "failed"    // our fault or the database's (5xx): Stripe retries
)

// Result says what one event did.
type Result struct {
	Outcome  Outcome
	TenantID uuid.UUID
	// Updated: the projection took the event (at least one facet was older).
	Updated bool
	// CRMSync: the CRM's view changed, and a sync job was queued.
	CRMSync bool
	// Refresh: the event tied with another of the same second that said something else about
	// its subscription, and a read of the subscription from Stripe was queued.
	Refresh bool
	// TicketID is the support ticket opened for a failed payment (uuid.Nil when none).
	TicketID uuid.UUID
	// ClaimedTenant is the client_reference_id of a refused checkout session (for the log).
	ClaimedTenant string
	// UnmatchedApplied counts the customer's stored unmatched events this event applied
	// because it bound the customer to its tenant.
	UnmatchedApplied int
}

// Processor applies verified events to the database, each in one transaction.
type Processor struct {
	db   db.Acquirer
	jobs Enqueuer
}

// NewProcessor builds a Processor on a pool.
func NewProcessor(pool db.Acquirer, jobs Enqueuer) *Processor {
	return &Processor{db: pool, jobs: jobs}
}

// Process records ev and applies it exactly once: in one transaction it claims the event id
// (a repeat is a duplicate and does nothing), resolves the tenant from our own records,
// applies the change to the projection facet by facet, and enqueues the follow-ups. An object
// of the wrong shape is a *DeliveryError and nothing is written.
func (p *Processor) Process(ctx context.Context, ev Event) (Result, error) {
	eff, err := effectFor(ev)
	if err != nil {
		return Result{Outcome: OutcomeRejected}, err
	}
	var (
		res  Result
		seen bool
		pre  prefetch
	)
	customer, rule, subs := "", false, false
	if handled(ev.Type) {
		// The tenant's failure-ticket rule is read only for an event that can open a ticket,
		// its subscriptions only for one that names a subscription.
		customer, rule, subs = eff.customerID, eff.failed != nil, needsSubscriptions(eff.change)
	}
	// One round trip begins, looks the event up and (for an event of a customer we know, the
	// common case) reads and locks the tenant's projection; the writes, the event's record
	// among them, go with the commit.
	err = db.PipeTx(ctx, p.db, func(b *pgx.Batch) {
		pre.queue(b, ev.ID, customer, rule, subs, &seen)
	}, func(tx *db.Pipe) error {
		res = Result{}
		if seen {
			res.Outcome = OutcomeDuplicate
			return nil
		}
		return p.run(ctx, tx, ev, eff, &res, &pre, true)
	})
	if isClaimedMeanwhile(err) {
		// Another delivery of this event committed while this one ran: this one rolled back.
		return Result{Outcome: OutcomeDuplicate}, nil
	}
	if err != nil {
		return Result{Outcome: OutcomeFailed}, fmt.Errorf("process stripe event %s: %w", ev.ID, err)
	}
	return res, nil
}

// isClaimedMeanwhile says err is the primary key of private.stripe_events refusing this
// delivery's record: a delivery of the same event id committed first.
func isClaimedMeanwhile(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "stripe_events_pkey"
}

// ApplyStored applies an event that is already in private.stripe_events but was never applied:
// stored as processed without applied_at (the transaction that recorded it did not get to
// apply it), or unmatched when it arrived and perhaps matching a tenant now. It locks the
// event's row, so a concurrent ApplyStored or live delivery of the same id waits or sees it
// done, then runs exactly what a live delivery runs after claiming the id (tenant
// resolution, projection, follow-up jobs, outcome) in the same transaction. An event already
// applied is OutcomeDuplicate and nothing changes; one still matching no tenant stays
// unmatched. Reconcile repairs stored events through it and no other way.
func (p *Processor) ApplyStored(ctx context.Context, eventID string) (Result, error) {
	var res Result
	txErr := db.PipeTx(ctx, p.db, nil, func(tx *db.Pipe) error {
		res = Result{}
		ev, applied, err := lockStored(ctx, tx, eventID)
		switch {
		case err != nil:
			return err
		case applied:
			res.Outcome = OutcomeDuplicate
			return nil
		}
		eff, err := effectFor(ev)
		if err != nil {
			return err
		}
		return p.run(ctx, tx, ev, eff, &res, &prefetch{}, false)
	})
	if txErr != nil {
		return Result{Outcome: OutcomeFailed}, fmt.Errorf("apply stored stripe event %s: %w", eventID, txErr)
	}
	return res, nil
}

// lockStored reads a stored event from the verified bytes Stripe signed, locking its row until
// the transaction ends; applied says it was applied already.
func lockStored(ctx context.Context, tx pgx.Tx, eventID string) (Event, bool, error) {
	var (
		payload []byte
		applied bool
	)
	err := tx.QueryRow(ctx, `
		select coalesce(raw_payload, convert_to(payload::text, 'UTF8')), applied_at is not null
		from private.stripe_events where id = $1 for update`, eventID).Scan(&payload, &applied)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Event{}, false, ErrEventNotStored
	case err != nil:
		return Event{}, false, fmt.Errorf("lock stored stripe event: %w", err)
	}
	ev, err := ParseEvent(payload)
	if err != nil {
		return Event{}, false, err
	}
	if ev.ID != eventID {
		return Event{}, false, refuse(ErrMalformedEvent, fmt.Errorf("stored payload carries event id %q", ev.ID))
	}
	return ev, applied, nil
}

// applyUnmatched applies, in the caller's transaction and in Stripe's order, the stored
// unmatched events of a customer that was just bound to a tenant: they arrived before
// anything said whose they were, and now run exactly as a live delivery would. One indexed
// query, run only when a mapping is new.
func (p *Processor) applyUnmatched(ctx context.Context, tx *db.Pipe, customerID, current string) (int, error) {
	rows, err := tx.Query(ctx, `
		select id from private.stripe_events
		where outcome = 'unmatched' and customer_id = $1 and id <> $2
		order by created, id`, customerID, current)
	if err != nil {
		return 0, fmt.Errorf("find unmatched events of the customer: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("find unmatched events of the customer: %w", err)
	}
	n := 0
	for _, id := range ids {
		ev, applied, err := lockStored(ctx, tx, id)
		if err != nil {
			return 0, fmt.Errorf("apply unmatched event %s: %w", id, err)
		}
		if applied {
			continue // a concurrent apply got there first
		}
		eff, err := effectFor(ev)
		if err != nil {
			return 0, fmt.Errorf("apply unmatched event %s: %w", id, err)
		}
		var res Result
		if err := p.run(ctx, tx, ev, eff, &res, &prefetch{}, false); err != nil {
			return 0, fmt.Errorf("apply unmatched event %s: %w", id, err)
		}
		n++
	}
	return n, nil
}

// effectFor decodes the effect of a handled event (the zero effect for another type).
func effectFor(ev Event) (effect, error) {
	if !handled(ev.Type) {
		return effect{}, nil
	}
	return effectOf(ev)
}

// run is what applying an event means, whether a live delivery found it new or ApplyStored
// locked it in the inbox: resolve the tenant, apply, queue the follow-ups, and record the
// outcome (live: the event's record, written now with its outcome; stored: its row updated).
// Both paths call it inside their one transaction.
func (p *Processor) run(ctx context.Context, tx *db.Pipe, ev Event, eff effect, res *Result, pre *prefetch, live bool) error {
	var held *heldSave // a live event's record takes its save of the account along
	if live {
		held = &heldSave{}
	}
	done := func() error { return finish(ctx, tx, ev, eff.customerID, *res, held) }
	if !handled(ev.Type) {
		res.Outcome = OutcomeIgnored
		return done()
	}
	tenantID, found, bound, err := resolveTenant(ctx, tx, eff, pre)
	if err != nil {
		return err
	}
	if bound {
		if res.UnmatchedApplied, err = p.applyUnmatched(ctx, tx, eff.customerID, ev.ID); err != nil {
			return err
		}
	}
	if !found && eff.clientReferenceID != "" {
		// A checkout session naming a tenant that neither we created nor our key's metadata
		// backs: a Payment Link or Pricing Table payer can write any tenant's id there.
		claimed, err := existingTenant(ctx, tx, eff.clientReferenceID)
		if err != nil {
			return err
		}
		if claimed != uuid.Nil {
			res.Outcome, res.ClaimedTenant = OutcomeRefused, eff.clientReferenceID
			return done()
		}
	}
	if !found {
		res.Outcome = OutcomeUnmatched
		return done()
	}
	res.Outcome, res.TenantID = OutcomeProcessed, tenantID
	if err := p.apply(ctx, tx, ev, eff, res, pre, held); err != nil {
		return err
	}
	return done()
}

// apply writes the event's change to the tenant's locked projection row and queues what the
// change calls for: a refresh from Stripe when it ties with another event of its second, a
// CRM push when the CRM's view changed. A save the event's record can make goes into held
// when it is not nil (see saveAccount).
func (p *Processor) apply(ctx context.Context, tx *db.Pipe, ev Event, eff effect, res *Result, pre *prefetch, held *heldSave) error {
	before, err := pre.lockedAccount(ctx, tx, res.TenantID, needsSubscriptions(eff.change))
	if err != nil {
		return err
	}
	if c := eff.change; before.Tied(c) {
		if err := p.jobs.EnqueueBillingRefresh(ctx, tx, res.TenantID, c.SubscriptionID, c.Stamp.Created); err != nil {
			return fmt.Errorf("enqueue billing refresh: %w", err)
		}
		res.Refresh = true
	}
	after, err := project(ctx, tx, p.jobs, before, eff.change, ev.ID, res, held)
	if err != nil {
		return err
	}
	if eff.failed == nil || after.LastInvoiceID == eff.failed.InvoiceID {
		// No failure, or the invoice is already known to be paid (the events came out of order).
		return nil
	}
	ticketID, err := openFailureTicket(ctx, tx, res.TenantID, *eff.failed, pre.ruleOf(res.TenantID))
	if err != nil || ticketID == uuid.Nil {
		return err
	}
	if err := p.jobs.EnqueueHelpdeskTicket(ctx, tx, res.TenantID, ticketID); err != nil {
		return fmt.Errorf("enqueue helpdesk ticket: %w", err)
	}
	res.TicketID = ticketID
	return nil
}

// project applies c to the locked account before, saves what changed and queues a CRM push
// (caused by source) when the CRM's view changed; res.Updated and res.CRMSync say which
// happened. The webhook and the refresh worker apply changes through it alone. held, when not
// nil, takes a save the event's record can make instead of the transaction (saveAccount).
func project(ctx context.Context, tx pgx.Tx, q Enqueuer, before Account, c Change, source string, res *Result, held *heldSave) (Account, error) {
	after, changed := before.Apply(c)
	if !changed {
		return after, nil
	}
	crmChanged := !after.CRMView().Equal(before.CRMView())
	if crmChanged {
		// saveAccount raises the row's crm_version by one (pipelined, not read back): the
		// locked row's version plus one is the version this change makes, and the job is
		// queued for it. after carries it, so a change applied next in this transaction (an
		// unmatched backlog) counts on from it.
		after.CRMVersion = before.CRMVersion + 1
	}
	err := saveAccount(ctx, tx, before, after, c.SubscriptionID, crmChanged, held)
	if err != nil {
		return after, err
	}
	res.Updated = true
	if crmChanged {
		if err := q.EnqueueCRMSync(ctx, tx, before.TenantID, source, after.CRMVersion); err != nil {
			return after, fmt.Errorf("enqueue crm sync: %w", err)
		}
		res.CRMSync = true
	}
	return after, nil
}

// prefetch is what the first round trip reads (private.webhook_claim_account_rows): whether the event is
// already recorded, and for an event of a known customer the projection of the tenant the
// customer maps to, locked, with its subscriptions (read after the lock, so as the previous
// holder of the lock left them) and, for an event that can open a ticket, the tenant's
// failure-ticket rule. The row's
// tenant is the customer's mapping, which lookupTenant reads first and which always wins;
// when there is no row (no mapping, or the tenant's first event), the delivery resolves and
// locks as usual.
type prefetch struct {
	customer string
	account  Account // the mapped tenant's projection, locked, when locked
	locked   bool
	subsRead bool // the claim read the account's subscriptions
	rule     tenantRule
	ruleRead bool // the claim read rule
}

// tenantRule is a tenant's failure-ticket rule (public.tenants).
type tenantRule struct {
	ticketOnFailure bool
	contactEmail    *string
}

// queue adds the claim's reads to the first batch; seen says the event is already recorded.
// With no customer only the event is looked up; the tenant's rule is read when rule is set,
// the account's subscriptions when subs is.
// The claim returns the account and its subscriptions as whole row values (a record and an
// array of records inside its record), read with the connection's type map.
func (pre *prefetch) queue(b *pgx.Batch, eventID, customerID string, rule, subs bool, seen *bool) {
	pre.customer = customerID
	customer := pgtype.Text{String: customerID, Valid: customerID != ""}
	b.Queue(`select private.webhook_claim_account_rows($1, $2, $3, $4)`, eventID, customer, rule, subs).Query(func(rows pgx.Rows) error {
		if err := pre.scanClaim(rows, rule, subs, seen); err != nil {
			return fmt.Errorf("claim stripe event: %w", err)
		}
		return nil
	})
}

// scanClaim reads the claim's one row.
func (pre *prefetch) scanClaim(rows pgx.Rows, rule, subsRead bool, seen *bool) error {
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	var (
		onFailure     pgtype.Bool
		account, subs pgtype.UndecodedBytes
	)
	err := rows.Scan(pgtype.CompositeFields{seen, &onFailure, &pre.rule.contactEmail, &account, &subs})
	if err != nil || *seen || account == nil {
		return err
	}
	m := rows.Conn().TypeMap()
	a, found, err := scanAccountRow(rowValue{m, account})
	if err != nil || !found {
		return err
	}
	var states pgtype.FlatArray[subscriptionRecord]
	if subs != nil {
		if err := m.Scan(pgtype.RecordArrayOID, pgtype.BinaryFormatCode, subs, &states); err != nil {
			return fmt.Errorf("read billing subscriptions: %w", err)
		}
	}
	a.Subscriptions = make(map[string]SubscriptionState, len(states))
	for i := range states {
		s := states[i].state()
		a.Subscriptions[s.ID] = s
	}
	pre.account, pre.locked, pre.subsRead = a, true, subsRead
	pre.rule.ticketOnFailure = onFailure.Valid && onFailure.Bool
	pre.ruleRead = rule
	return nil
}

// rowValue reads a row value (a table's composite, sent in a record's binary form) as if its
// fields were a row's columns: the claim sends the account whole, so Postgres builds one
// value instead of a column per field.
type rowValue struct {
	m   *pgtype.Map
	src []byte
}

func (r rowValue) Scan(dest ...any) error {
	return r.m.Scan(pgtype.RecordOID, pgtype.BinaryFormatCode, r.src, pgtype.CompositeFields(dest))
}

// subscriptionRecord is one subscription's registers, read from its row value
// (private.billing_subscriptions' columns in the table's order: subscriptionColumns) or from
// a row of subscriptionsQuery.
type subscriptionRecord struct {
	id, price, plan, planEvent, status, statusEvent pgtype.Text
	periodEnd, planCreated, statusCreated           pgtype.Timestamptz
	cancel                                          pgtype.Bool
}

// dests are the destinations of subscriptionColumns' fields (nil: not read).
func (s *subscriptionRecord) dests() [11]any {
	return [11]any{nil, &s.id, &s.price, &s.plan, &s.periodEnd, &s.cancel, &s.planCreated, &s.planEvent,
		&s.status, &s.statusCreated, &s.statusEvent}
}

// ScanIndex and ScanNull make a subscriptionRecord an element pgx reads a record array into.
func (s *subscriptionRecord) ScanIndex(i int) any {
	if d := s.dests(); i < len(d) {
		return d[i]
	}
	return nil
}

// ScanNull refuses a null element: array_agg of rows has none.
func (s *subscriptionRecord) ScanNull() error {
	return errors.New("null billing subscription row")
}

func (s *subscriptionRecord) state() SubscriptionState {
	return SubscriptionState{
		ID: s.id.String, PriceID: s.price.String, Plan: s.plan.String, CurrentPeriodEnd: timeOf(s.periodEnd),
		CancelAtPeriodEnd: s.cancel.Valid && s.cancel.Bool,
		PlanStamp:         stampCols{s.planCreated, s.planEvent}.stamp(),
		Status:            s.status.String,
		StatusStamp:       stampCols{s.statusCreated, s.statusEvent}.stamp(),
	}
}

// ruleOf is the failure-ticket rule of tenantID when the claim read it (nil otherwise).
func (pre *prefetch) ruleOf(tenantID uuid.UUID) *tenantRule {
	if pre.locked && pre.ruleRead && pre.account.TenantID == tenantID {
		return &pre.rule
	}
	return nil
}

// lockedAccount is lockAccount, answered from the prefetch when it read this tenant's row (and
// its subscriptions, when subs says the change needs them).
func (pre *prefetch) lockedAccount(ctx context.Context, tx *db.Pipe, tenantID uuid.UUID, subs bool) (Account, error) {
	if pre.locked && pre.account.TenantID == tenantID && (pre.subsRead || !subs) {
		return pre.account, nil
	}
	return lockAccount(ctx, tx, tenantID)
}

// finish records what became of the event: its outcome and tenant, applied_at when it was
// applied, and crm_sync (whether a CRM push was queued for it, which reconcile reads to tell a
// missing push from a change the CRM does not show). A live delivery writes the event's record
// here, once, with its outcome: the primary key makes it the claim too (a delivery of the same
// id that committed first fails this one, which rolls back: isClaimedMeanwhile). The record keeps
// the verified bytes once (raw_payload) and the event's customer (customer_id, which
// applyUnmatched looks up). A stored event's locked row is updated. held is not nil for a live
// delivery: when it holds a save of the account, the record and the save are one call.
// It is deferred: it goes to the database with the commit.
func finish(_ context.Context, tx *db.Pipe, ev Event, customerID string, res Result, held *heldSave) error {
	tenant := pgtype.UUID{Bytes: res.TenantID, Valid: res.TenantID != uuid.Nil}
	switch {
	case held != nil && held.args != nil && tenant.Valid:
		tx.DeferCall(held.fn, nil, nil, append([]any{
			ev.ID, ev.Type, textOrNull(ev.APIVersion), ev.Created, ev.Livemode, textOrNull(customerID), ev.Payload,
			string(res.Outcome), tenant, res.CRMSync}, held.args...)...)
	case held != nil && held.args != nil:
		return errors.New("record stripe event: an account save without a tenant")
	case held != nil:
		tx.DeferCall("private.record_stripe_event", nil, nil,
			ev.ID, ev.Type, ev.APIVersion, ev.Created, ev.Livemode, customerID, ev.Payload,
			string(res.Outcome), tenant, res.CRMSync)
	default:
		tx.Defer(`
		update private.stripe_events
		set outcome = $2, tenant_id = $3, applied_at = case when $2 = 'processed' then now() end, crm_sync = $4
		where id = $1`, ev.ID, string(res.Outcome), tenant, res.CRMSync)
	}
	return nil
}

// ResolveTenant says which tenant a Stripe event belongs to now, reading only: the same rules
// as a live delivery (see resolveTenant), without recording the customer's mapping. uuid.Nil
// when none matches or the type is not one the webhook acts on. Reconcile uses it to decide
// what is in a run's scope and what a dry run would do.
func ResolveTenant(ctx context.Context, q db.Querier, payload []byte) (uuid.UUID, error) {
	ev, err := ParseEvent(payload)
	if err != nil {
		return uuid.Nil, err
	}
	if !handled(ev.Type) {
		return uuid.Nil, nil
	}
	eff, err := effectOf(ev)
	if err != nil {
		return uuid.Nil, err
	}
	id, _, err := lookupTenant(ctx, q, eff)
	return id, err
}

// resolveTenant finds the event's tenant from our own records only, never from an email, and
// records the customer's mapping when the tenant came from a checkout session we created or
// from metadata our key wrote (so later events of that customer find it); bound says this
// call recorded it.
func resolveTenant(ctx context.Context, tx *db.Pipe, eff effect, pre *prefetch) (id uuid.UUID, found, bound bool, err error) {
	if pre.locked && pre.customer == eff.customerID {
		// The customer's mapping, read with the claim: an existing mapping wins.
		return pre.account.TenantID, true, false, nil
	}
	id, record, err := lookupTenant(ctx, tx, eff)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, false, false, err
	}
	if record {
		if bound, err = mapCustomer(ctx, tx, eff.customerID, id); err != nil {
			return uuid.Nil, false, false, err
		}
	}
	return id, true, bound, nil
}

// lookupTenant decides the event's tenant, reading only: our customer mapping first (an
// existing mapping is never overridden); else the tenant checkout-create recorded for the
// checkout session; else metadata.tenant_id of the object, if that tenant exists (only our API
// key writes it: checkout-create on the customer, the session and the subscription). A
// session's client_reference_id is never enough: the payer of a Payment Link sets it. record
// says the customer's mapping should be written for the tenant found.
func lookupTenant(ctx context.Context, q db.Querier, eff effect) (tenantID uuid.UUID, record bool, err error) {
	if eff.customerID != "" {
		var id uuid.UUID
		err := q.QueryRow(ctx, `select tenant_id from private.stripe_customers where customer_id = $1`, eff.customerID).Scan(&id)
		switch {
		case err == nil:
			return id, false, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return uuid.Nil, false, fmt.Errorf("look up stripe customer: %w", err)
		}
	}
	if eff.sessionID != "" {
		var id uuid.UUID
		err := q.QueryRow(ctx, `select tenant_id from private.checkout_sessions where session_id = $1`, eff.sessionID).Scan(&id)
		switch {
		case err == nil:
			return id, eff.customerID != "", nil
		case !errors.Is(err, pgx.ErrNoRows):
			return uuid.Nil, false, fmt.Errorf("look up checkout session: %w", err)
		}
	}
	id, err := existingTenant(ctx, q, eff.metadataTenant)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, false, err
	}
	return id, eff.customerID != "", nil
}

// existingTenant parses s as a tenant id and checks the tenant exists (uuid.Nil otherwise).
func existingTenant(ctx context.Context, q db.Querier, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if s == "" || err != nil || id == uuid.Nil {
		return uuid.Nil, nil
	}
	var exists bool
	if err := q.QueryRow(ctx, `select exists (select 1 from public.tenants where id = $1)`, id).Scan(&exists); err != nil {
		return uuid.Nil, fmt.Errorf("look up tenant: %w", err)
	}
	if !exists {
		return uuid.Nil, nil
	}
	return id, nil
}

// mapCustomerSQL records that $1 (a Stripe customer) belongs to tenant $2; an existing
// mapping is kept.
const mapCustomerSQL = `
		insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)
		on conflict (customer_id) do nothing`

// mapCustomer records that customerID belongs to tenantID; an existing mapping is kept.
// recorded says the mapping is new.
func mapCustomer(ctx context.Context, q db.Querier, customerID string, tenantID uuid.UUID) (recorded bool, err error) {
	tag, err := q.Exec(ctx, mapCustomerSQL, customerID, tenantID)
	if err != nil {
		return false, fmt.Errorf("record stripe customer: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// accountColumns are the projection's columns, all of them in the table's order: the fields
// of its row value, which private.webhook_claim_account_rows returns whole, are the same
// (TestClaimReadsTheTablesColumnsInOrder). scanAccountRow reads them in this order.
const accountColumns = `tenant_id, customer_id, customer_email, subscription_id, price_id, plan, status,
	current_period_end, cancel_at_period_end, last_payment_at, last_payment_amount, last_payment_currency,
	last_invoice_id, last_failure_at, last_failure_reason, source_event_created, source_event_id,
	created_at, updated_at, customer_event_created, customer_event_id, email_event_created, email_event_id,
	subscription_event_created, subscription_event_id, status_event_created, status_event_id,
	payment_event_created, payment_event_id, failure_event_created, failure_event_id,
	last_failure_invoice_id, crm_version, delivery_bucket, bucket_deliveries, rolled_bucket, rolled_deliveries`

// subscriptionColumns are private.billing_subscriptions' columns in the table's order, the
// fields of its row value (subscriptionRecord.dests).
const subscriptionColumns = `tenant_id, subscription_id, price_id, plan, current_period_end, cancel_at_period_end,
	plan_event_created, plan_event_id, status, status_event_created, status_event_id`

// lockAccount returns the tenant's projection row, creating it, locked until the transaction
// ends so events of one tenant apply one at a time. Its three statements go in one round trip
// (on a db.Pipe, with whatever was deferred before them); the read of the subscriptions comes
// after the lock, so it sees them as the previous holder of the lock left them.
func lockAccount(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) (Account, error) {
	var a Account
	b := &pgx.Batch{}
	b.Queue(`insert into private.billing_accounts (tenant_id) values ($1) on conflict (tenant_id) do nothing`, tenantID)
	b.Queue(`select `+accountColumns+` from private.billing_accounts where tenant_id = $1 for update`, tenantID).
		QueryRow(func(row pgx.Row) error {
			var err error
			if a, err = scanAccount(row); err != nil {
				return fmt.Errorf("lock billing account: %w", err)
			}
			return nil
		})
	// The account's lock covers its subscriptions: only a holder of it writes them.
	b.Queue(subscriptionsQuery+`$1`, tenantID).Query(func(rows pgx.Rows) error {
		var err error
		a.Subscriptions, err = collectSubscriptions(rows)
		return err
	})
	if err := db.SendBatch(ctx, tx, b); err != nil {
		return Account{}, err
	}
	return a, nil
}

// LoadAccount reads a tenant's projection (portal reads and tests); pgx.ErrNoRows when the
// tenant has none yet.
func LoadAccount(ctx context.Context, q db.Querier, tenantID uuid.UUID) (Account, error) {
	a, err := scanAccount(q.QueryRow(ctx, `select `+accountColumns+` from private.billing_accounts where tenant_id = $1`, tenantID))
	if err != nil {
		return Account{}, fmt.Errorf("load billing account: %w", err)
	}
	if a.Subscriptions, err = loadSubscriptions(ctx, q, tenantID); err != nil {
		return Account{}, err
	}
	return a, nil
}

// subscriptionsQuery reads the registers of a tenant's subscriptions; the tenant follows.
const subscriptionsQuery = `
		select subscription_id, price_id, plan, current_period_end, cancel_at_period_end,
			plan_event_created, plan_event_id, status, status_event_created, status_event_id
		from private.billing_subscriptions where tenant_id = `

// loadSubscriptions reads the registers of every subscription of the tenant.
func loadSubscriptions(ctx context.Context, q db.Querier, tenantID uuid.UUID) (map[string]SubscriptionState, error) {
	rows, err := q.Query(ctx, subscriptionsQuery+`$1`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("load billing subscriptions: %w", err)
	}
	return collectSubscriptions(rows)
}

// collectSubscriptions reads the rows of subscriptionsQuery.
func collectSubscriptions(rows pgx.Rows) (map[string]SubscriptionState, error) {
	subs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SubscriptionState, error) {
		var s subscriptionRecord
		d := s.dests()
		err := row.Scan(d[1:]...) // subscriptionsQuery leaves out the tenant
		return s.state(), err
	})
	if err != nil {
		return nil, fmt.Errorf("load billing subscriptions: %w", err)
	}
	out := make(map[string]SubscriptionState, len(subs))
	for _, s := range subs {
		out[s.ID] = s
	}
	return out, nil
}

func scanAccount(row pgx.Row) (Account, error) {
	a, found, err := scanAccountRow(row)
	if err == nil && !found {
		err = errors.New("billing account row without a tenant")
	}
	return a, err
}

// scanAccountRow reads accountColumns; found is false when the tenant is null.
func scanAccountRow(row pgx.Row) (Account, bool, error) {
	var (
		a                                                 Account
		tenant                                            pgtype.UUID
		customer, email, sub, price, plan, status, payCur pgtype.Text
		invoice, failReason, failInvoice                  pgtype.Text
		periodEnd, paidAt, failedAt                       pgtype.Timestamptz
		amount, crmVersion                                pgtype.Int8
		cancel                                            pgtype.Bool
		cust, mail, subs, stat, pay, fail, source         stampCols
	)
	err := row.Scan(&tenant, &customer, &email, &sub, &price, &plan, &status,
		&periodEnd, &cancel, &paidAt, &amount, &payCur,
		&invoice, &failedAt, &failReason, &source.created, &source.id,
		nil, nil, &cust.created, &cust.id, &mail.created, &mail.id, // created_at, updated_at
		&subs.created, &subs.id, &stat.created, &stat.id,
		&pay.created, &pay.id, &fail.created, &fail.id,
		&failInvoice, &crmVersion,
		nil, nil, nil, nil) // the webhook health's current bucket (private.record_stripe_event_with_facets)
	if err != nil || !tenant.Valid {
		return Account{}, false, err
	}
	a.TenantID = tenant.Bytes
	a.CustomerID, a.CustomerStamp = customer.String, cust.stamp()
	a.CustomerEmail, a.EmailStamp = email.String, mail.stamp()
	a.SubscriptionID, a.PriceID, a.Plan, a.CurrentPeriodEnd = sub.String, price.String, plan.String, timeOf(periodEnd)
	a.CancelAtPeriodEnd = cancel.Valid && cancel.Bool
	a.SubscriptionStamp = subs.stamp()
	a.Status, a.StatusStamp = status.String, stat.stamp()
	a.LastPaymentAt, a.LastPaymentCurrency, a.LastInvoiceID = timeOf(paidAt), payCur.String, invoice.String
	a.LastPaymentAmount, a.CRMVersion = amount.Int64, crmVersion.Int64 // zero when null
	a.PaymentStamp = pay.stamp()
	a.LastFailureAt, a.LastFailureReason, a.LastFailureInvoiceID = timeOf(failedAt), failReason.String, failInvoice.String
	a.FailureStamp = fail.stamp()
	a.SavedSource = source.stamp()
	return a, true, nil
}

// saveAccount writes the registers of the subscription the change touched (none when
// touched is empty), then the facets of a with their stamps, and the newest stamp as the row's
// source. When crmChanged (what the CRM shows changed), the row's crm_version goes up by one in
// the same statement. before is the locked row as it is. When held is not nil the save may be
// left in it for the event's record to make (finish: one PL/pgSQL call instead of two or
// three, each with its search_path set and restored):
//   - a touched register that a shows, with the email, payment and failure facets as before
//     has them (showsSubscription, keepsInvoiceFacets): the register, the customer facet, the
//     subscription facet and status, the source and crm_version
//     (private.record_stripe_event_with_subscription);
//   - otherwise, when a keeps its subscription facet and status (keepsSubscription), the
//     register is saved on its own and only the other facets are written
//     (private.save_billing_invoice_facets, or with the record
//     private.record_stripe_event_with_facets).
//
// Otherwise the whole row is written. On a db.Pipe the writes are deferred: they go with the
// next statement or the commit, in one statement with the delivery's other writes
// (db.Pipe.DeferCall). All are PL/pgSQL functions, whose plans Postgres keeps.
func saveAccount(ctx context.Context, tx pgx.Tx, before, a Account, touched string, crmChanged bool, held *heldSave) error {
	src := a.Source()
	if s, ok := a.Subscriptions[touched]; ok {
		if held != nil && showsSubscription(a, s) && keepsInvoiceFacets(before, a) {
			held.fn, held.args = "private.record_stripe_event_with_subscription", []any{
				textOrNull(a.CustomerID), stampTime(a.CustomerStamp), textOrNull(a.CustomerStamp.EventID),
				s.ID, textOrNull(s.PriceID), textOrNull(s.Plan), timeOrNil(s.CurrentPeriodEnd), s.CancelAtPeriodEnd,
				stampTime(s.PlanStamp), textOrNull(s.PlanStamp.EventID),
				textOrNull(s.Status), stampTime(s.StatusStamp), textOrNull(s.StatusStamp.EventID),
				stampTime(src), textOrNull(src.EventID), crmChanged}
			return nil
		}
		err := db.DeferCall(ctx, tx, "private.save_billing_subscription",
			a.TenantID, s.ID, s.PriceID, s.Plan, timeOrNil(s.CurrentPeriodEnd), s.CancelAtPeriodEnd,
			stampTime(s.PlanStamp), s.PlanStamp.EventID, s.Status, stampTime(s.StatusStamp), s.StatusStamp.EventID)
		if err != nil {
			return fmt.Errorf("save billing subscription: %w", err)
		}
	}
	amount := pgtype.Int8{Int64: a.LastPaymentAmount, Valid: !a.PaymentStamp.IsZero()}
	if keepsSubscription(before, a) {
		facets := []any{
			textOrNull(a.CustomerID), stampTime(a.CustomerStamp), textOrNull(a.CustomerStamp.EventID),
			textOrNull(a.CustomerEmail), stampTime(a.EmailStamp), textOrNull(a.EmailStamp.EventID),
			timeOrNil(a.LastPaymentAt), amount, textOrNull(a.LastPaymentCurrency),
			textOrNull(a.LastInvoiceID), stampTime(a.PaymentStamp), textOrNull(a.PaymentStamp.EventID),
			timeOrNil(a.LastFailureAt), textOrNull(a.LastFailureReason), textOrNull(a.LastFailureInvoiceID),
			stampTime(a.FailureStamp), textOrNull(a.FailureStamp.EventID),
			stampTime(src), textOrNull(src.EventID), crmChanged}
		if held != nil {
			held.fn, held.args = "private.record_stripe_event_with_facets", facets
			return nil
		}
		if err := db.DeferCall(ctx, tx, "private.save_billing_invoice_facets", append([]any{a.TenantID}, facets...)...); err != nil {
			return fmt.Errorf("save billing account: %w", err)
		}
		return nil
	}
	status := a.Status
	if status == "" {
		status = StatusNone
	}
	err := db.DeferCall(ctx, tx, "private.save_billing_account",
		a.TenantID,
		a.CustomerID, stampTime(a.CustomerStamp), a.CustomerStamp.EventID,
		a.CustomerEmail, stampTime(a.EmailStamp), a.EmailStamp.EventID,
		a.SubscriptionID, a.PriceID, a.Plan, timeOrNil(a.CurrentPeriodEnd), a.CancelAtPeriodEnd,
		stampTime(a.SubscriptionStamp), a.SubscriptionStamp.EventID,
		status, stampTime(a.StatusStamp), a.StatusStamp.EventID,
		timeOrNil(a.LastPaymentAt), amount, a.LastPaymentCurrency,
		a.LastInvoiceID, stampTime(a.PaymentStamp), a.PaymentStamp.EventID,
		timeOrNil(a.LastFailureAt), a.LastFailureReason, a.LastFailureInvoiceID,
		stampTime(a.FailureStamp), a.FailureStamp.EventID,
		stampTime(src), src.EventID, crmChanged)
	if err != nil {
		return fmt.Errorf("save billing account: %w", err)
	}
	return nil
}

// needsSubscriptions says whether applying c reads the account's subscriptions: Apply and
// Tied look at the one c names, saveAccount writes it. Source does not need them: the row's
// saved source already counts them (Account.SavedSource).
func needsSubscriptions(c Change) bool { return c.SubscriptionID != "" }

// heldSave is a save of the account held back for the event's record: fn records the event
// and saves (private.record_stripe_event_with_facets or _with_subscription), taking args after
// the record's own.
type heldSave struct {
	fn   string
	args []any
}

// keepsSubscription reports whether after holds before's subscription facet and status, so
// saving it may leave those columns as the locked row has them
// (private.save_billing_invoice_facets writes every other facet). Otherwise the whole row is
// written. TestKeepsSubscriptionComparesEveryOtherField holds it to every field of Account.
func keepsSubscription(before, after Account) bool {
	return after.SubscriptionID == before.SubscriptionID && after.PriceID == before.PriceID &&
		after.Plan == before.Plan && after.CurrentPeriodEnd.Equal(before.CurrentPeriodEnd) &&
		after.CancelAtPeriodEnd == before.CancelAtPeriodEnd && sameStamp(after.SubscriptionStamp, before.SubscriptionStamp) &&
		after.Status == before.Status && sameStamp(after.StatusStamp, before.StatusStamp)
}

// keepsInvoiceFacets reports whether after holds before's email, payment and failure facets,
// so saving it may leave those columns as the locked row has them
// (private.record_stripe_event_with_subscription writes every other column of the row).
// TestKeepsInvoiceFacetsComparesEveryOtherField holds it to every field of Account.
func keepsInvoiceFacets(before, after Account) bool {
	return after.CustomerEmail == before.CustomerEmail && sameStamp(after.EmailStamp, before.EmailStamp) &&
		after.LastPaymentAt.Equal(before.LastPaymentAt) && after.LastPaymentAmount == before.LastPaymentAmount &&
		after.LastPaymentCurrency == before.LastPaymentCurrency && after.LastInvoiceID == before.LastInvoiceID &&
		sameStamp(after.PaymentStamp, before.PaymentStamp) &&
		after.LastFailureAt.Equal(before.LastFailureAt) && after.LastFailureReason == before.LastFailureReason &&
		after.LastFailureInvoiceID == before.LastFailureInvoiceID && sameStamp(after.FailureStamp, before.FailureStamp)
}

// showsSubscription reports whether a's subscription facet and status are s's registers, so
// the account's columns can be written from the register's values
// (private.record_stripe_event_with_subscription). TestShowsSubscriptionComparesEveryRegister
// holds it to every field of SubscriptionState.
func showsSubscription(a Account, s SubscriptionState) bool {
	return a.SubscriptionID == s.ID && a.PriceID == s.PriceID && a.Plan == s.Plan &&
		a.CurrentPeriodEnd.Equal(s.CurrentPeriodEnd) && a.CancelAtPeriodEnd == s.CancelAtPeriodEnd &&
		sameStamp(a.SubscriptionStamp, s.PlanStamp) && a.Status == s.Status && sameStamp(a.StatusStamp, s.StatusStamp)
}

func sameStamp(a, b Stamp) bool { return a.EventID == b.EventID && a.Created.Equal(b.Created) }

// textOrNull is s, or SQL NULL when it is empty (what private.save_billing_account's nullif
// made of it).
func textOrNull(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }

// openFailureTicket opens the support ticket of a failed invoice when the tenant's rule asks
// for one; at most one per invoice (the unique (tenant, source, source_ref) key). uuid.Nil
// when the rule is off or the ticket already exists. rule is the tenant's rule when the
// claim read it (nil: read here).
func openFailureTicket(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, f failedPayment, rule *tenantRule) (uuid.UUID, error) {
	if rule == nil {
		rule = &tenantRule{}
		err := tx.QueryRow(ctx, `select ticket_on_payment_failure, contact_email from public.tenants where id = $1`, tenantID).
			Scan(&rule.ticketOnFailure, &rule.contactEmail)
		if err != nil {
			return uuid.Nil, fmt.Errorf("read tenant's payment failure rule: %w", err)
		}
	}
	on, contact := rule.ticketOnFailure, rule.contactEmail
	if !on {
		return uuid.Nil, nil
	}
	requester := deref(contact)
	if requester == "" {
		requester = f.Email
	}
	subject := "Payment failed for invoice " + f.InvoiceID
	body := fmt.Sprintf("Stripe could not collect invoice %s: %s.\n\nThe account is now past due until the "+
		"invoice is paid. Stripe retries the payment on its own schedule; updating the payment method in the "+
		"billing portal settles it sooner.", f.InvoiceID, f.Reason)
	var id uuid.UUID
	err := tx.QueryRow(ctx, `
		insert into public.tickets (tenant_id, requester_email, subject, body, category, priority, source, source_ref)
		values ($1, nullif($2, ''), $3, $4, 'billing', 'high', 'payment_failure', $5)
		on conflict (tenant_id, source, source_ref) do nothing
		returning id`, tenantID, requester, subject, body, f.InvoiceID).Scan(&id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return uuid.Nil, nil
	case err != nil:
		return uuid.Nil, fmt.Errorf("open payment failure ticket: %w", err)
	}
	return id, nil
}

type stampCols struct {
	created pgtype.Timestamptz
	id      pgtype.Text
}

func (s stampCols) stamp() Stamp {
	return Stamp{Created: timeOf(s.created), EventID: s.id.String}
}

// timeOf is a nullable timestamptz as a time in UTC (the zero time for NULL).
func timeOf(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

// stampTime is a stamp's time as a query argument, NULL for the zero stamp. Nullable arguments
// are pgtype values, not pointers: pgx encodes a pointer argument through reflection, which
// boxes the value it points to (an allocation per argument on every write).
func stampTime(s Stamp) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: s.Created, Valid: !s.IsZero()}
}

// timeOrNil is t as a query argument, NULL for the zero time.
func timeOrNil(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}
