package tenant_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/tenant"
)

// relation is a table or view that holds tenant data, found in the catalog.
type relation struct {
	schema, name, kind string // kind: pg_class.relkind
	column             string // the column naming the tenant: tenant_id (tenants: id)
	rls, invoker       bool
}

func (r relation) ident() string { return pgx.Identifier{r.schema, r.name}.Sanitize() }

// tenantRelations lists every table and view in public and private with a tenant_id column
// (information_schema.columns), plus public.tenants itself, so relations added by later
// migrations are covered without touching this test.
func tenantRelations(t *testing.T, pool *pgxpool.Pool) []relation {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		select c.table_schema, c.table_name, k.relkind::text, c.column_name, k.relrowsecurity,
		       exists (select 1 from unnest(coalesce(k.reloptions, '{}')) o
		               where o ~* '^security_invoker=(true|on|yes|1)$')
		from information_schema.columns c
		join pg_class k on k.oid = (quote_ident(c.table_schema) || '.' || quote_ident(c.table_name))::regclass
		where c.table_schema in ('public', 'private')
		  and (c.column_name = 'tenant_id'
		       or (c.table_schema = 'public' and c.table_name = 'tenants' and c.column_name = 'id'))
		order by 1, 2`)
	require.NoError(t, err)
	rels, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (relation, error) {
		var r relation
		err := row.Scan(&r.schema, &r.name, &r.kind, &r.column, &r.rls, &r.invoker)
		return r, err
	})
	require.NoError(t, err)
	return rels
}

// seed writes one row of tenant data per table for a tenant, as the functions (which bypass
// RLS) would. A new table with a tenant_id column needs a line here: the RLS test fails
// until it has one, so no table escapes it by being empty.
func seed(t *testing.T, pool *pgxpool.Pool, tenantID, userID uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	ticket := uuid.New()
	stmts := []struct {
		sql  string
		args []any
	}{
		{`insert into public.tickets (id, tenant_id, user_id, subject, body, category, priority)
		  values ($1, $2, $3, 'Charged twice', 'Please refund', 'billing', 'high')`, []any{ticket, tenantID, userID}},
		{`insert into public.ticket_attachments (ticket_id, tenant_id, name, size_bytes, content_type, object_path)
		  values ($1, $2, 'receipt.pdf', 1024, 'application/pdf', $3)`,
			[]any{ticket, tenantID, tenantID.String() + "/" + ticket.String() + "/receipt.pdf"}},
		{`insert into private.stripe_events (id, type, created, payload, tenant_id, outcome)
		  values ($1, 'invoice.paid', now(), '{}', $2, 'processed')`, []any{"evt_" + tenantID.String(), tenantID}},
		{`insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, []any{"cus_" + tenantID.String(), tenantID}},
		{`insert into private.checkout_sessions (session_id, tenant_id) values ($1, $2)`, []any{"cs_" + tenantID.String(), tenantID}},
		{`insert into private.billing_accounts (tenant_id, status, plan) values ($1, 'active', 'pro')`, []any{tenantID}},
		{`insert into private.billing_subscriptions (tenant_id, subscription_id, status, plan) values ($1, $2, 'active', 'pro')`,
			[]any{tenantID, "sub_" + tenantID.String()}},
		{`insert into private.sync_status (integration, subject, tenant_id, state)
		  values ('crm', $1, $2, 'failed')`, []any{"tenant:" + tenantID.String(), tenantID}},
		{`insert into private.job_summary (tenant_id, integration, waiting, dead) values ($1, 'crm', 1, 1)
		  on conflict do nothing`, []any{tenantID}},
		{`insert into private.job_attempts (tenant_id, integration, bucket, succeeded, failed)
		  values ($1, 'crm', date_bin('5 minutes', now(), '2000-01-01'), 1, 1) on conflict do nothing`, []any{tenantID}},
		{`insert into private.crm_pushes (tenant_id, sent_version) values ($1, 1)`, []any{tenantID}},
	}
	for _, s := range stmts {
		_, err := pool.Exec(ctx, s.sql, s.args...)
		require.NoError(t, err, s.sql)
	}
}

func isDenied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501" // insufficient_privilege (grants or RLS)
}

// notUpdatable is a view that cannot take writes at all.
func notUpdatable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55000" // object_not_in_prerequisite_state
}

