// Package tickettest builds a real ticket-create stack for tests of this package and of the
// packages that read or push tickets (portal, helpdesk): a fresh migrated database, a token
// issuer, the Storage fake, the real handler behind web.Wrap, and members seeded in tenants.
package tickettest

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/auth/authtest"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/idempotency"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/storage"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Bucket is the attachments bucket of the stack.
const Bucket = "ticket-attachments"

// Env is one test's ticket-create stack.
type Env struct {
	Pool    *pgxpool.Pool
	Issuer  *authtest.Issuer
	Storage *storagefake.TestServer
	Signer  *storage.Client
	Handler http.Handler // POST /v1/tickets behind web.Wrap
}

// Member is a seeded portal user of one tenant.
type Member struct {
	TenantID uuid.UUID
	UserID   uuid.UUID
	Email    string
	Token    string
}

// New builds the stack on a fresh database.
func New(t testing.TB) *Env {
	t.Helper()
	pool := dbtest.New(t)
	iss := authtest.New(t)
	fake := storagefake.NewTest(t, storagefake.DefaultServiceKey)
	signer, err := storage.New(storage.Config{SupabaseURL: fake.URL(), ServiceRoleKey: config.Secret(storagefake.DefaultServiceKey), Bucket: Bucket})
	if err != nil {
		t.Fatalf("tickettest: storage client: %v", err)
	}
	ins, err := jobs.NewInserter(pool)
	if err != nil {
		t.Fatalf("tickettest: inserter: %v", err)
	}
	h := ticket.NewHandler(ticket.Deps{
		Pool: pool, Verifier: iss.Verifier(t), Idempotency: idempotency.New(pool), Jobs: ins, Uploads: signer,
	})
	return &Env{Pool: pool, Issuer: iss, Storage: fake, Signer: signer, Handler: web.Wrap(h, web.Options{Logger: slog.New(slog.DiscardHandler)})}
}

// Seed creates a tenant named name with one active member of role and mints the member's token.
func (e *Env) Seed(t testing.TB, name, role string) Member {
	t.Helper()
	ctx := context.Background()
	m := Member{UserID: uuid.New()}
	m.Email = "user-" + m.UserID.String()[:8] + "@example.com"
	if err := e.Pool.QueryRow(ctx, `insert into public.tenants (name, contact_email) values ($1, $2) returning id`,
		name, "billing@"+m.UserID.String()[:8]+".example.com").Scan(&m.TenantID); err != nil {
		t.Fatalf("tickettest: seed tenant: %v", err)
	}
	if _, err := e.Pool.Exec(ctx, `insert into public.memberships (tenant_id, user_id, role) values ($1, $2, $3)`,
		m.TenantID, m.UserID, role); err != nil {
		t.Fatalf("tickettest: seed membership: %v", err)
	}
	m.Token = e.Issuer.Token(t, m.UserID, authtest.WithEmail(m.Email),
		authtest.WithClaims(map[string]any{"user_metadata": map[string]any{"full_name": "Ada " + name}}))
	return m
}

// Post sends POST /v1/tickets with body (marshalled when not []byte) as m, with key.
func (e *Env) Post(t testing.TB, m Member, key string, body any) *httptest.ResponseRecorder {
	t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatalf("tickettest: marshal body: %v", err)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/tickets", bytes.NewReader(raw))
	r.Header.Set("Content-Type", "application/json")
	if m.Token != "" {
		r.Header.Set("Authorization", "Bearer "+m.Token)
	}
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	w := httptest.NewRecorder()
	e.Handler.ServeHTTP(w, r)
	return w
}

// Create posts a valid ticket as m and returns its answer; it fails t unless the answer is 201.
func (e *Env) Create(t testing.TB, m Member, subject string, attachments ...ticket.AttachmentRequest) ticket.Created {
	t.Helper()
	w := e.Post(t, m, uuid.NewString(), ticket.CreateRequest{
		Subject: subject, Body: "Body of " + subject, Category: "technical", Priority: "high", Attachments: attachments,
	})
	if w.Code != http.StatusCreated {
		t.Fatalf("tickettest: create ticket: %d %s", w.Code, w.Body.String())
	}
	var out ticket.Created
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("tickettest: decode 201: %v", err)
	}
	return out
}
