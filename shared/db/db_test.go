package db_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/supabase"
)

func TestMigrationsAreRecordedAndNotReapplied(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()

	ms, err := db.LoadMigrations(supabase.Migrations, "migrations")
	require.NoError(t, err)
	require.NotEmpty(t, ms)

	var recorded int
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from supabase_migrations.schema_migrations`).Scan(&recorded))
	require.Equal(t, len(ms), recorded, "every migration file is recorded as the Supabase CLI records it")

	applied, err := db.Migrate(ctx, pool, ms)
	require.NoError(t, err)
	require.Empty(t, applied, "a second run applies nothing")
}

func TestTenantsAndMembershipsAcceptTheirNamedColumnsOnly(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()

	var tenantID string
	require.NoError(t, pool.QueryRow(ctx,
		`insert into public.tenants (id, name) values (gen_random_uuid(), 'Acme') returning id`).Scan(&tenantID))
	_, err := pool.Exec(ctx,
		`insert into public.memberships (user_id, tenant_id, role) values (gen_random_uuid(), $1, 'owner')`, tenantID)
	require.NoError(t, err)

	_, err = pool.Exec(ctx,
		`insert into public.memberships (user_id, tenant_id, role) values (gen_random_uuid(), $1, 'superuser')`, tenantID)
	require.Error(t, err, "roles outside owner|admin|member are refused")
}

func TestTxRollsBackOnError(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()
	boom := errors.New("boom")

	err := db.Tx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into public.tenants (name) values ('half-written')`); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)

	var n int
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from public.tenants where name = 'half-written'`).Scan(&n))
	require.Zero(t, n, "nothing half-written is left behind")
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	_, err := db.Open(context.Background(), "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=1", db.Options{})
	require.Error(t, err)
	require.ErrorIs(t, err, db.ErrUnavailable)
	require.True(t, db.IsUnavailable(err))
}

func TestOpenDoesNotLeakThePassword(t *testing.T) {
	t.Parallel()
	_, err := db.Open(context.Background(), "postgres://u:s3cret-pw@%zz/x", db.Options{})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret-pw")
}

// Behind Supavisor in transaction mode each transaction may run on another server connection,
// where a statement prepared earlier does not exist. The pool must not rely on one: dropping
// every server-side prepared statement between two runs of the same query (what a switch of
// backend does) changes nothing.
func TestPoolNeedsNoServerSidePreparedStatements(t *testing.T) {
	t.Parallel()
	pool, err := db.Open(context.Background(), dbtest.NewURL(t), db.Options{MaxConns: 1})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()

	const q = `select count(*) from public.tenants where name = $1`
	var n int
	require.NoError(t, conn.QueryRow(ctx, q, "Acme").Scan(&n))
	_, err = conn.Exec(ctx, `deallocate all`)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, q, "Acme").Scan(&n), "the second run needs no statement left on the server")
}

// The local stand-in answers auth.uid(), auth.role() and auth.jwt() from request.jwt.claims
// as Supabase does, so RLS policies written for Supabase hold here: a member running as
// authenticated sees their own tenant and not another.
func TestStandinReadsTheClaimsAsSupabaseDoes(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()
	var mine, other, user string
	require.NoError(t, pool.QueryRow(ctx, `select gen_random_uuid()::text`).Scan(&user))
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (id, name) values (gen_random_uuid(), 'Mine') returning id`).Scan(&mine))
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (id, name) values (gen_random_uuid(), 'Other') returning id`).Scan(&other))
	_, err := pool.Exec(ctx, `insert into public.memberships (user_id, tenant_id, role) values ($1, $2, 'member')`, user, mine)
	require.NoError(t, err)

	claims := `{"sub":"` + user + `","role":"authenticated","email":"m@acme.test","aud":"authenticated"}`
	err = db.Tx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select set_config('request.jwt.claims', $1, true)`, claims); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `set local role authenticated`); err != nil {
			return err
		}
		var uid, role, email string
		require.NoError(t, tx.QueryRow(ctx, `select auth.uid()::text, auth.role(), auth.jwt() ->> 'email'`).Scan(&uid, &role, &email))
		require.Equal(t, []string{user, "authenticated", "m@acme.test"}, []string{uid, role, email})
		rows, err := tx.Query(ctx, `select id::text from public.tenants`)
		if err != nil {
			return err
		}
		visible, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.Equal(t, []string{mine}, visible, "RLS shows the member's own tenant only")
		return nil
	})
	require.NoError(t, err)
}
