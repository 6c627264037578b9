// Package demo is the small local world that `make dev`, `make events`, `make invoke` and the
// function tests share: two tenants (Demo Co and Harbor Ltd), each with an owner, a member and
// a ticket, plus one consultant who belongs to both (so a portal must pick a tenant with
// X-Tenant-Id), all at fixed ids, and the
// re-signing of sample events (fresh Stripe signatures, fresh access tokens) with the local
// development secrets. A sample event signed an hour ago would fail the webhook's 300 s
// tolerance, and a token expires, so every tool re-signs before it sends.
//
// Nothing here is a production value: the secrets are the ones env.json gives every developer.
package demo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/db"
)

// The demo world's fixed ids and local secrets (the same values env.json holds).
var (
	// TenantID is the demo tenant ("Demo Co").
	TenantID = uuid.MustParse("6f2d9b8e-3c1a-4e5f-9a7b-0c1d2e3f4a5b")
	// UserID is the demo tenant's owner; the sample events' tokens are minted for them.
	UserID = uuid.MustParse("8a4c2e1f-7b3d-4c6e-8f9a-1b2c3d4e5f60")
	// TicketID is a ticket of the demo tenant that GET /v1/tickets/{id} samples read.
	TicketID = uuid.MustParse("3b7e1d2c-9f8a-4b6c-8d5e-2f1a0b9c8d7e")

	// SecondTenantID is the second tenant ("Harbor Ltd"): what a member of the demo tenant
	// must never see.
	SecondTenantID = uuid.MustParse("c4a1f0de-5b2e-4d7a-9c3f-6e8b1a2d4f70")
	// SecondTicketID is a ticket of the second tenant.
	SecondTicketID = uuid.MustParse("d2e8c1b0-4a6f-4e3d-8b9c-7f1e2d3c4b5a")
)

// Tenant is a seeded tenant and the Stripe customer it maps to.
type Tenant struct {
	ID         uuid.UUID
	Name       string
	Contact    string
	CustomerID string
}

// Membership is a user's role in one tenant.
type Membership struct {
	TenantID uuid.UUID
	Role     string
}

// User is a seeded person who can sign in to the dev portal.
type User struct {
	ID          uuid.UUID
	Email       string
	Name        string
	Memberships []Membership
}

// Ticket is a seeded ticket.
type Ticket struct {
	ID, TenantID, UserID    uuid.UUID
	Subject, Body, Category string
}

// Tenants are the seeded tenants, the demo tenant first.
var Tenants = []Tenant{
	{ID: TenantID, Name: TenantName, Contact: UserEmail, CustomerID: CustomerID},
	{ID: SecondTenantID, Name: "Harbor Ltd", Contact: "owner@harbor.test", CustomerID: "cus_harbor_local"},
}

// Users are the people of the demo world: the demo owner (whose tokens the sample events
// carry) first.
var Users = []User{
	{ID: UserID, Email: UserEmail, Name: "Dana Owner", Memberships: []Membership{{TenantID, "owner"}}},
	{ID: uuid.MustParse("5e0c7a1b-2d3f-4a8e-9b6c-1d2e3f4a5b61"), Email: "member@demo.test", Name: "Milo Member",
		Memberships: []Membership{{TenantID, "member"}}},
	{ID: uuid.MustParse("9b1d3f5a-7c2e-4e6a-8d0b-2c3d4e5f6a72"), Email: "owner@harbor.test", Name: "Hana Harbor",
		Memberships: []Membership{{SecondTenantID, "owner"}}},
	{ID: uuid.MustParse("1f3a5c7e-9b2d-4f6a-8c0e-3d4e5f6a7b83"), Email: "member@harbor.test", Name: "Hugo Deck",
		Memberships: []Membership{{SecondTenantID, "member"}}},
	{ID: uuid.MustParse("7a9c1e3f-5d2b-4a6c-9e0f-4e5f6a7b8c94"), Email: "consultant@both.test", Name: "Casey Consultant",
		Memberships: []Membership{{TenantID, "admin"}, {SecondTenantID, "member"}}},
}

