package portal_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/web"
)

// readRoundTrips is the budget of every portal read: one statement, the route's function
// (migration portal_read_one_statement), which resolves the membership, reads an owner's
// health, switches to the user and reads under RLS, and answers the JSON that is written. A
// read was 7 round trips for an owner's account and 5 for the others, then 2 (the membership
// lookup, then a pipelined batch of begin, health, role and claims, the reads and commit: six
// statements, each parsed, planned and answered); each round trip and statement is CPU on
// both sides of the connection, which is where the read mix saturated.
const (
	readRoundTrips = 1
	readStatements = 1
)

// Every read, as the handler serves it to a warm connection, waits on the database at most
// readRoundTrips times and sends at most readStatements statements, whatever the route, the
// role or the answer (a 404 and a 403 included).
func TestEachReadIsOneStatementInOneRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	member := b.env.Seed(t, "Initech", "member")
	created := b.env.Create(t, b.a, "Where is my invoice?")
	b.env.Create(t, b.a, "And the one before?")
	exec(t, b, `insert into private.billing_accounts (tenant_id, status, plan) values ($1, 'active', 'pro')`, b.a.TenantID)
	exec(t, b, `insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, applied_at)
		values ('evt_rt', 'invoice.paid', now(), '{}', $1, 'processed', now())`, b.a.TenantID)

	// The same database as the stack, on one connection (so the warm-up describes every
	// statement on the connection the counted request uses), counted.
	counter := &dbtest.Counter{}
	pool, err := db.Open(ctx, b.env.Pool.Config().ConnString(), db.Options{MaxConns: 1, ApplicationName: "roundtrips", Tracer: counter})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	h := web.Wrap(portal.NewHandler(portal.Deps{Pool: pool, Verifier: b.env.Issuer.Verifier(t)}), web.Options{Logger: slog.New(slog.DiscardHandler)})
	counted := bundle{env: b.env, read: h}

	first := decode[portal.TicketPage](t, counted.get(t, b.a, "/v1/tickets?limit=1"))
	require.NotNil(t, first.NextCursor)
	cases := []struct {
		name   string
		as     string
		target string
		status int
	}{
		{"account, owner (with health)", "owner", "/v1/account", http.StatusOK},
		{"account, member", "member", "/v1/account", http.StatusOK},
		{"tickets, first page", "owner", "/v1/tickets", http.StatusOK},
		{"tickets, by cursor", "owner", "/v1/tickets?limit=1&cursor=" + *first.NextCursor, http.StatusOK},
		{"ticket by id", "owner", "/v1/tickets/" + created.ID.String(), http.StatusOK},
		{"ticket of another tenant", "member", "/v1/tickets/" + created.ID.String(), http.StatusNotFound},
		{"not a member of the requested tenant", "member asking for A", "/v1/tickets", http.StatusForbidden},
	}
	for _, tc := range cases {
		m := b.a
		var header []string
		switch tc.as {
		case "member":
			m = member
		case "member asking for A":
			m, header = member, []string{"X-Tenant-Id", b.a.TenantID.String()}
		}
		require.Equal(t, tc.status, counted.get(t, m, tc.target, header...).Code, tc.name) // warm: describes
		counter.Reset()
		w := counted.get(t, m, tc.target, header...)
		require.Equal(t, tc.status, w.Code, tc.name)
		got := counter.Reset()
		require.LessOrEqual(t, got.RoundTrips, readRoundTrips, "%s: %q", tc.name, got.SQL)
		require.LessOrEqual(t, got.Statements, readStatements, "%s: %q", tc.name, got.SQL)
		require.Zero(t, got.Describes, tc.name)
		if w.Code == http.StatusOK {
			requireGoShape(t, tc.target, w.Body.Bytes())
		}
	}
	// The read's switch to the user ended with its statement: the pool's one connection is
	// back as the pool's role, with no claims and no tenant, for whoever uses it next.
	var role, claims, tenantSetting string
	require.NoError(t, pool.QueryRow(ctx, `select current_user, coalesce(current_setting('request.jwt.claims', true), ''),
		coalesce(current_setting('app.tenant_id', true), '')`).Scan(&role, &claims, &tenantSetting))
	require.NotEqual(t, "authenticated", role)
	require.Empty(t, claims)
	require.Empty(t, tenantSetting)

	owner := decode[portal.Account](t, counted.get(t, b.a, "/v1/account"))
	require.NotNil(t, owner.Health)
	require.Equal(t, 1, owner.Health.Webhook.Received, "the health statement ran in the read")
	require.Equal(t, "subscription active", owner.Billing.Message)
}

// requireGoShape asserts that body, which Postgres built, is byte for byte what encoding/json
// writes for the route's type (key order, times in UTC with "Z", numbers, empty lists, the
// owner-only health left out): clients see the same answers as when Go encoded them.
func requireGoShape(t *testing.T, target string, body []byte) {
	t.Helper()
	var v any
	switch {
	case target == "/v1/account":
		v = &portal.Account{}
	case strings.HasPrefix(target, "/v1/tickets?") || target == "/v1/tickets":
		v = &portal.TicketPage{}
	default:
		v = &portal.Ticket{}
	}
	require.NoError(t, json.Unmarshal(body, v), string(body))
	again, err := json.Marshal(v)
	require.NoError(t, err)
	require.Equal(t, string(again), string(body))
}
