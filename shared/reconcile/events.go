package reconcile

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db"
)

const reasonNoTenant = "matches no tenant yet: link its Stripe customer to a tenant (private.stripe_customers), then run again"

type storedEvent struct {
	ID       string
	Outcome  string
	TenantID *uuid.UUID
	Payload  []byte
}

// storedEvents repairs inbox rows that were never applied, or are unmatched and now match.
func (r *Reconciler) storedEvents(ctx context.Context, o Options, rep *Report) error {
	tenant, from, to := scopeArgs(o.Scope)
	rows, err := r.pool.Query(ctx, `
		select e.id, e.outcome, e.tenant_id, coalesce(e.raw_payload, convert_to(e.payload::text, 'UTF8'))
		from private.stripe_events e
		where ((e.outcome = 'processed' and e.applied_at is null) or e.outcome = 'unmatched')
		  and ($1::uuid is null or e.tenant_id = $1 or e.tenant_id is null)
		  and ($2::timestamptz is null or (e.created >= $2 and e.created < $3))
		order by e.created, e.id`, tenant, from, to)
	if err != nil {
		return fmt.Errorf("reconcile: find stored events: %w", db.Classify(err))
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (storedEvent, error) {
		var e storedEvent
		err := row.Scan(&e.ID, &e.Outcome, &e.TenantID, &e.Payload)
		return e, err
	})
	if err != nil {
		return fmt.Errorf("reconcile: find stored events: %w", db.Classify(err))
	}
	for _, e := range events {
		it := Item{Kind: KindStripeEvent, Subject: e.ID, Action: ActionApply}
		var resolved uuid.UUID
		if e.TenantID != nil {
			resolved = *e.TenantID
		} else {
			resolved, err = r.applier.ResolveTenant(ctx, r.pool, e.Payload)
			if err != nil {
				if db.IsUnavailable(err) {
					return fmt.Errorf("reconcile: resolve tenant of %s: %w", e.ID, err)
				}
				it.Action, it.Result, it.Reason = ActionNone, ResultFailed, failReason("resolve tenant", err)
				rep.add(it)
				continue
			}
		}
		if o.Scope.HasTenant() && resolved != o.Scope.TenantID {
			continue // another tenant's event, or nobody's: not this run's business
		}
		if resolved != uuid.Nil {
			it.TenantID = resolved.String()
		}
		switch {
		case e.Outcome != "unmatched":
			it.Reason = "stored but never applied"
		case resolved == uuid.Nil:
			it.Action, it.Result, it.Reason = ActionNone, ResultFailed, reasonNoTenant
			rep.add(it)
			continue
		default:
			it.Reason = "was unmatched; now matches a tenant"
		}
		if !o.Apply {
			it.Result = ResultWould
			rep.add(it)
			continue
		}
		res, err := r.applier.ApplyStored(ctx, e.ID)
		switch {
		case err != nil && db.IsUnavailable(err):
			return fmt.Errorf("reconcile: apply %s: %w", e.ID, err)
		case err != nil:
			it.Result, it.Reason = ResultFailed, failReason("apply", err)
		case res.Duplicate:
			it.Result, it.Reason = ResultSkipped, "already applied meanwhile (a live delivery or another run)"
		case res.Outcome == "unmatched":
			it.Result, it.Reason = ResultFailed, "applied, but it "+reasonNoTenant
		default:
			it.Result = ResultDone
			if res.TenantID != uuid.Nil {
				it.TenantID = res.TenantID.String()
			}
		}
		rep.add(it)
	}
	return nil
}

// missingEvents ingests the range's events that Stripe lists and we never received.
func (r *Reconciler) missingEvents(ctx context.Context, o Options, rep *Report) error {
	listed, err := r.stripe.Events(ctx, o.Scope.From, o.Scope.To)
	if err != nil {
		return fmt.Errorf("reconcile: list Stripe events: %w", err)
	}
	ids := make([]string, len(listed))
	for i, ev := range listed {
		ids[i] = ev.ID
	}
	stored := map[string]*uuid.UUID{}
	rows, err := r.pool.Query(ctx, `select id, tenant_id from private.stripe_events where id = any($1)`, ids)
	if err != nil {
		return fmt.Errorf("reconcile: look up listed events: %w", db.Classify(err))
	}
	var (
		id string
		t  *uuid.UUID
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &t}, func() error { stored[id] = t; return nil }); err != nil {
		return fmt.Errorf("reconcile: look up listed events: %w", db.Classify(err))
	}
	for _, ev := range listed {
		if ev.Created.Before(o.Scope.From) || !ev.Created.Before(o.Scope.To) {
			continue
		}
		if t, ok := stored[ev.ID]; ok {
			if !o.Scope.HasTenant() || (t != nil && *t == o.Scope.TenantID) {
				rep.fine(KindStripeMissing)
			}
			continue
		}
		it := Item{Kind: KindStripeMissing, Subject: ev.ID, Action: ActionIngest, Reason: "never received (" + ev.Type + ")"}
		resolved, err := r.applier.ResolveTenant(ctx, r.pool, ev.Payload)
		if err != nil && db.IsUnavailable(err) {
			return fmt.Errorf("reconcile: resolve tenant of %s: %w", ev.ID, err)
		}
		if o.Scope.HasTenant() && (err != nil || resolved != o.Scope.TenantID) {
			continue
		}
		if resolved != uuid.Nil {
			it.TenantID = resolved.String()
		}
		if !o.Apply {
			it.Result = ResultWould
			rep.add(it)
			continue
		}
		res, err := r.applier.Ingest(ctx, ev.Payload)
		switch {
		case err != nil && db.IsUnavailable(err):
			return fmt.Errorf("reconcile: ingest %s: %w", ev.ID, err)
		case err != nil:
			it.Result, it.Reason = ResultFailed, failReason("ingest", err)
		case res.Duplicate:
			it.Result, it.Reason = ResultSkipped, "received meanwhile (a live delivery or another run)"
		default:
			it.Result = ResultDone
			if res.TenantID != uuid.Nil {
				it.TenantID = res.TenantID.String()
			}
			if res.Outcome == "unmatched" {
				it.Reason = "ingested; it " + reasonNoTenant
			}
		}
		rep.add(it)
	}
	return nil
}