// Tickets are the seeded tickets, one per tenant.
var Tickets = []Ticket{
	{ID: TicketID, TenantID: TenantID, UserID: UserID, Subject: "Invoice address",
		Body: "Please put our VAT number on the invoices.", Category: "billing"},
	{ID: SecondTicketID, TenantID: SecondTenantID, UserID: uuid.MustParse("9b1d3f5a-7c2e-4e6a-8d0b-2c3d4e5f6a72"),
		Subject: "Export of last year's invoices", Body: "Our accountant needs them as one PDF.", Category: "billing"},
}

// UserByID finds a seeded user.
func UserByID(id uuid.UUID) (User, bool) {
	for _, u := range Users {
		if u.ID == id {
			return u, true
		}
	}
	return User{}, false
}

// Local development values (env.json).
const (
	TenantName    = "Demo Co"
	UserEmail     = "owner@demo.test"
	WebhookSecret = "whsec_local_development_secret"
	JWTSecret     = "local-development-jwt-secret-at-least-32-characters"
	SupabaseURL   = "http://127.0.0.1:54321"
	// CustomerID is the Stripe customer the demo tenant maps to (stripe-mock's fixture customer).
	CustomerID = "cus_demo_local"
)

// ErrNotAnHTTPEvent is a sample event that is not an API Gateway HTTP API request: it has
// nothing to re-sign.
var ErrNotAnHTTPEvent = errors.New("demo: not an API Gateway HTTP API event")

// Seed creates the demo world (Tenants, Users with their memberships, Tickets, and each
// tenant's Stripe customer), or leaves what exists as it is: running it twice changes nothing.
func Seed(ctx context.Context, q db.Querier) error {
	type step struct {
		what string
		sql  string
		args []any
	}
	var steps []step
	for _, t := range Tenants {
		steps = append(steps,
			step{"tenant", `insert into public.tenants (id, name, contact_email) values ($1, $2, $3)
				on conflict (id) do nothing`, []any{t.ID, t.Name, t.Contact}},
			step{"stripe customer", `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)
				on conflict (customer_id) do nothing`, []any{t.CustomerID, t.ID}})
	}
	for _, u := range Users {
		steps = append(steps, step{"user", `insert into auth.users (id, email) values ($1, $2) on conflict (id) do nothing`,
			[]any{u.ID, u.Email}})
		for _, m := range u.Memberships {
			steps = append(steps, step{"membership", `insert into public.memberships (tenant_id, user_id, role) values ($1, $2, $3)
				on conflict (tenant_id, user_id) do nothing`, []any{m.TenantID, u.ID, m.Role}})
		}
	}
	for _, t := range Tickets {
		u, _ := UserByID(t.UserID)
		steps = append(steps, step{"ticket", `insert into public.tickets (id, tenant_id, user_id, requester_email, requester_name,
				subject, body, category, priority)
			values ($1, $2, $3, $4, $5, $6, $7, $8, 'normal')
			on conflict (id) do nothing`, []any{t.ID, t.TenantID, t.UserID, u.Email, u.Name, t.Subject, t.Body, t.Category}})
	}
	for _, s := range steps {
		if _, err := q.Exec(ctx, s.sql, s.args...); err != nil {
			return fmt.Errorf("seed demo %s: %w", s.what, err)
		}
	}
	return nil
}

// Token mints an access token for the demo owner, as Supabase Auth would issue it for the
// project at supabaseURL, valid for ttl.
func Token(secret, supabaseURL string, ttl time.Duration) (string, error) {
	return TokenFor(Users[0], secret, supabaseURL, ttl)
}

