package main

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// ui is the browser portal and ops console: plain HTML, CSS and JavaScript modules, no build
// step. It is embedded here, in the dev server only, so no Lambda bootstrap carries it (a test
// checks a built bootstrap for one of its strings).
//
//go:embed ui
var ui embed.FS

// signInTTL is how long a dev sign-in token lives (a working day).
const signInTTL = 12 * time.Hour

// console serves the browser UI at / and its dev-only JSON endpoints under /_dev/: the seeded
// people and their sign-in, delivery health, dead letters, the "send a Stripe event" form and
// what the HubSpot and Zendesk stand-ins received. Like /_dev/providers it needs no
// credentials: the dev server listens on loopback only. Every POST must be JSON, which a page
// of another origin cannot send without a CORS preflight this server never grants.
type console struct {
	s      *server
	events eventBuilder
	static http.Handler
}

func newConsole(s *server) (*console, error) {
	sub, err := fs.Sub(ui, "ui")
	if err != nil {
		return nil, fmt.Errorf("embedded ui: %w", err)
	}
	c := &console{s: s, static: http.StripPrefix("/ui/", http.FileServerFS(sub))}
	prices, _ := s.lookups["CheckoutCreateFunction"]("STRIPE_PRICE_IDS")
	c.events = eventBuilder{price: firstPrice(prices), now: time.Now}
	// Read once here (the requests then only read the map): without them the form answers 503
	// and the rest of the console works.
	if c.events.fixtures, err = stripemock.Fixtures(); err != nil {
		s.logger.Warn("dev console: no stripe-mock fixtures; 'send a Stripe event' is off", "error", err.Error())
	}
	return c, nil
}

// firstPrice is the first price id of STRIPE_PRICE_IDS ("price_..." or "plan=price_...").
func firstPrice(list string) string {
	for _, p := range strings.Split(list, ",") {
		if _, id, ok := strings.Cut(p, "="); ok {
			p = id
		}
		if p = strings.TrimSpace(p); p != "" {
			return p
		}
	}
	return ""
}

// mount adds the console's routes to the dev server's mux.
func (c *console) mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", c.index)
	mux.Handle("GET /ui/", c.headers(c.static))
	mux.HandleFunc("GET /_dev/world", c.world)
	mux.HandleFunc("POST /_dev/sign-in", c.json(c.signIn))
	mux.HandleFunc("GET /_dev/health", c.health)
	mux.HandleFunc("GET /_dev/dead-letters", c.deadLetters)
	mux.HandleFunc("POST /_dev/dead-letters/{id}/requeue", c.json(c.requeue))
	mux.HandleFunc("POST /_dev/stripe-events", c.json(c.sendEvent))
	mux.HandleFunc("GET /_dev/received", c.received)
}

// csp is the page's Content-Security-Policy: scripts and styles from this origin only (no
// inline script or style, no eval), API calls to this origin and uploads to Storage's.
func (c *console) csp() string {
	connect := "'self'"
	if u, ok := c.s.lookups["TicketCreateFunction"]("SUPABASE_URL"); ok {
		if p, err := url.Parse(u); err == nil && p.Host != "" {
			connect += " " + p.Scheme + "://" + p.Host
		}
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src " + connect +
		"; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
}

func (c *console) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", c.csp())
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if ct := mime.TypeByExtension(path.Ext(r.URL.Path)); ct != "" {
			h.Set("Content-Type", ct)
		}
		next.ServeHTTP(w, r)
	})
}

func (c *console) index(w http.ResponseWriter, r *http.Request) {
	page, err := ui.ReadFile("ui/index.html")
	if err != nil {
		http.Error(w, "the embedded portal is missing", http.StatusInternalServerError)
		return
	}
	c.headers(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})).ServeHTTP(w, r)
}

// json refuses a POST whose body is not JSON (a cross-origin form cannot send one without a
// preflight), then runs h.
func (c *console) json(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			devError(w, http.StatusUnsupportedMediaType, "send JSON (Content-Type: application/json)")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		h(w, r)
	}
}

// worldUser is a seeded person as the sign-in page lists them.
type worldUser struct {
	ID          uuid.UUID         `json:"id"`
	Email       string            `json:"email"`
	Name        string            `json:"name"`
	Memberships []worldMembership `json:"memberships"`
}

type worldMembership struct {
	TenantID   uuid.UUID `json:"tenant_id"`
	TenantName string    `json:"tenant_name"`
	Role       string    `json:"role"`
}

