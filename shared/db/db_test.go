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
