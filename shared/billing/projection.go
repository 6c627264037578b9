package billing

import (
	"maps"
	"time"

	"github.com/google/uuid"
)

// Stamp orders the events that write one account: by Stripe's created time, then by event id.
// Stripe's created has one-second resolution, so two events of the same second are ordered by
// id: arbitrary but the same on every delivery, which is what convergence needs. Where the
// arbitrary order could pick the wrong one of two different subscription states, Tied says
// so and a refresh from Stripe's API (stamped with the second it was read) settles it.
type Stamp struct {
	Created time.Time
	EventID string
}

// IsZero reports whether no event has written the facet yet.
func (s Stamp) IsZero() bool { return s.EventID == "" }

// After reports whether s is newer than o (anything is newer than the zero stamp).
func (s Stamp) After(o Stamp) bool {
	if o.IsZero() {
		return !s.IsZero()
	}
	if !s.Created.Equal(o.Created) {
		return s.Created.After(o.Created)
	}
	return s.EventID > o.EventID
}

// Subscription statuses of private.billing_accounts.status ("none" until Stripe says more).
const (
	StatusNone     = "none"
	StatusActive   = "active"
	StatusPastDue  = "past_due"
	StatusCanceled = "canceled"
)

// statusIncompleteExpired is a subscription whose first payment never succeeded: ended.
const statusIncompleteExpired = "incomplete_expired"

// knownStatus lists what the status column accepts: Stripe's subscription statuses.
var knownStatus = map[string]bool{
	StatusNone: true, "incomplete": true, statusIncompleteExpired: true, "trialing": true,
	StatusActive: true, StatusPastDue: true, StatusCanceled: true, "unpaid": true, "paused": true,
}

// ended reports a status Stripe never moves a subscription out of.
func ended(status string) bool { return status == StatusCanceled || status == statusIncompleteExpired }

// Account is one tenant's billing projection (a row of private.billing_accounts). Each group
// of fields is a facet with the stamp of the event that last wrote it; the subscription facet
// and Status are those of the current subscription (see Current).
type Account struct {
	TenantID uuid.UUID

	CustomerID    string
	CustomerStamp Stamp

	CustomerEmail string
	EmailStamp    Stamp

	SubscriptionID    string
	PriceID           string
	Plan              string
	CurrentPeriodEnd  time.Time
	CancelAtPeriodEnd bool
	SubscriptionStamp Stamp

	Status      string
	StatusStamp Stamp

	LastPaymentAt       time.Time
	LastPaymentAmount   int64
	LastPaymentCurrency string
	LastInvoiceID       string
	PaymentStamp        Stamp

	LastFailureAt        time.Time
	LastFailureReason    string
	LastFailureInvoiceID string
	FailureStamp         Stamp

	// Subscriptions are every subscription of the tenant the events named, by id (rows of
	// private.billing_subscriptions).
	Subscriptions map[string]SubscriptionState

	// CRMVersion counts the changes the CRM shows (private.billing_accounts.crm_version): a
	// CRM push is queued for the version its change made, and completes once HubSpot holds it.
	CRMVersion int64

	// SavedSource is the row's source as it was last saved (source_event_created,
	// source_event_id): Source counts it, so an account read without its subscriptions (for a
	// change that touches none) still derives the row's source from the newest event it holds.
	SavedSource Stamp
}

// SubscriptionState is one of a tenant's subscriptions as its own events describe it: the plan
// (written by its subscription events) and the status (by those and by its invoices), each a
// register stamped with the event that last wrote it. An ending status (canceled,
// incomplete_expired) is final, as it is at Stripe: no other event of that subscription, older
// or newer, takes it back.
type SubscriptionState struct {
	ID                string
	PriceID           string
	Plan              string
	CurrentPeriodEnd  time.Time
	CancelAtPeriodEnd bool
	PlanStamp         Stamp

	Status      string
	StatusStamp Stamp
}

// Ended reports whether the subscription is over (canceled or expired before it started).
func (s SubscriptionState) Ended() bool { return ended(s.Status) }

// takesStatus reports whether status, said by the event stamped st, replaces s's status: an
// ending status beats a live one whatever their order, otherwise the newer event wins.
func (s SubscriptionState) takesStatus(status string, st Stamp) bool {
	if ended(status) != s.Ended() {
		return ended(status)
	}
	return st.After(s.StatusStamp)
}

