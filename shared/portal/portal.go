// Package portal serves what the client portal reads: GET /v1/account (billing state and the
// state of every sync, in words a portal can show; for an owner also the tenant's delivery
// health), GET /v1/tickets (newest first, keyset pages) and GET /v1/tickets/{id}.
//
// A read is one SQL statement, one round trip: the route's PL/pgSQL function (migration
// portal_read_one_statement) resolves the caller's membership by tenant.Resolve's rules,
// switches to the calling user (role authenticated with the verified claims, as
// tenant.AsUser does) and reads views with security_invoker, so Postgres RLS is the second
// wall behind the tenant filter: another tenant's id, a malformed id and an unknown id all
// answer the same 404. The one exception is the owner's health section: River's job table and
// the kept counters are not readable by the portal role, so that statement runs as the pool's
// role, filtered by the resolved scope's tenant id, before the switch to the user. Postgres
// builds the answer's JSON in the shape of this package's types, and the handler writes it as
// is; refusals come back as codes the handler answers as problem+json.
package portal

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/db"
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
	// ErrNoIdentity means a handler ran without auth.Require in front (a wiring bug).
	ErrNoIdentity = errors.New("portal: no verified identity on the request")
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
		return auth.Require(d.Verifier)(f)
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

// Each route is one statement, a function of migration portal_read_one_statement: it
// resolves the caller's membership (tenant.Resolve's rules), reads an owner's health as the
// pool's role, switches to the user with the verified claims (tenant.AsUser's statement) and
// reads under RLS, then answers (refusal, tenant_id, role, body). body is the answer's JSON,
// built by Postgres in the shape of this package's types, and written as is.
const (
	accountCall = `select refusal, tenant_id, role, body from private.portal_read_account($1, $2, $3, $4)`
	ticketsCall = `select refusal, tenant_id, role, body from private.portal_read_tickets($1, $2, $3, $4, $5, $6)`
	ticketCall  = `select refusal, tenant_id, role, body from private.portal_read_ticket($1, $2, $3, $4)`
)

// refusalNotFound is portal_read_ticket's refusal for an unknown id or one RLS hides.
const refusalNotFound = "not_found"

// read runs one route's statement as the request's verified user (args after the user, the
// requested tenant and the claims) and writes its answer: the body, or the refusal as
// problem+json. notFound answers refusalNotFound (nil: the route has none).
func (h *handler) read(w http.ResponseWriter, r *http.Request, sql string, notFound error, args ...any) {
	id, ok := auth.FromContext(r.Context())
	if !ok {
		web.Error(w, r, ErrNoIdentity)
		return
	}
	if id.UserID == uuid.Nil || len(id.Claims) == 0 {
		web.Error(w, r, tenant.Refusal(tenant.RefusalNotMember))
		return
	}
	// [16]byte, not uuid.UUID: pgx encodes it directly instead of through its text.
	var requested any
	if v := r.Header.Get(tenant.Header); v != "" {
		t, err := tenant.ParseRequested(v)
		if err != nil {
			web.Error(w, r, err)
			return
		}
		requested = [16]byte(t)
	}
	var (
		refusal, role *string
		tenantID      pgtype.UUID
		body          []byte
	)
	all := append([]any{[16]byte(id.UserID), requested, string(id.Claims)}, args...)
	if err := h.pool.QueryRow(r.Context(), sql, all...).Scan(&refusal, &tenantID, &role, &body); err != nil {
		web.Error(w, r, fmt.Errorf("portal read: %w", db.Classify(err)))
		return
	}
	if tenantID.Valid && role != nil {
		web.AddLogAttrs(r.Context(),
			slog.String("tenant_id", uuid.UUID(tenantID.Bytes).String()), slog.String("tenant_role", *role))
	}
	switch {
	case refusal == nil:
		// Postgres writes "key" : value; compacted, the answer is byte for byte what
		// encoding/json wrote for this package's types (a scan, no decoding).
		var out bytes.Buffer
		out.Grow(len(body))
		if err := json.Compact(&out, body); err != nil {
			web.Error(w, r, fmt.Errorf("portal read: answer is not JSON: %w", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out.Bytes())
	case *refusal == refusalNotFound && notFound != nil:
		web.Error(w, r, notFound)
	default:
		web.Error(w, r, tenant.Refusal(*refusal))
	}
}

func (h *handler) account(w http.ResponseWriter, r *http.Request) {
	h.read(w, r, accountCall, nil, health.DefaultWindow.Seconds())
}

func (h *handler) listTickets(w http.ResponseWriter, r *http.Request) {
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
	var afterAt, afterID any
	if v := q.Get("cursor"); v != "" {
		c, err := DecodeCursor(v)
		if err != nil {
			web.Error(w, r, problem.BadRequest("cursor is not valid; start again from the first page").WithCause(err))
			return
		}
		afterAt, afterID = c.CreatedAt, [16]byte(c.ID)
	}
	h.read(w, r, ticketsCall, nil, afterAt, afterID, limit)
}

func (h *handler) getTicket(w http.ResponseWriter, r *http.Request) {
	notFound := problem.NotFound("no ticket with this id")
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		// Same answer as an unknown id: the shape of an id tells a caller nothing.
		web.Error(w, r, notFound)
		return
	}
	h.read(w, r, ticketCall, notFound, [16]byte(id))
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
