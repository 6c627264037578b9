// Package portal serves what the client portal reads: GET /v1/account (billing state and the
// state of every sync, in words a portal can show; for an owner also the tenant's delivery
// health), GET /v1/tickets (newest first, keyset pages) and GET /v1/tickets/{id}.
//
// Every read runs as the calling user (tenant.ReadBatchAsUser: role authenticated with the
// verified claims) against views with security_invoker, so Postgres RLS is the second wall
// behind the tenant filter: another tenant's id, a malformed id and an unknown id all answer
// the same 404. The one exception is the owner's health section: River's job table and the
// kept counters are not readable by the portal role, so that statement runs as the pool's
// role, filtered by the verified scope's tenant id, before the transaction switches to the
// user. A read waits on the database twice: the membership lookup (tenant.Middleware), then
// one pipelined batch of begin, role and claims, its queries and commit.
package portal

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/readiness"
	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Page sizes of GET /v1/tickets.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Errors of this package.
var (
	// ErrBadCursor is a cursor this service did not issue (400).
	ErrBadCursor = errors.New("portal: malformed cursor")
	// ErrNoScope means a handler ran without tenant.Middleware in front (a wiring bug).
	ErrNoScope = errors.New("portal: no tenant scope in the request")
)

// Deps are what the handlers are built from.
type Deps struct {
	Pool     *pgxpool.Pool
	Verifier *auth.Verifier
}

