package portal

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
)

// RLS is the second wall: even a query that forgets the tenant filter (here: asks for B's
// tenant explicitly) sees nothing of B when it runs as A's user.
func TestReadsAsTheUserSeeNothingOfAnotherTenant(t *testing.T) {
	t.Parallel()
	env := tickettest.New(t)
	a, b := env.Seed(t, "A", "owner"), env.Seed(t, "B", "owner")
	theirs := env.Create(t, b, "B only")
	ctx := context.Background()
	scope := userScope(t, env, a, tenant.Owner)

	// Each query the route functions run on the views, as A's user (exactly as they switch
	// to it), asked for B's rows: no row comes back.
	for _, r := range []read{ticketRead(b.TenantID, theirs.ID), ticketPageRead(b.TenantID, nil, 10),
		ticketPageRead(b.TenantID, &Cursor{CreatedAt: time.Now().Add(time.Hour), ID: theirs.ID}, 10),
		syncsRead(b.TenantID), accountRead(b.TenantID)} {
		var n int
		require.NoError(t, tenant.ReadAsUser(ctx, env.Pool, scope, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "select count(*) from ("+r.SQL+") r", r.Args...).Scan(&n)
		}), r.SQL)
		require.Zero(t, n, r.SQL)
		// The same read as the service role does see B's row: the wall above is RLS's.
		require.NoError(t, env.Pool.QueryRow(ctx, "select count(*) from ("+r.SQL+") r", r.Args...).Scan(&n), r.SQL)
		require.Positive(t, n, r.SQL)
	}
}

// userScope is the scope tenant.Middleware gives m's requests: its verified token's identity.
func userScope(t *testing.T, env *tickettest.Env, m tickettest.Member, role tenant.Role) tenant.Scope {
	t.Helper()
	id, err := env.Issuer.Verifier(t).Verify(context.Background(), m.Token)
	require.NoError(t, err)
	return tenant.Scope{TenantID: m.TenantID, UserID: m.UserID, Role: role, Identity: id}
}

// A page of GET /v1/tickets, as the route function runs it (its kept generic plan, as the
// user under RLS), is an index range scan on tickets_tenant_created_idx that stops after the
// page: no sort and no scan of the tenant's (or anyone's) other tickets, first page and cursor
// pages alike.
func TestTicketPagesUseTheTenantCreatedIndexAsTheUser(t *testing.T) {
	t.Parallel()
	env := tickettest.New(t)
	a, b := env.Seed(t, "A", "member"), env.Seed(t, "B", "member")
	ctx := context.Background()
	// Enough rows that a sequential scan and a sort would be the cheaper plan without the index.
	_, err := env.Pool.Exec(ctx, `
		insert into public.tickets (tenant_id, user_id, subject, body, category, priority, created_at)
		select tn, u, 'Ticket ' || i, 'Body', 'other', 'normal', now() - make_interval(mins => i)
		from (values ($1::uuid, $2::uuid), ($3::uuid, $4::uuid)) as v(tn, u), generate_series(1, 5000) as i`,
		a.TenantID, a.UserID, b.TenantID, b.UserID)
	require.NoError(t, err)
	_, err = env.Pool.Exec(ctx, `
		insert into public.ticket_attachments (ticket_id, tenant_id, name, size_bytes, content_type, object_path)
		select id, tenant_id, 'a.txt', 1, 'text/plain', tenant_id || '/' || id || '/a.txt' from public.tickets`)
	require.NoError(t, err)
	_, err = env.Pool.Exec(ctx, `analyze public.tickets; analyze public.ticket_attachments; analyze public.memberships`)
	require.NoError(t, err)
	var ticket uuid.UUID
	require.NoError(t, env.Pool.QueryRow(ctx, `select id from public.tickets where tenant_id = $1 limit 1`, a.TenantID).Scan(&ticket))

	scope := userScope(t, env, a, tenant.Member)
	cursor := &Cursor{CreatedAt: time.Now().Add(-100 * time.Minute), ID: a.TenantID}
	plans, err := ExplainReads(ctx, env.Pool, scope, ticket, cursor)
	require.NoError(t, err)
	pages := 0
	for _, p := range plans {
		if !p.AsUser || !strings.Contains(p.Query, "order by t.created_at desc") {
			continue
		}
		pages++
		plan := string(p.JSON)
		top := planRoot(t, p)
		require.Equal(t, "Limit", top.str("Node Type"), p.Text)
		scan := top.children()[0]
		require.Contains(t, []string{"Index Scan", "Index Only Scan"}, scan.str("Node Type"), p.Text)
		require.Equal(t, "tickets_tenant_created_idx", scan.str("Index Name"), p.Text)
		require.Equal(t, float64(DefaultLimit+1), scan.num("Actual Rows"), "the scan stops after the page\n%s", p.Text)
		require.NotContains(t, plan, `"Sort"`, "the index gives the order")
		require.NotContains(t, plan, `"Seq Scan"`, "no table scan, attachments included")
		require.Contains(t, plan, "private.current_tenant_ids()", "RLS still applies")
	}
	require.Equal(t, 2, pages, "the first page and a cursor page")
}