type worldTenant struct {
	ID   uuid.UUID `json:"id"`
	Name string    `json:"name"`
}

// world is what the page needs to start: who can sign in, the tenants, the plans, which
// optional routes exist, and the event kinds the console can send.
func (c *console) world(w http.ResponseWriter, _ *http.Request) {
	names := map[uuid.UUID]string{}
	var tenants []worldTenant
	for _, t := range demo.Tenants {
		names[t.ID] = t.Name
		tenants = append(tenants, worldTenant{t.ID, t.Name})
	}
	var users []worldUser
	for _, u := range demo.Users {
		wu := worldUser{ID: u.ID, Email: u.Email, Name: u.Name}
		for _, m := range u.Memberships {
			wu.Memberships = append(wu.Memberships, worldMembership{m.TenantID, names[m.TenantID], m.Role})
		}
		users = append(users, wu)
	}
	billingPortal := false
	for _, r := range c.s.routes {
		if r.Path == "/v1/billing-portal-sessions" {
			billingPortal = true
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"users": users, "tenants": tenants, "event_kinds": eventKinds,
		"prices": []string{c.events.price}, "billing_portal": billingPortal,
	})
}

// signIn mints an access token for a seeded user, as Supabase Auth would after a password
// sign-in, for the project the functions trust (the Supabase stand-in's issuer).
func (c *console) signIn(w http.ResponseWriter, r *http.Request) {
	var req struct {
		UserID uuid.UUID `json:"user_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		devError(w, http.StatusBadRequest, "the body must be {\"user_id\": \"<uuid>\"}")
		return
	}
	u, ok := demo.UserByID(req.UserID)
	if !ok {
		devError(w, http.StatusNotFound, "no seeded user with this id")
		return
	}
	lookup := c.s.lookups["PortalReadFunction"]
	secret, _ := lookup("SUPABASE_JWT_SECRET")
	issuer, _ := lookup("SUPABASE_URL")
	tok, err := demo.TokenFor(u, secret, issuer, signInTTL)
	if err != nil {
		devError(w, http.StatusInternalServerError, "could not mint a token")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": int(signInTTL.Seconds())})
}

// health is the whole system's delivery health (ops' view: `reconcile health`).
func (c *console) health(w http.ResponseWriter, r *http.Request) {
	rep, err := health.Read(r.Context(), c.s.pool, health.Query{})
	if err != nil {
		c.s.logger.Error("dev console: read health", "error", err.Error())
		devError(w, http.StatusServiceUnavailable, "could not read delivery health")
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// deadLetters lists both queues' dead letters, newest first.
func (c *console) deadLetters(w http.ResponseWriter, r *http.Request) {
	out := []jobs.DeadLetter{}
	for _, q := range []string{jobs.QueueCRM, jobs.QueueHelpdesk} {
		ds, err := jobs.DeadLetters(r.Context(), c.s.pool, q, nil)
		if err != nil {
			c.s.logger.Error("dev console: list dead letters", "error", err.Error())
			devError(w, http.StatusServiceUnavailable, "could not list the dead letters")
			return
		}
		out = append(out, ds...)
	}
	writeJSON(w, http.StatusOK, out)
}

// requeue puts one dead letter back on its queue (what `reconcile requeue --job` does).
func (c *console) requeue(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		devError(w, http.StatusNotFound, "no dead letter with this id")
		return
	}
	res, err := jobs.Requeue(r.Context(), c.s.pool, jobs.RequeueFilter{JobID: id})
	switch {
	case errors.Is(err, jobs.ErrNotDeadLetter):
		devError(w, http.StatusConflict, "job "+strconv.FormatInt(id, 10)+" is not a dead letter (already requeued?)")
	case err != nil:
		c.s.logger.Error("dev console: requeue", "error", err.Error())
		devError(w, http.StatusServiceUnavailable, "could not requeue the job")
	default:
		// Skipped: another job already covers the push (reconcile queued one), so the dead
		// letter was marked resolved instead of pushing twice.
		writeJSON(w, http.StatusOK, struct {
			Requeued int     `json:"requeued"`
			Skipped  []int64 `json:"skipped,omitempty"`
		}{res.Requeued, res.Skipped})
	}
}

// sendEvent builds a Stripe event from stripe-mock's fixtures for a seeded tenant, signs it
// with the webhook's secret and delivers it to POST /v1/webhooks/stripe over HTTP, exactly as
// Stripe would; it answers what the webhook answered.
func (c *console) sendEvent(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TenantID uuid.UUID `json:"tenant_id"`
		Kind     string    `json:"kind"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		devError(w, http.StatusBadRequest, "the body must be {\"tenant_id\": \"<uuid>\", \"kind\": \"payment_succeeded\"}")
		return
	}
	var tenant *demo.Tenant
	for i := range demo.Tenants {
		if demo.Tenants[i].ID == req.TenantID {
			tenant = &demo.Tenants[i]
		}
	}
	if tenant == nil {
		devError(w, http.StatusUnprocessableEntity, "choose one of the seeded tenants")
		return
	}
	if c.events.fixtures == nil {
		devError(w, http.StatusServiceUnavailable, "stripe-mock's fixtures could not be read at start (see the log)")
		return
	}
	payload, id, err := c.events.build(req.Kind, *tenant)
	if errors.Is(err, ErrUnknownEventKind) {
		devError(w, http.StatusUnprocessableEntity, "choose one of the event kinds")
		return
	}
	if err != nil {
		c.s.logger.Error("dev console: build event", "error", err.Error())
		devError(w, http.StatusInternalServerError, "could not build the event")
		return
	}
	status, body, err := c.deliver(r.Context(), payload)
	if err != nil {
		devError(w, http.StatusBadGateway, "the webhook did not answer")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"event_id": id, "webhook_status": status, "webhook_answer": json.RawMessage(body)})
}

