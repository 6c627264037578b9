// Package crm keeps each tenant's CRM records (a HubSpot company and its contact) in step with
// what Postgres says about the tenant now: plan, billing status, lifecycle stage, account owner.
//
// A crm_sync job never carries data: the worker reads the tenant's CURRENT projection when it
// runs, so jobs queued by an old and a new Stripe event both push the newest state, and a push
// that was retried for an hour cannot overwrite the CRM with stale values. Jobs that are due
// together go to HubSpot in one batch call per object type (up to 100 records each), each job
// keeping its own outcome: one refused record fails alone.
package crm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/db"
)

// HubSpot properties this package writes. On contacts: email only (HubSpot's own). On
// companies: name and lifecyclestage (HubSpot's own) and the portal_* custom properties, which
// must exist in the HubSpot portal on companies (type single-line text, group "Portal";
// portal_tenant_id with unique values: companies are upserted by it).
const (
	PropEmail          = "email"
	PropCompanyName    = "name"
	PropLifecycleStage = "lifecyclestage"
	PropTenantID       = "portal_tenant_id"
	PropPlan           = "portal_plan"
	PropBillingStatus  = "portal_billing_status"
	PropOwnerEmail     = "portal_account_owner_email"
	PropPeriodEnd      = "portal_current_period_end"
)

// Object types of HubSpot's CRM this package writes.
const (
	ObjectContacts  = "contacts"
	ObjectCompanies = "companies"
)

// CustomProperty is one portal_* property this package writes, and on which objects: the one
// list `reconcile setup` creates in HubSpot and the record builders (Properties,
// CompanyProperties) fill, so the two cannot drift (a test checks it).
type CustomProperty struct {
	Name  string
	Label string
	// Objects are the object types that carry it (ObjectContacts, ObjectCompanies).
	Objects []string
	// UniqueOn is the object type whose records are upserted by it ("" for none): HubSpot
	// needs the property created with unique values there.
	UniqueOn string
}

// PropertyGroup is the HubSpot property group the custom properties are shown under.
const PropertyGroup = "portal"

// CustomProperties are the portal_* properties, all single-line text, all on companies: the
// tenant's billing facts are its company's; a contact (keyed by an email two tenants may
// share) carries none of them.
var CustomProperties = []CustomProperty{
	{Name: PropTenantID, Label: "Portal tenant id", Objects: []string{ObjectCompanies}, UniqueOn: ObjectCompanies},
	{Name: PropPlan, Label: "Portal plan", Objects: []string{ObjectCompanies}},
	{Name: PropBillingStatus, Label: "Portal billing status", Objects: []string{ObjectCompanies}},
	{Name: PropOwnerEmail, Label: "Portal account owner email", Objects: []string{ObjectCompanies}},
	{Name: PropPeriodEnd, Label: "Portal current period end", Objects: []string{ObjectCompanies}},
}

// Errors of this package, declared together.
var (
	// ErrTenantNotFound means the job's tenant no longer exists (deleted since the job was
	// queued).
	ErrTenantNotFound = errors.New("crm: tenant not found")
	// errOvertaken means a record was not sent, or is no longer what HubSpot shows, because a
	// newer version of the tenant's projection exists: its job runs again and reads it.
	errOvertaken = errors.New("crm: a newer version of the projection exists")
	// errSharesRecord marks, inside a batch, a job whose tenant's newest record is another
	// job's: it takes that job's result.
	errSharesRecord = errors.New("crm: shares another job's record")
	// errMissingResult means HubSpot's answer had fewer records than inputs (never expected;
	// the job is retried).
	errMissingResult = errors.New("crm: hubspot returned no result for this record")
)