// latest is the newest stamp of the subscription's registers.
func (s SubscriptionState) latest() Stamp {
	if s.StatusStamp.After(s.PlanStamp) {
		return s.StatusStamp
	}
	return s.PlanStamp
}

// shownBefore reports whether the account shows s rather than o: a live subscription before an
// ended one, then the one with the newest event (last writer wins). Stamps are unique per
// event and an event names one subscription, so this is a total order.
func (s SubscriptionState) shownBefore(o SubscriptionState) bool {
	if s.Ended() != o.Ended() {
		return !s.Ended()
	}
	return s.latest().After(o.latest())
}

// SubscriptionFacet is what a subscription event says about the plan.
type SubscriptionFacet struct {
	PriceID           string
	Plan              string
	CurrentPeriodEnd  time.Time
	CancelAtPeriodEnd bool
}

// PaymentFacet is a paid invoice.
type PaymentFacet struct {
	At        time.Time
	Amount    int64
	Currency  string
	InvoiceID string
}

// FailureFacet is a failed invoice payment.
type FailureFacet struct {
	At        time.Time
	Reason    string
	InvoiceID string
}

// Change is what one event says: every non-nil facet is written if the event is newer than the
// facet's stamp; Subscription and Status go to the register of the subscription SubscriptionID
// names. Whether an event writes a register depends on the event and that register alone, and
// the current subscription is a function of the registers: that is what makes the result
// independent of delivery order.
type Change struct {
	Stamp          Stamp
	CustomerID     *string
	Email          *string
	SubscriptionID string
	Subscription   *SubscriptionFacet
	Status         *string
	Payment        *PaymentFacet
	Failure        *FailureFacet
}

// Apply returns a with c applied facet by facet, and whether any facet took it (a facet that
// takes an event moves its stamp even when the values are the same, so an older event cannot
// sneak in afterwards).
func (a Account) Apply(c Change) (Account, bool) {
	changed := false
	take := func(stamp *Stamp) bool {
		if !c.Stamp.After(*stamp) {
			return false
		}
		*stamp, changed = c.Stamp, true
		return true
	}
	if c.CustomerID != nil && take(&a.CustomerStamp) {
		a.CustomerID = *c.CustomerID
	}
	if c.Email != nil && take(&a.EmailStamp) {
		a.CustomerEmail = *c.Email
	}
	if id := c.SubscriptionID; id != "" && (c.Subscription != nil || c.Status != nil) {
		s := a.Subscriptions[id]
		s.ID = id
		if f := c.Subscription; f != nil && take(&s.PlanStamp) {
			s.PriceID, s.Plan, s.CurrentPeriodEnd, s.CancelAtPeriodEnd = f.PriceID, f.Plan, f.CurrentPeriodEnd, f.CancelAtPeriodEnd
		}
		if c.Status != nil && s.takesStatus(*c.Status, c.Stamp) {
			s.Status, s.StatusStamp, changed = *c.Status, c.Stamp, true
		}
		a.Subscriptions = maps.Clone(a.Subscriptions) // a is a copy; its map is not
		if a.Subscriptions == nil {
			a.Subscriptions = map[string]SubscriptionState{}
		}
		a.Subscriptions[id] = s
		a = a.showCurrent()
	}
	if p := c.Payment; p != nil && take(&a.PaymentStamp) {
		a.LastPaymentAt, a.LastPaymentAmount, a.LastPaymentCurrency, a.LastInvoiceID = p.At, p.Amount, p.Currency, p.InvoiceID
	}
	if f := c.Failure; f != nil && take(&a.FailureStamp) {
		a.LastFailureAt, a.LastFailureReason, a.LastFailureInvoiceID = f.At, f.Reason, f.InvoiceID
	}
	return a, changed
}