// deliver posts a signed event to this server's webhook route.
func (c *console) deliver(ctx context.Context, payload []byte) (int, []byte, error) {
	secret, _ := c.s.lookups["PaymentWebhookFunction"]("STRIPE_WEBHOOK_SECRET")
	if i := strings.IndexByte(secret, ','); i >= 0 {
		secret = secret[:i]
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.s.baseURL()+"/v1/webhooks/stripe", bytes.NewReader(payload))
	if err != nil {
		return 0, nil, fmt.Errorf("deliver event: %w", err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	req.Header.Set(billing.SignatureHeader, billing.SignedTestEvent(secret, payload, time.Now()))
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("deliver event: %w", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return 0, nil, fmt.Errorf("read webhook answer: %w", err)
	}
	if !json.Valid(body) {
		body, _ = json.Marshal(string(body))
	}
	return res.StatusCode, body, nil
}

// receivedUpsert is one HubSpot upsert input as the stand-in received it.
type receivedUpsert struct {
	At         time.Time         `json:"at"`
	ObjectType string            `json:"object_type"`
	ID         string            `json:"id"`
	Properties map[string]string `json:"properties"`
}

// receivedTicket is one ticket the Zendesk stand-in created.
type receivedTicket struct {
	ID             int64     `json:"id"`
	ExternalID     string    `json:"external_id"`
	Subject        string    `json:"subject"`
	Status         string    `json:"status"`
	Priority       string    `json:"priority"`
	RequesterEmail string    `json:"requester_email"`
	CreatedAt      time.Time `json:"created_at"`
}

// received is what the HubSpot and Zendesk stand-ins received, newest last (null for a
// provider that is the real service here).
func (c *console) received(w http.ResponseWriter, _ *http.Request) {
	out := struct {
		HubSpot []receivedUpsert `json:"hubspot"`
		Zendesk []receivedTicket `json:"zendesk"`
	}{}
	if hub := c.s.stands.hub; hub != nil {
		out.HubSpot = []receivedUpsert{}
		for _, u := range hub.Upserts() {
			out.HubSpot = append(out.HubSpot, receivedUpsert{At: u.At, ObjectType: u.ObjectType, ID: u.ID, Properties: u.Properties})
		}
	}
	if desk := c.s.stands.desk; desk != nil {
		out.Zendesk = []receivedTicket{}
		for _, t := range desk.Tickets() {
			out.Zendesk = append(out.Zendesk, receivedTicket{ID: t.ID, ExternalID: t.ExternalID, Subject: t.Subject,
				Status: t.Status, Priority: t.Priority, RequesterEmail: t.RequesterEmail, CreatedAt: t.CreatedAt})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// devError answers a console endpoint's refusal: {"detail": "..."}, words a person can act on.
func devError(w http.ResponseWriter, status int, detail string) {
	writeJSON(w, status, map[string]any{"status": status, "detail": detail})
}
