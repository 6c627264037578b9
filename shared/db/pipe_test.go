package db_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
)

// A Pipe sends its begin with the first statements, its deferred writes with the next
// statement that needs an answer, and its commit with the last writes: three round trips
// for work that costs six one statement at a time, and the statements run in the order the
// code issued them.
func TestPipeSavesRoundTripsAndKeepsOrder(t *testing.T) {
	t.Parallel()
	pool, counter := dbtest.NewCounted(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `create table public.pipe_log (n int primary key, seen int)`)
	require.NoError(t, err)

	counter.Reset()
	var first int
	err = db.PipeTx(ctx, pool, func(b *pgx.Batch) {
		b.Queue(`insert into public.pipe_log values (1, 0) returning n`).QueryRow(func(row pgx.Row) error { return row.Scan(&first) })
	}, func(p *db.Pipe) error {
		p.Defer(`insert into public.pipe_log values (2, 0)`)
		p.Defer(`insert into public.pipe_log values (3, 0)`)
		var seen int // the read sees the deferred writes: they went first
		if err := p.QueryRow(ctx, `select count(*) from public.pipe_log`).Scan(&seen); err != nil {
			return err
		}
		p.Defer(`update public.pipe_log set seen = $1 where n = 1`, seen)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, first)
	got := counter.Reset()
	require.Equal(t, 3, got.RoundTrips, "begin+insert, deferred+select, update+commit: %v", got.SQL)
	var seen int
	require.NoError(t, pool.QueryRow(ctx, `select seen from public.pipe_log where n = 1`).Scan(&seen))
	require.Equal(t, 3, seen)
}

// A deferred write that fails fails the transaction: nothing of it stays, the error comes
// back, and the connection goes back to the pool usable.
func TestPipeDeferredFailureRollsBackEverything(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `create table public.pipe_log (n int primary key)`)
	require.NoError(t, err)

	boom := errors.New("boom")
	for name, fn := range map[string]func(p *db.Pipe) error{
		"deferred write fails at commit": func(p *db.Pipe) error {
			p.Defer(`insert into public.pipe_log values (10)`)
			p.Defer(`insert into public.pipe_log values (10)`) // duplicate key
			return nil
		},
		"deferred write fails with the next statement": func(p *db.Pipe) error {
			p.Defer(`insert into public.pipe_log values (20)`)
			p.Defer(`insert into public.pipe_log values (20)`)
			_, err := p.Exec(ctx, `insert into public.pipe_log values (21)`)
			return err
		},
		"fn fails": func(p *db.Pipe) error {
			p.Defer(`insert into public.pipe_log values (30)`)
			return boom
		},
	} {
		err := db.PipeTx(ctx, pool, nil, fn)
		require.Error(t, err, name)
		if name == "fn fails" {
			require.ErrorIs(t, err, boom)
		} else {
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr, name)
			require.Equal(t, "23505", pgErr.Code, name)
		}
	}
	require.Equal(t, int64(1), pool.Stat().NewConnsCount(), "a failed transaction does not cost its connection")
	var n int
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from public.pipe_log`).Scan(&n))
	require.Zero(t, n, "nothing half-written is left behind")
	require.NoError(t, db.PipeTx(ctx, pool, nil, func(p *db.Pipe) error {
		_, err := p.Exec(ctx, `insert into public.pipe_log values (1)`)
		return err
	}), "the pool's connections are usable after the failures")
}

// Consecutive deferred calls of functions go to the database as one statement, in the order
// queued, each result scanned where its caller asked; a call that fails fails the
// transaction like any deferred write, and DeferCall on a plain transaction calls at once.
func TestPipeMergesDeferredCalls(t *testing.T) {
	t.Parallel()
	pool, counter := dbtest.NewCounted(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
		create table public.call_log (n int primary key, at int);
		create function public.log_call(p_n int) returns int language sql as
			$$ insert into public.call_log values (p_n, (select count(*) from public.call_log)) returning n * 10 $$;`)
	require.NoError(t, err)

	counter.Reset()
	var a, c int
	doneA := false
	err = db.PipeTx(ctx, pool, nil, func(p *db.Pipe) error {
		p.DeferCall("public.log_call", &a, func() error { doneA = true; return nil }, 1)
		p.DeferCall("public.log_call", nil, nil, 2)
		p.DeferCall("public.log_call", &c, nil, 3)
		return nil
	})
	require.NoError(t, err)
	got := counter.Reset()
	require.Equal(t, 2, got.RoundTrips, "begin, then the calls with the commit: %v", got.SQL)
	require.Equal(t, 4, got.Statements, "begin, the statement timeout, one select of the three calls, commit: %v", got.SQL)
	require.Equal(t, 10, a)
	require.Equal(t, 30, c)
	require.True(t, doneA)
	rows, err := pool.Query(ctx, `select at from public.call_log order by n`)
	require.NoError(t, err)
	order, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 2}, order, "each call saw the ones queued before it")

	err = db.PipeTx(ctx, pool, nil, func(p *db.Pipe) error {
		p.DeferCall("public.log_call", nil, nil, 4)
		p.DeferCall("public.log_call", nil, nil, 1) // duplicate key
		return nil
	})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "23505", pgErr.Code)

	require.NoError(t, db.Tx(ctx, pool, func(tx pgx.Tx) error { return db.DeferCall(ctx, tx, "public.log_call", 5) }))
	var n int
	require.NoError(t, pool.QueryRow(ctx, `select count(*) from public.call_log`).Scan(&n))
	require.Equal(t, 4, n, "the failed transaction left nothing; the plain one wrote at once")
}