// Tied reports whether c writes a subscription register that holds a different value from
// another writer of the same second: Stripe's created (one-second resolution) cannot say which
// came last, so the event id's order would be a guess. Whichever of two such events arrives
// second sees the first one's stamp, so every delivery order finds the tie. An ending status
// is no tie (it wins whatever the order), nor is an equal value.
func (a Account) Tied(c Change) bool {
	s, ok := a.Subscriptions[c.SubscriptionID]
	if c.SubscriptionID == "" || !ok {
		return false
	}
	sameSecond := func(st Stamp) bool {
		return !st.IsZero() && st.EventID != c.Stamp.EventID && st.Created.Equal(c.Stamp.Created)
	}
	if f := c.Subscription; f != nil && sameSecond(s.PlanStamp) &&
		(f.PriceID != s.PriceID || f.Plan != s.Plan || !f.CurrentPeriodEnd.Equal(s.CurrentPeriodEnd) || f.CancelAtPeriodEnd != s.CancelAtPeriodEnd) {
		return true
	}
	return c.Status != nil && sameSecond(s.StatusStamp) && *c.Status != s.Status && ended(*c.Status) == s.Ended()
}

// Current is the subscription the account shows: a live one before an ended one, then the one
// whose events are newest. The zero value when the events named none.
func (a Account) Current() SubscriptionState {
	var cur SubscriptionState
	for _, s := range a.Subscriptions {
		if cur.ID == "" || s.shownBefore(cur) {
			cur = s
		}
	}
	return cur
}

// showCurrent returns a with its subscription facet and status taken from Current.
func (a Account) showCurrent() Account {
	cur := a.Current()
	a.SubscriptionID, a.PriceID, a.Plan, a.CurrentPeriodEnd, a.CancelAtPeriodEnd, a.SubscriptionStamp =
		cur.ID, cur.PriceID, cur.Plan, cur.CurrentPeriodEnd, cur.CancelAtPeriodEnd, cur.PlanStamp
	a.Status, a.StatusStamp = cur.Status, cur.StatusStamp
	return a
}

// Source is the newest stamp of any facet or subscription, or of the row's saved source: the
// event the row was last derived from.
func (a Account) Source() Stamp {
	src := Stamp{}
	stamps := []Stamp{a.SavedSource, a.CustomerStamp, a.EmailStamp, a.PaymentStamp, a.FailureStamp}
	for _, s := range a.Subscriptions {
		stamps = append(stamps, s.PlanStamp, s.StatusStamp)
	}
	for _, s := range stamps {
		if s.After(src) {
			src = s
		}
	}
	return src
}

// Lifecycle stages the CRM shows for an account, derived from its status.
const (
	LifecycleProspect = "prospect" // no subscription yet, or it never started
	LifecycleTrial    = "trial"
	LifecycleCustomer = "customer" // paying, or owing (past_due, unpaid, paused)
	LifecycleChurned  = "churned"
)

// Lifecycle maps a subscription status to the CRM's lifecycle stage.
func Lifecycle(status string) string {
	switch status {
	case "trialing":
		return LifecycleTrial
	case StatusActive, StatusPastDue, "unpaid", "paused":
		return LifecycleCustomer
	case StatusCanceled:
		return LifecycleChurned
	default:
		return LifecycleProspect
	}
}

// CRMView is what the CRM shows of an account: the one definition both sides use. A webhook
// event enqueues a CRM sync only when it changes this view, and crm-push builds the CRM
// record from the view of the current projection, so nothing the CRM shows can change without
// a push.
type CRMView struct {
	Plan      string
	Status    string
	Lifecycle string
	// Email is the contact the CRM record is keyed by: a new or changed one needs a push too.
	Email string
	// CurrentPeriodEnd is when the paid period ends (the CRM shows the renewal date; zero when
	// there is no subscription).
	CurrentPeriodEnd time.Time
}

// CRMView returns what the CRM shows of a.
func (a Account) CRMView() CRMView {
	status := a.Status
	if status == "" {
		status = StatusNone
	}
	return CRMView{Plan: a.Plan, Status: status, Lifecycle: Lifecycle(status), Email: a.CustomerEmail,
		CurrentPeriodEnd: a.CurrentPeriodEnd}
}

// Equal reports whether two views show the same thing (times compared as instants).
func (v CRMView) Equal(o CRMView) bool {
	return v.Plan == o.Plan && v.Status == o.Status && v.Lifecycle == o.Lifecycle && v.Email == o.Email &&
		v.CurrentPeriodEnd.Equal(o.CurrentPeriodEnd)
}
