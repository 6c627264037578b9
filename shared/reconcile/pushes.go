package reconcile

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db"
)

type crmCandidate struct {
	EventID  string
	TenantID uuid.UUID
	// Covered: a waiting job of the tenant (it will push the current projection), or HubSpot
	// has been sent the projection's current version.
	Covered bool
	// Version is the projection's current crm_version, which a new push is queued for.
	Version int64
	// OwnState is the state of this event's newest job ("" when it never had one).
	OwnState string
}

// crmSyncs enqueues a CRM push for each tenant whose billing change has no push that will
// carry it. A change needs a push when applying it queued one (stripe_events.crm_sync), or —
// where that was not recorded — when its event is still the last writer of something the CRM
// shows (email, plan, status). It is carried by any job of the tenant still waiting (a push
// sends the CURRENT projection), or when HubSpot has been sent the projection's current
// crm_version (private.crm_pushes): versions, not job times, because a job that completed after
// the change may have sent an older state (two pushes overlapping at HubSpot).
//
// One job per tenant carries all its uncarried changes: it is enqueued for the newest of them,
// unique per (tenant, source event) exactly as the webhook enqueues it, so a live delivery
// racing this run makes the same job, not a second one. When that event's own job completed
// without HubSpot holding the current version, the new job's source is the event at the
// version ("reconcile:<event>@v<version>"), so it is not taken for the completed one.
func (r *Reconciler) crmSyncs(ctx context.Context, o Options, rep *Report) error {
	tenant, from, to := scopeArgs(o.Scope)
	rows, err := r.pool.Query(ctx, `
		select e.id, e.tenant_id,
		    exists (
		        select 1 from private.river_job j
		        where j.kind = 'crm_sync'
		          and j.args->>'tenant_id' = e.tenant_id::text
		          and j.state in ('available', 'pending', 'retryable', 'running', 'scheduled')
		    ) or coalesce(p.sent_version >= coalesce(b.crm_version, 0), false),
		    coalesce(b.crm_version, 0),
		    coalesce((
		        select j.state::text from private.river_job j
		        where j.kind = 'crm_sync'
		          and j.args->>'tenant_id' = e.tenant_id::text and j.args->>'source_event' = e.id
		        order by j.id desc limit 1
		    ), '')
		from private.stripe_events e
		left join private.billing_accounts b on b.tenant_id = e.tenant_id
		left join private.crm_pushes p on p.tenant_id = e.tenant_id
		where e.outcome = 'processed' and e.tenant_id is not null and e.applied_at is not null
		  and (e.crm_sync
		       or (e.crm_sync is null and e.id in (b.email_event_id, b.subscription_event_id, b.status_event_id))
		       or exists (
		           select 1 from private.river_job j
		           where j.kind = 'crm_sync'
		             and j.args->>'tenant_id' = e.tenant_id::text and j.args->>'source_event' = e.id))
		  and ($1::uuid is null or e.tenant_id = $1)
		  and ($2::timestamptz is null or (e.created >= $2 and e.created < $3))
		order by e.tenant_id, e.applied_at desc, e.created desc, e.id desc`, tenant, from, to)
	if err != nil {
		return fmt.Errorf("reconcile: find CRM pushes: %w", db.Classify(err))
	}
	cands, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (crmCandidate, error) {
		var c crmCandidate
		err := row.Scan(&c.EventID, &c.TenantID, &c.Covered, &c.Version, &c.OwnState)
		return c, err
	})
	if err != nil {
		return fmt.Errorf("reconcile: find CRM pushes: %w", db.Classify(err))
	}
	// Rows come newest first per tenant: the first uncarried one gets the job, the rest ride on it.
	newest := map[uuid.UUID]string{}
	for _, c := range cands {
		if c.Covered {
			rep.fine(KindCRMSync)
			continue
		}
		it := Item{Kind: KindCRMSync, Subject: c.EventID, TenantID: c.TenantID.String(), Action: ActionEnqueue}
		if first, ok := newest[c.TenantID]; ok {
			it.Action, it.Result, it.Reason = ActionNone, ResultSkipped, "carried by the push for "+first+" (a push sends the current projection)"
			rep.add(it)
			continue
		}
		newest[c.TenantID] = c.EventID
		source := c.EventID
		switch c.OwnState {
		case "":
			it.Reason = "push missing"
		case "discarded", "cancelled":
			it.Reason = "push dead-lettered (" + c.OwnState + ")"
		default:
			it.Reason = fmt.Sprintf("HubSpot was last sent an older version than %d", c.Version)
			source = fmt.Sprintf("reconcile:%s@v%d", c.EventID, c.Version)
		}
		r.enqueue(ctx, o, rep, it, func(tx pgx.Tx) error {
			return r.enqueuer.EnqueueCRMSync(ctx, tx, c.TenantID, source, c.Version)
		})
	}
	return nil
}

