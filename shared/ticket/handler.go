package ticket

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/idempotency"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/validation"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Route is the one route of ticket-create.
const Route = "POST /v1/tickets"

// DefaultSignTimeout bounds the signing of all of a ticket's upload URLs together.
const DefaultSignTimeout = 5 * time.Second

// Deps are what the handler is built from.
type Deps struct {
	Pool        *pgxpool.Pool
	Verifier    *auth.Verifier
	Idempotency *idempotency.Store
	Jobs        Enqueuer
	Uploads     UploadSigner
	// SignTimeout bounds signing all upload URLs of one request (DefaultSignTimeout when zero).
	SignTimeout time.Duration
}

// NewHandler serves POST /v1/tickets: auth.Require → tenant.Middleware → idempotency (key
// required, scoped to tenant and user) → create. Wrap it in web.Wrap (function.HTTP does).
func NewHandler(d Deps) http.Handler {
	if d.SignTimeout <= 0 {
		d.SignTimeout = DefaultSignTimeout
	}
	h := &handler{deps: d}
	create := d.Idempotency.Handler(idempotency.Options{
		Scope:    scope,
		Required: true,
	}, h.create)
	mux := http.NewServeMux()
	mux.Handle(Route, auth.Require(d.Verifier)(tenant.Middleware(d.Pool)(create)))
	return web.Route(mux)
}

// scope keeps one user's keys apart from everyone else's.
func scope(r *http.Request) (string, error) {
	s, ok := tenant.FromContext(r.Context())
	if !ok {
		return "", ErrNoScope
	}
	return "ticket-create:" + s.TenantID.String() + ":" + s.UserID.String(), nil
}

type handler struct{ deps Deps }

func (h *handler) create(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
	ctx := r.Context()
	s, ok := tenant.FromContext(ctx)
	if !ok {
		web.Error(w, r, ErrNoScope)
		return
	}
	var req CreateRequest
	if err := validation.DecodeJSON(r, &req); err != nil {
		web.Error(w, r, err)
		return
	}
	if err := checkText(req); err != nil {
		web.Error(w, r, err)
		return
	}
	t := build(s, req)
	signed, err := h.sign(ctx, t.Attachments)
	if err != nil {
		// Nothing is written yet; the idempotency store rolls back and frees the key.
		web.Error(w, r, problem.Unavailable("attachment storage is unavailable; retry shortly with the same Idempotency-Key").WithCause(err))
		return
	}
	createdAt, err := insertTicket(ctx, tx, t)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	if err := h.deps.Jobs.EnqueueHelpdeskTicket(ctx, tx, t.TenantID, t.ID); err != nil {
		web.Error(w, r, fmt.Errorf("enqueue helpdesk push: %w", err))
		return
	}
	out := Created{ID: t.ID, Status: StatusPendingSync, CreatedAt: createdAt.UTC(), Attachments: make([]CreatedAttachment, len(t.Attachments))}
	for i, a := range t.Attachments {
		out.Attachments[i] = CreatedAttachment{ID: a.ID, Name: a.Name, Size: a.Size, ContentType: a.ContentType,
			UploadURL: signed[i].url, ExpiresAt: signed[i].expiresAt}
	}
	w.Header().Set("Location", "/v1/tickets/"+t.ID.String())
	web.JSON(w, http.StatusCreated, out)
}

// build gives the ticket and its attachments their ids; tenant, user and requester come from
// the verified scope only.
func build(s tenant.Scope, req CreateRequest) newTicket {
	priority := req.Priority
	if priority == "" {
		priority = "normal"
	}
	t := newTicket{
		ID:             newID(),
		TenantID:       s.TenantID,
		UserID:         s.UserID,
		RequesterEmail: s.Identity.Email,
		RequesterName:  requesterName(s.Identity),
		Subject:        req.Subject,
		Body:           req.Body,
		Category:       req.Category,
		Priority:       priority,
	}
	for _, a := range req.Attachments {
		id := newID()
		t.Attachments = append(t.Attachments, newAttachment{
			ID: id, Name: a.Name, Size: a.Size, ContentType: a.ContentType,
			ObjectPath: ObjectPath(t.TenantID, t.ID, id, a.Name),
		})
	}
	return t
}

type signedUpload struct {
	url       string
	expiresAt time.Time
}

// sign asks Storage for every upload URL at once, within SignTimeout.
func (h *handler) sign(ctx context.Context, atts []newAttachment) ([]signedUpload, error) {
	if len(atts) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, h.deps.SignTimeout)
	defer cancel()
	out := make([]signedUpload, len(atts))
	errs := make([]error, len(atts))
	var wg sync.WaitGroup
	for i, a := range atts {
		wg.Go(func() {
			u, exp, err := h.deps.Uploads.SignUpload(ctx, a.ObjectPath)
			if err != nil {
				errs[i] = fmt.Errorf("sign upload URL for attachment %d: %w", i, err)
				return
			}
			out[i] = signedUpload{url: u, expiresAt: exp.UTC()}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkText refuses what validator tags cannot say: blank text, and NUL characters (Postgres
// text cannot hold them).
func checkText(req CreateRequest) error {
	var fields []problem.FieldError
	check := func(field, v string) {
		switch {
		case strings.TrimSpace(v) == "":
			fields = append(fields, problem.FieldError{Field: field, Message: "must not be blank"})
		case strings.ContainsRune(v, 0):
			fields = append(fields, problem.FieldError{Field: field, Message: "must not contain NUL characters"})
		}
	}
	check("subject", req.Subject)
	check("body", req.Body)
	for i, a := range req.Attachments {
		check(fmt.Sprintf("attachments[%d].name", i), a.Name)
	}
	if len(fields) == 0 {
		return nil
	}
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f.Field + " " + f.Message
	}
	return problem.Validation(strings.Join(parts, "; "), fields...)
}

// requesterName is the display name Supabase Auth keeps in user_metadata, if any.
func requesterName(id auth.Identity) string {
	var c struct {
		UserMetadata struct {
			FullName string `json:"full_name"`
			Name     string `json:"name"`
		} `json:"user_metadata"`
	}
	if json.Unmarshal(id.Claims, &c) != nil {
		return ""
	}
	name := c.UserMetadata.FullName
	if name == "" {
		name = c.UserMetadata.Name
	}
	name = strings.TrimSpace(strings.ReplaceAll(name, "\x00", ""))
	if r := []rune(name); len(r) > 200 {
		name = string(r[:200])
	}
	return name
}

// newID is a time-ordered UUID (v7): new rows land at the end of the primary key index.
func newID() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.New()
	}
	return id
}