// NewHandler serves the three portal routes on one ServeMux, each behind auth.Require and
// tenant.Middleware, and the deploy's GET /v1/health (package readiness) without a token.
// Wrap it in web.Wrap (function.HTTP does).
func NewHandler(d Deps) http.Handler {
	h := &handler{pool: d.Pool}
	guard := func(f http.HandlerFunc) http.Handler {
		return auth.Require(d.Verifier)(tenant.Middleware(d.Pool)(f))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/account", guard(h.account))
	mux.Handle("GET /v1/tickets", guard(h.listTickets))
	mux.Handle("GET /v1/tickets/{id}", guard(h.getTicket))
	// No token: an uptime probe outside AWS calls it. It answers check names only.
	mux.Handle("GET /v1/health", readiness.New(readiness.Options{DB: d.Pool, Keys: d.Verifier}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		web.Error(w, r, problem.NotFound("no such route"))
	})
	return web.Route(mux)
}

type handler struct{ pool *pgxpool.Pool }

// Account is the answer of GET /v1/account.
type Account struct {
	Tenant  AccountTenant `json:"tenant"`
	Role    string        `json:"role"`
	Billing Billing       `json:"billing"`
	Syncs   []Sync        `json:"syncs"`
	// Health is present for the tenant's owners only: admins and members get the account
	// without it (not a 403), since the rest of the account is theirs to see.
	Health *Health `json:"health,omitempty"`
}

// Health is the tenant's delivery health over the last health.DefaultWindow, for an owner:
// counts and times only, never an upstream error text.
type Health struct {
	Since         time.Time           `json:"since"`
	Until         time.Time           `json:"until"`
	WindowSeconds float64             `json:"window_seconds"`
	Webhook       HealthWebhook       `json:"webhook"`
	Integrations  []HealthIntegration `json:"integrations"`
}

// HealthWebhook is how Stripe's deliveries about the tenant fared. Rejected and unmatched
// deliveries have no tenant, so they are ops' numbers and not shown here.
type HealthWebhook struct {
	Received  int `json:"received"`
	Processed int `json:"processed"`
	Ignored   int `json:"ignored"`
	// Unapplied were stored but not yet applied (ops' reconcile applies them).
	Unapplied   int     `json:"unapplied"`
	SuccessRate float64 `json:"success_rate"`
}

// HealthIntegration is how the tenant's pushes to one integration fared, and what waits now.
type HealthIntegration struct {
	Integration          string     `json:"integration"`
	Attempts             int        `json:"attempts"`
	Failures             int        `json:"failures"`
	Pending              int        `json:"pending"`
	OldestPendingSeconds float64    `json:"oldest_pending_seconds"`
	DeadLetters          int        `json:"dead_letters"`
	FailingSubjects      int        `json:"failing_subjects"`
	LastSuccessAt        *time.Time `json:"last_success_at"`
}

// healthOf is the owner's view of a tenant's health.Report. Its own type keeps the API's shape
// stable when ops' report grows.
func healthOf(r health.Report) *Health {
	h := &Health{
		Since: r.Since, Until: r.Until, WindowSeconds: r.WindowSeconds,
		Webhook: HealthWebhook{Received: r.Webhook.Received, Processed: r.Webhook.Processed,
			Ignored: r.Webhook.Ignored, Unapplied: r.Webhook.Unapplied},
		Integrations: make([]HealthIntegration, 0, len(r.Integrations)),
	}
	// health's rate also divides by system-wide rejections; a tenant has none, so the rate is
	// the tenant's own: 1 when nothing arrived.
	h.Webhook.SuccessRate = 1
	if r.Webhook.Received > 0 {
		h.Webhook.SuccessRate = float64(r.Webhook.Processed+r.Webhook.Ignored) / float64(r.Webhook.Received)
	}
	for _, i := range r.Integrations {
		h.Integrations = append(h.Integrations, HealthIntegration{
			Integration: i.Name, Attempts: i.Attempts, Failures: i.Failures, Pending: i.Pending,
			OldestPendingSeconds: i.OldestPendingSeconds, DeadLetters: i.DeadLetters,
			FailingSubjects: i.FailingSubjects, LastSuccessAt: i.LastSuccessAt,
		})
	}
	return h
}

// AccountTenant names the tenant the request acts for.
type AccountTenant struct {
	ID   uuid.UUID `json:"id"`
	Name string    `json:"name"`
}

// Billing is the tenant's billing projection, with a sentence for the portal.
type Billing struct {
	Status              string     `json:"status"`
	Message             string     `json:"message"`
	Plan                *string    `json:"plan"`
	CurrentPeriodEnd    *time.Time `json:"current_period_end"`
	CancelAtPeriodEnd   bool       `json:"cancel_at_period_end"`
	LastPaymentAt       *time.Time `json:"last_payment_at"`
	LastPaymentAmount   *int64     `json:"last_payment_amount"`
	LastPaymentCurrency *string    `json:"last_payment_currency"`
	LastFailureAt       *time.Time `json:"last_failure_at"`
	UpdatedAt           *time.Time `json:"updated_at"`
}

// Sync is the state of one integration's pushes for the tenant.
type Sync struct {
	Integration   string     `json:"integration"`
	State         string     `json:"state"`
	Message       string     `json:"message"`
	Waiting       int        `json:"waiting"`
	Failed        int        `json:"failed"`
	LastSuccessAt *time.Time `json:"last_success_at"`
	LastAttemptAt *time.Time `json:"last_attempt_at"`
}

// idleSyncs are the integrations always listed in Account.Syncs, with the words for "nothing
// yet" (a fresh slice per call: no shared mutable state).
func idleSyncs() []Sync {
	return []Sync{
		{Integration: "crm", State: "idle", Message: "nothing to sync to the CRM yet"},
		{Integration: "helpdesk", State: "idle", Message: "no support tickets yet"},
	}
}

// TicketSummary is one ticket of a list.
type TicketSummary struct {
	ID            uuid.UUID    `json:"id"`
	Subject       string       `json:"subject"`
	Category      string       `json:"category"`
	Priority      string       `json:"priority"`
	Status        string       `json:"status"`
	StatusMessage string       `json:"status_message"`
	Source        string       `json:"source"`
	CreatedAt     time.Time    `json:"created_at"`
	UpdatedAt     time.Time    `json:"updated_at"`
	Attachments   []Attachment `json:"attachments"`
}

// Ticket is one ticket with its text.
type Ticket struct {
	TicketSummary
	Body string `json:"body"`
}

// Attachment describes one file of a ticket.
type Attachment struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
}

