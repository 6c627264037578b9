package db_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/db/pgbouncer"
)

// DB_PREPARED_STATEMENTS=true behind a pooler in transaction mode is a misconfiguration: the
// pooler lends each transaction whichever backend is free, where the statement the pool
// prepared is missing. It must not pass as a vague 500. Through PgBouncer in transaction mode
// with two backends, a pool runs a query, another client takes the backend it ran on, and the
// pool runs the query again on the other backend (if its first did not already land there):
// prepared, it fails with
// ErrPreparedStatementLost, whose message names the setting (a 500, not an outage's 503);
// unnamed (the deployed default), it runs.
func TestPreparedStatementsBehindATransactionPoolerFailNamingTheSetting(t *testing.T) {
	t.Parallel()
	direct := dbtest.NewURL(t)
	pooled, _ := dbtest.Pooler(t, direct, pgbouncer.Options{PoolSize: 2, RoundRobin: true},
		"a prepared pool behind a transaction pooler is not checked")
	ctx := context.Background()
	other, err := pgx.Connect(ctx, pooled)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close(ctx) })

	const q = `select pg_backend_pid() + 0 * count(*) from public.tenants where name = $1`
	run := func(prepared bool) error {
		t.Helper()
		pool, err := db.Open(ctx, pooled, db.Options{MaxConns: 1, PreparedStatements: prepared})
		require.NoError(t, err)
		defer pool.Close()
		query := func() (pid int, err error) {
			err = db.Tx(ctx, pool, func(tx pgx.Tx) error { return tx.QueryRow(ctx, q, "Acme").Scan(&pid) })
			return pid, err
		}
		first, err := query()
		if err != nil {
			// Prepared, the pool's first round trip prepares the begin outside a transaction,
			// and the pooler may already lend the next one another backend.
			return err
		}
		// The other client holds the backend the query ran on, in a transaction, so the
		// pooler lends the pool its other backend.
		for tries := 0; ; tries++ {
			require.Less(t, tries, 20, "PgBouncer never lent the other client backend %d", first)
			tx, err := other.Begin(ctx)
			require.NoError(t, err)
			var pid int
			require.NoError(t, tx.QueryRow(ctx, `select pg_backend_pid()`).Scan(&pid))
			if pid == first {
				defer func() { require.NoError(t, tx.Rollback(ctx)) }()
				break
			}
			require.NoError(t, tx.Rollback(ctx))
		}
		second, err := query()
		if err == nil {
			require.NotEqual(t, first, second, "the query ran on the other backend")
		}
		return err
	}

	require.NoError(t, run(false), "unnamed statements run on whichever backend the pooler lends")
	err = run(true)
	require.ErrorIs(t, err, db.ErrPreparedStatementLost, "a prepared statement does not survive a change of backend")
	require.Contains(t, err.Error(), "DB_PREPARED_STATEMENTS=true")
	require.NotErrorIs(t, err, db.ErrUnavailable, "a misconfiguration, not an outage")
}
