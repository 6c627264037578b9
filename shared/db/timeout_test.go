package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/db/pgbouncer"
)

// startPooler puts PgBouncer, at its defaults but for the stand-in's TLS and password, in
// transaction mode with ONE backend in front of a new test database: every client of it
// shares that backend, as clients of Supavisor share theirs.
func startPooler(t *testing.T) (direct, pooled string) {
	t.Helper()
	direct = dbtest.NewURL(t)
	pooled, _ = dbtest.Pooler(t, direct, pgbouncer.Options{PoolSize: 1}, "the statement timeout is not checked behind a transaction pooler")
	return direct, pooled
}

// sleeping counts the backends of direct's database that are running pg_sleep.
func sleeping(t *testing.T, direct string) int {
	t.Helper()
	return dbtest.Count(t, direct, `select count(*) from pg_stat_activity
		where datname = current_database() and state = 'active' and query like '%pg_sleep%' and pid <> pg_backend_pid()`)
}

// Behind a transaction pooler, PgBouncer refuses a connection that sends statement_timeout as a
// startup parameter (and, told to ignore it, drops it), and Supavisor drops it too: the bound
// has to travel inside the transaction. Through PgBouncer in transaction mode, a runaway
// statement run by each transaction helper is cancelled at the pool's StatementTimeout, on the
// server (nothing is left sleeping there), with an error that callers answer 503; the
// connection is kept; and the bound never stays on the backend, which the pooler lends to a
// client of another pool in between.
func TestARunawayStatementIsCancelledAtTheTimeoutBehindATransactionPooler(t *testing.T) {
	t.Parallel()
	direct, pooled := startPooler(t)
	ctx := context.Background()
	pool, err := db.Open(ctx, pooled, db.Options{MaxConns: 1, StatementTimeout: 200 * time.Millisecond})
	require.NoError(t, err, "the pool connects through a PgBouncer that was not told to ignore statement_timeout")
	t.Cleanup(pool.Close)
	other, err := db.Open(ctx, pooled, db.Options{MaxConns: 1, StatementTimeout: -1})
	require.NoError(t, err)
	t.Cleanup(other.Close)

	const runaway = `select pg_sleep(30)`
	helpers := map[string]func(ctx context.Context) error{
		"Tx": func(ctx context.Context) error {
			return db.Tx(ctx, pool, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, runaway)
				return err
			})
		},
		"PipeTx, in the begin's round trip": func(ctx context.Context) error {
			return db.PipeTx(ctx, pool, func(b *pgx.Batch) { b.Queue(runaway) }, func(*db.Pipe) error { return nil })
		},
		"PipeTx, later": func(ctx context.Context) error {
			return db.PipeTx(ctx, pool, nil, func(p *db.Pipe) error {
				_, err := p.Exec(ctx, runaway)
				return err
			})
		},
		"BatchTx": func(ctx context.Context) error {
			b := &pgx.Batch{}
			b.Queue(runaway)
			return db.BatchTx(ctx, pool, b)
		},
	}
	for name, run := range helpers {
		// The context outlives the timeout by far: only the server's bound can end the sleep.
		runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := run(runCtx)
		cancel()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, name)
		require.Equal(t, "57014", pgErr.Code, "%s: cancelled by the statement timeout: %v", name, err)
		require.ErrorIs(t, err, db.ErrUnavailable, "%s: answered 503, so Stripe and clients retry", name)
		require.Zero(t, sleeping(t, direct), "%s: nothing keeps running on the server", name)

		var timeout string
		require.NoError(t, db.Tx(ctx, other, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `show statement_timeout`).Scan(&timeout)
		}))
		require.Equal(t, "0", timeout, "%s: the bound stayed with its transaction, not on the shared backend", name)
	}
	require.Equal(t, int64(1), pool.Stat().NewConnsCount(), "a cancelled statement does not cost its connection")
}

// Without a pooler the bound is the same, and a statement that ends in time is not affected.
func TestTheStatementTimeoutBoundsTransactionsOnADirectConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.Open(ctx, dbtest.NewURL(t), db.Options{MaxConns: 1, StatementTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	err = db.Tx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select pg_sleep(0.05)`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `select pg_sleep(5)`)
		return err
	})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "57014", pgErr.Code)
	require.True(t, db.IsUnavailable(err))
	assertIdle(t, pool)
}

// assertIdle checks that pool's one connection is back, outside any transaction.
func assertIdle(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `select 1`).Scan(&n))
	require.Equal(t, int64(1), pool.Stat().NewConnsCount(), "the connection was kept")
}