// TicketPage is the answer of GET /v1/tickets.
type TicketPage struct {
	Tickets    []TicketSummary `json:"tickets"`
	NextCursor *string         `json:"next_cursor"`
}

func scopeOf(r *http.Request) (tenant.Scope, error) {
	s, ok := tenant.FromContext(r.Context())
	if !ok {
		return tenant.Scope{}, ErrNoScope
	}
	return s, nil
}

func (h *handler) account(w http.ResponseWriter, r *http.Request) {
	s, err := scopeOf(r)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	out := Account{Role: string(s.Role), Syncs: []Sync{}}
	var rep health.Report
	service, user := &pgx.Batch{}, &pgx.Batch{}
	owner := s.Require(tenant.Owner) == nil
	if owner {
		// Before the switch to the user, as the pool's role, because River's job table and the
		// kept counters are not granted to the portal role; the tenant id is the verified
		// scope's, never the request's.
		if err := health.QueueForTenant(service, s.TenantID, health.DefaultWindow, &rep); err != nil {
			web.Error(w, r, fmt.Errorf("read delivery health: %w", err))
			return
		}
	}
	queueAccount(user, s.TenantID, &out.Tenant, &out.Billing)
	queueSyncs(user, s.TenantID, &out.Syncs)
	if err := tenant.ReadBatchAsUser(r.Context(), h.pool, s, service, user); err != nil {
		web.Error(w, r, err)
		return
	}
	if owner {
		out.Health = healthOf(rep)
	}
	web.JSON(w, http.StatusOK, out)
}

func (h *handler) listTickets(w http.ResponseWriter, r *http.Request) {
	s, err := scopeOf(r)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	q := r.URL.Query()
	limit := DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			web.Error(w, r, problem.BadRequest(fmt.Sprintf("limit must be a whole number from 1 to %d", MaxLimit)))
			return
		}
		limit = n
	}
	var after *Cursor
	if v := q.Get("cursor"); v != "" {
		c, err := DecodeCursor(v)
		if err != nil {
			web.Error(w, r, problem.BadRequest("cursor is not valid; start again from the first page").WithCause(err))
			return
		}
		after = &c
	}
	var page TicketPage
	b := &pgx.Batch{}
	queueTickets(b, s.TenantID, after, limit, &page)
	err = tenant.ReadBatchAsUser(r.Context(), h.pool, s, nil, b)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	web.JSON(w, http.StatusOK, page)
}

func (h *handler) getTicket(w http.ResponseWriter, r *http.Request) {
	s, err := scopeOf(r)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	notFound := problem.NotFound("no ticket with this id")
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		// Same answer as an unknown id: the shape of an id tells a caller nothing.
		web.Error(w, r, notFound)
		return
	}
	var t Ticket
	var found bool
	b := &pgx.Batch{}
	queueTicket(b, s.TenantID, id, &t, &found)
	err = tenant.ReadBatchAsUser(r.Context(), h.pool, s, nil, b)
	switch {
	case err != nil:
		web.Error(w, r, err)
	case !found:
		web.Error(w, r, notFound)
	default:
		web.JSON(w, http.StatusOK, t)
	}
}

// Cursor is the position after which the next page of tickets starts.
type Cursor struct {
	CreatedAt time.Time `json:"t"`
	ID        uuid.UUID `json:"i"`
}

// Encode makes the cursor opaque to clients (base64url of a small JSON).
func (c Cursor) Encode() string {
	raw, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// DecodeCursor reads a cursor Encode made; anything else is ErrBadCursor.
func DecodeCursor(s string) (Cursor, error) {
	if len(s) > 200 {
		return Cursor{}, ErrBadCursor
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: %w", ErrBadCursor, err)
	}
	var c Cursor
	if err := json.Unmarshal(raw, &c); err != nil {
		return Cursor{}, fmt.Errorf("%w: %w", ErrBadCursor, err)
	}
	if c.CreatedAt.IsZero() || c.ID == uuid.Nil {
		return Cursor{}, ErrBadCursor
	}
	return c, nil
}