// helpdeskTickets enqueues the helpdesk push of each ticket that is not in the helpdesk and
// has no live job.
func (r *Reconciler) helpdeskTickets(ctx context.Context, o Options, rep *Report) error {
	tenant, from, to := scopeArgs(o.Scope)
	rows, err := r.pool.Query(ctx, `
		select t.id, t.tenant_id,
		    coalesce((
		        select j.state::text from private.river_job j
		        where j.kind = 'helpdesk_ticket' and j.args->>'tenant_id' = t.tenant_id::text
		          and j.args->>'ticket_id' = t.id::text
		        order by (j.state::text not in ('discarded', 'cancelled')) desc, j.id desc limit 1
		    ), '')
		from public.tickets t
		where t.helpdesk_ticket_id is null
		  and ($1::uuid is null or t.tenant_id = $1)
		  and ($2::timestamptz is null or (t.created_at >= $2 and t.created_at < $3))
		order by t.created_at, t.id`, tenant, from, to)
	if err != nil {
		return fmt.Errorf("reconcile: find helpdesk pushes: %w", db.Classify(err))
	}
	type ticket struct {
		ID, TenantID uuid.UUID
		State        string
	}
	tickets, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ticket, error) {
		var t ticket
		err := row.Scan(&t.ID, &t.TenantID, &t.State)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("reconcile: find helpdesk pushes: %w", db.Classify(err))
	}
	for _, t := range tickets {
		it := Item{Kind: KindHelpdeskTicket, Subject: t.ID.String(), TenantID: t.TenantID.String(), Action: ActionEnqueue}
		switch t.State {
		case "available", "pending", "retryable", "running", "scheduled":
			rep.fine(KindHelpdeskTicket)
			continue
		case "completed":
			// The worker finished without recording the helpdesk id: a new job would be a
			// duplicate of a completed unique job, and a person should look first.
			it.Action, it.Result, it.Reason = ActionNone, ResultFailed, "push completed but the ticket has no helpdesk id; check the helpdesk for external_id "+t.ID.String()
			rep.add(it)
			continue
		case "":
			it.Reason = "push missing"
		default:
			it.Reason = "push dead-lettered (" + t.State + ")"
		}
		r.enqueue(ctx, o, rep, it, func(tx pgx.Tx) error {
			return r.enqueuer.EnqueueHelpdeskTicket(ctx, tx, t.TenantID, t.ID)
		})
	}
	return nil
}

// enqueue runs one repair in its own transaction (one failure does not undo the others) and
// records it.
func (r *Reconciler) enqueue(ctx context.Context, o Options, rep *Report, it Item, fn func(tx pgx.Tx) error) {
	if !o.Apply {
		it.Result = ResultWould
		rep.add(it)
		return
	}
	if err := db.Tx(ctx, r.pool, fn); err != nil {
		it.Result, it.Reason = ResultFailed, failReason("enqueue", err)
	} else {
		it.Result = ResultDone
	}
	rep.add(it)
}
