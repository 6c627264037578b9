package reconcile

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// MaxRange is the widest date range one run may cover: a month of events is what an operator
// can still read in a report, and what Stripe keeps listing (30 days) plus a day of slack.
const MaxRange = 31 * 24 * time.Hour

// The reasons a scope is refused. ScopeError wraps one of them, so callers (the CLI's exit code
// 2, the Lambda's error type) can tell a refused run from a failed one.
var (
	// ErrUnscoped: neither a tenant nor a date range was given. Reconciling everything at once is
	// exactly the "re-run everything blindly" this tool exists to replace.
	ErrUnscoped = errors.New("refusing an unscoped run: give a tenant (--tenant; tenant_id in a Lambda event), a date range (--from and --to, at most 31 days; from and to), or both")
	// ErrRangeTooWide: the range spans more than MaxRange.
	ErrRangeTooWide = errors.New("date range too wide: at most 31 days per run; split it into several runs")
	// ErrRangeIncomplete: only one end of the range was given.
	ErrRangeIncomplete = errors.New("date range needs both ends (--from and --to; from and to)")
	// ErrRangeInverted: the range ends before it starts.
	ErrRangeInverted = errors.New("date range ends before it starts")
	// ErrBadTenant: the tenant is not a UUID.
	ErrBadTenant = errors.New("tenant must be a tenant id (UUID)")
	// ErrBadTime: a date is neither YYYY-MM-DD nor RFC 3339.
	ErrBadTime = errors.New("dates are YYYY-MM-DD (UTC) or RFC 3339 (2026-11-27T10:00:00Z)")
	// ErrStripeNeedsRange: --from-stripe lists Stripe's events by creation time, so it needs one.
	ErrStripeNeedsRange = errors.New("--from-stripe (from_stripe) needs a date range: Stripe lists events by creation time")
)

// ScopeError is a refused scope. Its type name is what a Lambda error report shows
// ("ScopeError"), so a refused invoke is not mistaken for a crash.
type ScopeError struct {
	Err    error
	Detail string
}

func (e *ScopeError) Error() string {
	if e.Detail == "" {
		return "reconcile: " + e.Err.Error()
	}
	return "reconcile: " + e.Err.Error() + " (" + e.Detail + ")"
}

func (e *ScopeError) Unwrap() error { return e.Err }

// Scope is the part of the system one run looks at: one tenant, one range of event/ticket
// creation times [From, To), or both. A zero TenantID means every tenant; zero times mean no
// range. Validate refuses a scope with neither.
type Scope struct {
	TenantID uuid.UUID `json:"tenant_id,omitzero"`
	From     time.Time `json:"from,omitzero"`
	To       time.Time `json:"to,omitzero"`
}

// HasTenant reports whether the scope names one tenant.
func (s Scope) HasTenant() bool { return s.TenantID != uuid.Nil }

// HasRange reports whether the scope names a date range.
func (s Scope) HasRange() bool { return !s.From.IsZero() || !s.To.IsZero() }

// Validate refuses an unscoped, half-open, inverted or over-wide scope with a *ScopeError.
func (s Scope) Validate() error {
	if !s.HasTenant() && !s.HasRange() {
		return &ScopeError{Err: ErrUnscoped}
	}
	if !s.HasRange() {
		return nil
	}
	if s.From.IsZero() || s.To.IsZero() {
		return &ScopeError{Err: ErrRangeIncomplete}
	}
	if !s.To.After(s.From) {
		return &ScopeError{Err: ErrRangeInverted, Detail: s.From.Format(time.RFC3339) + " to " + s.To.Format(time.RFC3339)}
	}
	if d := s.To.Sub(s.From); d > MaxRange {
		return &ScopeError{Err: ErrRangeTooWide, Detail: fmt.Sprintf("%s to %s is %.1f days", s.From.Format(time.RFC3339), s.To.Format(time.RFC3339), d.Hours()/24)}
	}
	return nil
}

// String is the scope as a report heading.
func (s Scope) String() string {
	var parts []string
	if s.HasTenant() {
		parts = append(parts, "tenant "+s.TenantID.String())
	} else {
		parts = append(parts, "all tenants")
	}
	if s.HasRange() {
		parts = append(parts, "created "+s.From.UTC().Format(time.RFC3339)+" to "+s.To.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, ", ")
}

// Options are what one run is asked to do.
type Options struct {
	Scope Scope
	// Apply does the repairs; false (the default) is a dry run that only reports them.
	Apply bool
	// FromStripe also lists the range's events from Stripe's API and ingests the ones never
	// received.
	FromStripe bool
}

// Validate checks the scope and the options that need one.
func (o Options) Validate() error {
	if err := o.Scope.Validate(); err != nil {
		return err
	}
	if o.FromStripe && !o.Scope.HasRange() {
		return &ScopeError{Err: ErrStripeNeedsRange}
	}
	return nil
}

// Request is the scope as the Lambda form and scripts send it:
// {"tenant_id": "...", "from": "2026-11-01", "to": "2026-11-27", "apply": false, "from_stripe": false}.
type Request struct {
	TenantID   string `json:"tenant_id,omitempty"`
	From       string `json:"from,omitempty"`
	To         string `json:"to,omitempty"`
	Apply      bool   `json:"apply,omitempty"`
	FromStripe bool   `json:"from_stripe,omitempty"`
}

// Options parses and validates the request; a refused one is a *ScopeError.
func (r Request) Options() (Options, error) {
	var o Options
	o.Apply, o.FromStripe = r.Apply, r.FromStripe
	if t := strings.TrimSpace(r.TenantID); t != "" {
		id, err := uuid.Parse(t)
		if err != nil || id == uuid.Nil {
			return o, &ScopeError{Err: ErrBadTenant, Detail: fmt.Sprintf("got %q", t)}
		}
		o.Scope.TenantID = id
	}
	var err error
	if o.Scope.From, err = ParseTime(r.From, false); err != nil {
		return o, err
	}
	if o.Scope.To, err = ParseTime(r.To, true); err != nil {
		return o, err
	}
	return o, o.Validate()
}

// ParseTime reads a range end: RFC 3339, or a UTC date. A date given as the end of a range
// includes that whole day (--to 2026-11-30 ends at 2026-12-01T00:00:00Z), as people mean it.
// The empty string is the zero time.
func ParseTime(s string, end bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, &ScopeError{Err: ErrBadTime, Detail: fmt.Sprintf("got %q", s)}
	}
	if end {
		t = t.AddDate(0, 0, 1)
	}
	return t, nil
}
