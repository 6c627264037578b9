// Package crm keeps each tenant's CRM record (a HubSpot contact) in step with what Postgres
// says about the tenant now: plan, billing status, lifecycle stage, account owner.
//
// A crm_sync job never carries data: the worker reads the tenant's CURRENT projection when it
// runs, so jobs queued by an old and a new Stripe event both push the newest state, and a push
// that was retried for an hour cannot overwrite the CRM with stale values. Jobs that are due
// together go to HubSpot in one batch call (up to 100 records), each job keeping its own
// outcome: one refused record fails alone.
package crm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db"
)

// HubSpot contact properties this package writes. email, company and lifecyclestage are
// HubSpot's own; the portal_* ones are custom contact properties that must exist in the HubSpot
// portal (type single-line text, group "Portal").
const (
	PropEmail          = "email"
	PropCompany        = "company"
	PropLifecycleStage = "lifecyclestage"
	PropTenantID       = "portal_tenant_id"
	PropPlan           = "portal_plan"
	PropBillingStatus  = "portal_billing_status"
	PropOwnerEmail     = "portal_account_owner_email"
	PropPeriodEnd      = "portal_current_period_end"
)

// ErrTenantNotFound means the job's tenant no longer exists (deleted since the job was queued).
var ErrTenantNotFound = errors.New("crm: tenant not found")

// Projection is what the CRM should show for a tenant, read from Postgres at push time.
type Projection struct {
	TenantID         uuid.UUID
	Name             string
	Email            string // billing_accounts.customer_email, else tenants.contact_email
	Plan             string
	BillingStatus    string // Stripe subscription status, "none" before any checkout
	OwnerEmail       string
	CurrentPeriodEnd *time.Time
}

// LoadProjection reads the tenant's current projection (service role: crm-push is internal).
func LoadProjection(ctx context.Context, q db.Querier, tenantID uuid.UUID) (Projection, error) {
	p := Projection{TenantID: tenantID}
	err := q.QueryRow(ctx, `
		select t.name,
		       coalesce(nullif(b.customer_email, ''), t.contact_email, ''),
		       coalesce(b.plan, ''),
		       coalesce(b.status, 'none'),
		       coalesce(t.crm_owner_email, ''),
		       b.current_period_end
		from public.tenants t
		left join private.billing_accounts b on b.tenant_id = t.id
		where t.id = $1`, tenantID).
		Scan(&p.Name, &p.Email, &p.Plan, &p.BillingStatus, &p.OwnerEmail, &p.CurrentPeriodEnd)
	if errors.Is(err, pgx.ErrNoRows) {
		return Projection{}, fmt.Errorf("load projection of tenant %s: %w", tenantID, ErrTenantNotFound)
	}
	if err != nil {
		return Projection{}, fmt.Errorf("load projection of tenant %s: %w", tenantID, err)
	}
	return p, nil
}

// LifecycleStage maps the billing status to HubSpot's lifecycle stage: paying (or paying late)
// is a customer, a trial is an opportunity, no subscription yet is a lead, cancelled is other.
func (p Projection) LifecycleStage() string {
	switch p.BillingStatus {
	case "active", "past_due", "unpaid", "paused":
		return "customer"
	case "trialing":
		return "opportunity"
	case "canceled":
		return "other"
	default: // none, incomplete, incomplete_expired
		return "lead"
	}
}

// Properties are the HubSpot contact properties for the projection. Every property is always
// sent ("" clears it in HubSpot), so a value removed in Postgres is removed in the CRM too.
func (p Projection) Properties() map[string]string {
	periodEnd := ""
	if p.CurrentPeriodEnd != nil {
		periodEnd = p.CurrentPeriodEnd.UTC().Format("2006-01-02")
	}
	return map[string]string{
		PropEmail:          p.Email,
		PropCompany:        p.Name,
		PropLifecycleStage: p.LifecycleStage(),
		PropTenantID:       p.TenantID.String(),
		PropPlan:           p.Plan,
		PropBillingStatus:  p.BillingStatus,
		PropOwnerEmail:     p.OwnerEmail,
		PropPeriodEnd:      periodEnd,
	}
}