// asAnon runs fn as the anon role with no claims, as PostgREST does for the anon API key.
func asAnon(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	return db.Tx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select set_config('role', 'anon', true)`); err != nil {
			return err
		}
		return fn(tx)
	})
}

func TestRLSKeepsEveryTenantRelationToItsOwnTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	seed(t, b.pool, b.tenantA, b.userA)
	seed(t, b.pool, b.tenantB, b.userB)

	scopeOf := func(user uuid.UUID, tenantID uuid.UUID) tenant.Scope {
		s, err := tenant.Resolve(ctx, b.pool, b.identity(t, user), tenantID.String())
		require.NoError(t, err)
		return s
	}
	// A member of A only, and a member of both tenants acting for A: neither may see B.
	viewers := map[string]tenant.Scope{
		"member of A":          scopeOf(b.userA, b.tenantA),
		"member of both, as A": scopeOf(b.both, b.tenantA),
	}

	rels := tenantRelations(t, b.pool)
	found := map[string]bool{}
	for _, r := range rels {
		found[r.schema+"."+r.name] = true
	}
	for _, want := range []string{"public.tenants", "public.memberships", "public.tickets",
		"public.ticket_attachments", "private.billing_accounts", "private.sync_status",
		"private.stripe_events", "private.stripe_customers"} {
		require.True(t, found[want], "discovery found %s", want)
	}

	for _, r := range rels {
		t.Run(r.schema+"."+r.name, func(t *testing.T) {
			t.Parallel()
			switch r.kind {
			case "r", "p":
				require.True(t, r.rls, "%s holds tenant data: enable row level security on it", r.ident())
			case "v":
				require.True(t, r.invoker, "view %s must be created with (security_invoker = true), or it reads as its owner and skips RLS", r.ident())
			default:
				t.Fatalf("%s is a relation of kind %q: materialized views and foreign tables bypass RLS", r.ident(), r.kind)
			}

			// The fixture really holds rows of both tenants, so "sees nothing of B" means something.
			var ownA, ofB int
			require.NoError(t, b.pool.QueryRow(ctx, fmt.Sprintf(
				`select count(*) filter (where %[1]s = $1), count(*) filter (where %[1]s = $2) from %[2]s`,
				pgx.Identifier{r.column}.Sanitize(), r.ident()), b.tenantA, b.tenantB).Scan(&ownA, &ofB))
			require.Positive(t, ofB, "seed a row of tenant B into %s in seed() so this test covers it", r.ident())
			require.Positive(t, ownA, "seed a row of tenant A into %s in seed()", r.ident())

			var canSelect bool
			require.NoError(t, b.pool.QueryRow(ctx, `select has_table_privilege('authenticated', $1::regclass, 'SELECT')`,
				r.ident()).Scan(&canSelect))

			for who, s := range viewers {
				var other, own int
				err := tenant.ReadAsUser(ctx, b.pool, s, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, fmt.Sprintf(
						`select count(*) filter (where %[1]s is distinct from $1), count(*) filter (where %[1]s = $1) from %[2]s`,
						pgx.Identifier{r.column}.Sanitize(), r.ident()), b.tenantA).Scan(&other, &own)
				})
				if isDenied(err) {
					require.False(t, canSelect)
					continue
				}
				require.NoError(t, err, who)
				require.Zero(t, other, "%s sees rows of another tenant in %s", who, r.ident())
				require.Positive(t, own, "%s sees its own rows in %s (the check ran as the user)", who, r.ident())
			}

			var anonRows int
			err := asAnon(ctx, b.pool, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `select count(*) from `+r.ident()).Scan(&anonRows)
			})
			require.True(t, err == nil || isDenied(err), "anon reading %s: %v", r.ident(), err)
			require.Zero(t, anonRows, "anon sees nothing in %s", r.ident())

			// Writes go through the functions: the portal roles write nothing directly, for
			// another tenant or their own.
			for _, role := range []string{"anon", "authenticated"} {
				var canWrite bool
				require.NoError(t, b.pool.QueryRow(ctx, `
					select has_any_column_privilege($1, $2::regclass, 'INSERT')
					    or has_any_column_privilege($1, $2::regclass, 'UPDATE')
					    or has_table_privilege($1, $2::regclass, 'DELETE')
					    or has_table_privilege($1, $2::regclass, 'TRUNCATE')`, role, r.ident()).Scan(&canWrite))
				require.False(t, canWrite, "%s may write %s directly", role, r.ident())
			}
			for _, target := range []uuid.UUID{b.tenantB, b.tenantA} {
				err := tenant.ReadAsUser(ctx, b.pool, viewers["member of A"], func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, fmt.Sprintf(`insert into %s (%s) values ($1)`,
						r.ident(), pgx.Identifier{r.column}.Sanitize()), target)
					return err
				})
				require.True(t, isDenied(err) || notUpdatable(err),
					"inserting into %s as a member of A must be refused, got %v", r.ident(), err)
			}
		})
	}
}

func TestPrivateRelationsAreClosedToThePortalRoles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	seed(t, b.pool, b.tenantA, b.userA)
	_, err := b.pool.Exec(ctx, `
		insert into private.idempotency_keys (scope, key, request_hash, status, expires_at)
		values ($1, 'k', '\x00', 'in_progress', now() + interval '1 day')`, "ticket-create:"+b.tenantA.String())
	require.NoError(t, err)
	s, err := tenant.Resolve(ctx, b.pool, b.identity(t, b.userA), "")
	require.NoError(t, err)

	for _, rel := range []string{"private.stripe_events", "private.idempotency_keys", "private.stripe_customers"} {
		err := asAnon(ctx, b.pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `select * from `+rel)
			return err
		})
		require.True(t, isDenied(err), "anon reads %s: %v", rel, err)
		err = tenant.ReadAsUser(ctx, b.pool, s, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `select * from `+rel)
			return err
		})
		require.True(t, isDenied(err), "a member reads %s: %v", rel, err)
	}

	// Whatever later migrations add to private, anon gets none of it, and authenticated at
	// most reads a relation that carries a tenant_id (which the test above holds to RLS).
	rows, err := b.pool.Query(ctx, `
		select format('%I.%I', n.nspname, c.relname),
		       has_table_privilege('anon', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER'),
		       has_table_privilege('authenticated', c.oid, 'SELECT'),
		       has_table_privilege('authenticated', c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE'),
		       exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
		from pg_class c join pg_namespace n on n.oid = c.relnamespace
		where n.nspname = 'private' and c.relkind in ('r', 'p', 'v', 'm', 'f')`)
	require.NoError(t, err)
	type grants struct {
		rel                      string
		anyAnon, authRead, authW bool
		hasTenant                bool
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (grants, error) {
		var g grants
		return g, row.Scan(&g.rel, &g.anyAnon, &g.authRead, &g.authW, &g.hasTenant)
	})
	require.NoError(t, err)
	require.NotEmpty(t, all)
	for _, g := range all {
		require.False(t, g.anyAnon, "anon has a privilege on %s", g.rel)
		require.False(t, g.authW, "authenticated may write %s", g.rel)
		if g.authRead {
			require.True(t, g.hasTenant, "authenticated may read %s, which has no tenant_id to hold it to", g.rel)
		}
	}
	var anonUsage bool
	require.NoError(t, b.pool.QueryRow(ctx, `select has_schema_privilege('anon', 'private', 'USAGE')`).Scan(&anonUsage))
	require.False(t, anonUsage, "anon cannot even look into schema private")
}

// TestPublicSchemaHasRLSAndNoDefaultGrants guards what the Data API exposes. Supabase's default
// privileges give anon and authenticated every right on each new table in public (the test
// database has them too), so a migration that forgets to revoke them opens the table.
func TestPublicSchemaHasRLSAndNoDefaultGrants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows, err := b.pool.Query(context.Background(), `
		select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
		where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity`)
	require.NoError(t, err)
	open, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Empty(t, open, "the Data API exposes public: every table needs row level security")

	rows, err = b.pool.Query(context.Background(), `
		select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
		where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
		  and (has_table_privilege('anon', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')
		    or has_table_privilege('authenticated', c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER'))`)
	require.NoError(t, err)
	granted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Empty(t, granted, "anon may use, or authenticated may write, these public relations: revoke the default grants")
}

// TestTenantPoliciesFollowSupabasesRLSPerformanceAdvice holds every policy to Supabase's RLS
// performance guide: auth.uid() and the tenant lookup wrapped in a select, so Postgres runs
// them once per statement (an initPlan) instead of once per row, and every table that holds
// tenant data indexed on its tenant column, so the policy's filter is an index scan.
func TestTenantPoliciesFollowSupabasesRLSPerformanceAdvice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	rows, err := b.pool.Query(ctx, `
		select format('%I.%I %s', schemaname, tablename, policyname),
		       coalesce(qual, '') || ' ' || coalesce(with_check, '')
		from pg_policies where schemaname in ('public', 'private')`)
	require.NoError(t, err)
	type policy struct{ name, expr string }
	policies, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (policy, error) {
		var p policy
		return p, row.Scan(&p.name, &p.expr)
	})
	require.NoError(t, err)
	require.NotEmpty(t, policies)
	call := regexp.MustCompile(`(auth\.(uid|jwt|role)|private\.current_tenant_ids)\(\)`)
	for _, p := range policies {
		for _, at := range call.FindAllStringIndex(p.expr, -1) {
			require.True(t, strings.HasSuffix(p.expr[:at[0]], "( SELECT "),
				"policy %s calls %s per row; wrap it: (select %[2]s)", p.name, p.expr[at[0]:at[1]])
		}
	}

	led := func(rel, column string) bool {
		var ok bool
		require.NoError(t, b.pool.QueryRow(ctx, `
			select exists (
				select 1 from pg_index i
				join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
				where i.indrelid = $1::regclass and a.attname = $2)`, rel, column).Scan(&ok))
		return ok
	}
	for _, r := range tenantRelations(t, b.pool) {
		if r.kind == "v" {
			continue // a view reads its tables' indexes
		}
		require.True(t, led(r.ident(), r.column), "%s has no index that starts with %s", r.ident(), r.column)
	}
	// private.current_tenant_ids() finds the caller's memberships by user.
	require.True(t, led("public.memberships", "user_id"), "public.memberships has no index that starts with user_id")
}