// Projection is what the CRM should show for a tenant, read from Postgres at push time. The
// billing part (plan, status, lifecycle, period end, billing email) is billing's CRMView of the
// current projection: the same definition the webhook uses to decide that a change needs a
// push, so the CRM cannot show a field whose change queues nothing.
type Projection struct {
	TenantID uuid.UUID
	// Version is the billing projection's crm_version (0 before any billing change): read
	// before the rest, so the state read is at least as new as the version says.
	Version       int64
	Name          string
	Email         string // the billing email (CRMView.Email), else tenants.contact_email
	Plan          string
	BillingStatus string // Stripe subscription status, "none" before any checkout
	// Lifecycle is billing's stage (billing.Lifecycle of the status); LifecycleStage says it
	// in HubSpot's words.
	Lifecycle        string
	OwnerEmail       string
	CurrentPeriodEnd *time.Time
}

// LoadProjection reads the tenant's current projection (service role: crm-push is internal).
func LoadProjection(ctx context.Context, q db.Querier, tenantID uuid.UUID) (Projection, error) {
	p := Projection{TenantID: tenantID}
	var contact string
	err := q.QueryRow(ctx, `
		select t.name, coalesce(t.contact_email, ''), coalesce(t.crm_owner_email, ''),
		    coalesce((select b.crm_version from private.billing_accounts b where b.tenant_id = t.id), 0)
		from public.tenants t where t.id = $1`, tenantID).Scan(&p.Name, &contact, &p.OwnerEmail, &p.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return Projection{}, fmt.Errorf("load projection of tenant %s: %w", tenantID, ErrTenantNotFound)
	}
	if err != nil {
		return Projection{}, fmt.Errorf("load projection of tenant %s: %w", tenantID, err)
	}
	acct, err := billing.LoadAccount(ctx, q, tenantID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		acct = billing.Account{TenantID: tenantID} // never checked out: no billing row yet
	case err != nil:
		return Projection{}, fmt.Errorf("load projection of tenant %s: %w", tenantID, err)
	}
	view := acct.CRMView()
	p.Email, p.Plan, p.BillingStatus, p.Lifecycle = view.Email, view.Plan, view.Status, view.Lifecycle
	if p.Email == "" {
		p.Email = contact
	}
	if !view.CurrentPeriodEnd.IsZero() {
		end := view.CurrentPeriodEnd
		p.CurrentPeriodEnd = &end
	}
	return p, nil
}

// LifecycleStage is billing's lifecycle stage in HubSpot's lifecyclestage values: a customer
// (paying, or paying late) is a customer, a trial an opportunity, a prospect (no subscription
// yet) a lead, a churned account other.
func (p Projection) LifecycleStage() string {
	switch p.Lifecycle {
	case billing.LifecycleCustomer:
		return "customer"
	case billing.LifecycleTrial:
		return "opportunity"
	case billing.LifecycleChurned:
		return "other"
	default: // billing.LifecycleProspect
		return "lead"
	}
}

// Properties are the HubSpot contact properties for the projection: the email alone. The
// contact is the person (keyed by the email a payer typed into Stripe Checkout, which another
// tenant may share), so it carries nothing tenant-specific: the tenant's facts are its
// company's, and the contact is associated with every company it belongs to.
func (p Projection) Properties() map[string]string {
	return map[string]string{PropEmail: p.Email}
}

// CompanyProperties are the HubSpot company properties for the projection: the tenant as a
// company, upserted by portal_tenant_id, carrying its billing facts. Every property is always
// sent ("" clears it in HubSpot), so a value removed in Postgres is removed in the CRM too.
func (p Projection) CompanyProperties() map[string]string {
	periodEnd := ""
	if p.CurrentPeriodEnd != nil {
		periodEnd = p.CurrentPeriodEnd.UTC().Format("2006-01-02")
	}
	return map[string]string{
		PropCompanyName:    p.Name,
		PropLifecycleStage: p.LifecycleStage(),
		PropTenantID:       p.TenantID.String(),
		PropPlan:           p.Plan,
		PropBillingStatus:  p.BillingStatus,
		PropOwnerEmail:     p.OwnerEmail,
		PropPeriodEnd:      periodEnd,
	}
}