// TokenFor mints an access token for a seeded user, as Supabase Auth would issue it for the
// project at supabaseURL, valid for ttl (the dev portal's sign-in).
func TokenFor(u User, secret, supabaseURL string, ttl time.Duration) (string, error) {
	now := time.Now()
	session := "demo-session" // the demo owner's, as the committed sample tokens carry
	if u.ID != UserID {
		session += "-" + u.Email
	}
	tok, err := auth.MintHS256([]byte(secret), auth.TokenClaims{
		Subject:   u.ID.String(),
		Email:     u.Email,
		Role:      "authenticated",
		AAL:       "aal1",
		SessionID: uuid.NewSHA1(uuid.NameSpaceURL, []byte(session)).String(),
		Issuer:    auth.IssuerFor(supabaseURL),
		Audience:  []string{"authenticated"},
		IssuedAt:  now,
		ExpiresAt: now.Add(ttl),
		AppMetadata: map[string]any{
			"provider":  "email",
			"providers": []string{"email"},
		},
	})
	if err != nil {
		return "", fmt.Errorf("mint demo token: %w", err)
	}
	return tok, nil
}

// Signer says how to re-sign: the secrets, the project and the token lifetime. An empty
// secret leaves that kind of credential as it is.
type Signer struct {
	WebhookSecret string
	JWTSecret     string
	SupabaseURL   string
	TokenTTL      time.Duration
	// Now stamps the Stripe signature (default time.Now).
	Now func() time.Time
}

// Local is the Signer for the local development secrets.
func Local(ttl time.Duration) Signer {
	return Signer{WebhookSecret: WebhookSecret, JWTSecret: JWTSecret, SupabaseURL: SupabaseURL, TokenTTL: ttl}
}

// Changes reports what Refresh rewrote.
type Changes struct {
	Signature bool
	Token     bool
}

// Refresh re-signs an API Gateway HTTP API sample event: a Stripe-Signature header is
// recomputed over the body, a Bearer token is replaced by a fresh one for the demo owner. Only
// those values change in the text, so the file keeps its layout. A non-HTTP event is returned
// as it is with ErrNotAnHTTPEvent.
func (s Signer) Refresh(raw []byte) ([]byte, Changes, error) {
	var ev struct {
		Version         string            `json:"version"`
		RouteKey        string            `json:"routeKey"`
		Headers         map[string]string `json:"headers"`
		Body            string            `json:"body"`
		IsBase64Encoded bool              `json:"isBase64Encoded"`
	}
	var ch Changes
	if err := json.Unmarshal(raw, &ev); err != nil || ev.Version != "2.0" || ev.RouteKey == "" {
		return raw, ch, ErrNotAnHTTPEvent
	}
	out := string(raw)
	for name, value := range ev.Headers {
		switch strings.ToLower(name) {
		case "stripe-signature":
			if s.WebhookSecret == "" {
				continue
			}
			body := []byte(ev.Body)
			if ev.IsBase64Encoded {
				b, err := base64.StdEncoding.DecodeString(ev.Body)
				if err != nil {
					return raw, ch, fmt.Errorf("decode sample body: %w", err)
				}
				body = b
			}
			now := time.Now
			if s.Now != nil {
				now = s.Now
			}
			signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
				Payload: body, Secret: s.WebhookSecret, Timestamp: now(),
			})
			out = replaceValue(out, value, signed.Header)
			ch.Signature = true
		case "authorization":
			if s.JWTSecret == "" || !strings.HasPrefix(value, "Bearer ") {
				continue
			}
			tok, err := Token(s.JWTSecret, s.SupabaseURL, s.TokenTTL)
			if err != nil {
				return raw, ch, err
			}
			out = replaceValue(out, value, "Bearer "+tok)
			ch.Token = true
		}
	}
	return []byte(out), ch, nil
}

// replaceValue swaps a JSON string value (as encoded in the file) for another.
func replaceValue(doc, old, repl string) string {
	o, _ := json.Marshal(old)
	n, _ := json.Marshal(repl)
	return strings.ReplaceAll(doc, string(o), string(n))
}
