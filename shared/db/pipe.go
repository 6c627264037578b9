package db

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Acquirer hands out pooled connections (a *pgxpool.Pool).
type Acquirer interface {
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
}

var _ Acquirer = (*pgxpool.Pool)(nil)

// rollbackTimeout bounds the rollback of a failed Pipe.
const rollbackTimeout = 5 * time.Second

// Pipe is a transaction that spends as few round trips as its work allows. Its begin goes
// out with the first statements (PipeTx), writes whose answer nobody waits for are deferred
// (Defer) and go out with the next statement that needs an answer, and the commit goes out
// with the last of them. Each round trip is a wait on the database that a request pays in
// latency and a busy Postgres pays in context switches; a delivery of the webhook needs two
// or three instead of ten.
//
// A Pipe is a pgx.Tx, so code written for one (River's InsertTx, a helper taking a pgx.Tx)
// runs on it unchanged: any statement it sends directly first sends what was deferred, in
// the same round trip when it is an Exec, so the order of statements is always the order in
// which the code issued them.
type Pipe struct {
	pgx.Tx
	conn    *pgxpool.Conn
	pending *pgx.Batch
	calls   []deferredCall // deferred function calls not yet sealed into pending
}

// deferredCall is a function call queued by DeferCall.
type deferredCall struct {
	fn   string
	args []any
	dest any          // where its result is scanned (nil: ignored)
	done func() error // run once dest holds the result (nil: none)
}

var _ pgx.Tx = (*Pipe)(nil)

// Defer queues a statement whose result the caller does not wait for; its error, if any,
// comes back from the next statement sent or from the commit, and fails the transaction.
// The returned query takes a callback (Exec, QueryRow) to read the result when it arrives.
func (p *Pipe) Defer(sql string, args ...any) *pgx.QueuedQuery {
	p.seal()
	if p.pending == nil {
		p.pending = &pgx.Batch{}
	}
	return p.pending.Queue(sql, args...)
}

// DeferCall queues a call of the function fn (a qualified name, never user input) with args,
// whose result is scanned into dest (nil: ignored) and then done runs (nil: nothing), when the
// answer arrives. Consecutive calls go to the database as ONE statement, select fn1($1, ...),
// fn2($n, ...), ...: each statement costs Postgres a parse, a plan, a portal and a snapshot
// whatever it does, and a PL/pgSQL function's own statements keep their plans. The calls of one
// statement run in the order queued (Postgres evaluates a select list left to right); use them
// for writes that do not read each other's results. Errors come back as with Defer.
func (p *Pipe) DeferCall(fn string, dest any, done func() error, args ...any) {
	p.calls = append(p.calls, deferredCall{fn: fn, args: args, dest: dest, done: done})
}

// seal turns the queued calls into one statement at the end of pending.
func (p *Pipe) seal() {
	if len(p.calls) == 0 {
		return
	}
	calls := p.calls
	p.calls = nil
	var (
		sql   strings.Builder
		args  []any
		dests []any
	)
	sql.WriteString("select ")
	for i, c := range calls {
		if i > 0 {
			sql.WriteString(", ")
		}
		sql.WriteString(c.fn)
		sql.WriteByte('(')
		for j, a := range c.args {
			if j > 0 {
				sql.WriteString(", ")
			}
			args = append(args, a)
			sql.WriteByte('$')
			sql.WriteString(strconv.Itoa(len(args)))
		}
		sql.WriteByte(')')
		dests = append(dests, c.dest)
	}
	if p.pending == nil {
		p.pending = &pgx.Batch{}
	}
	p.pending.Queue(sql.String(), args...).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(dests...); err != nil {
			return err
		}
		for _, c := range calls {
			if c.done != nil {
				if err := c.done(); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// DeferCall calls fn now on a transaction (its result ignored), or defers the call on a Pipe
// (Pipe.DeferCall): for a write whose answer nobody waits for, in code that runs on both.
func DeferCall(ctx context.Context, tx pgx.Tx, fn string, args ...any) error {
	if p, ok := tx.(*Pipe); ok {
		p.DeferCall(fn, nil, nil, args...)
		return nil
	}
	var sql strings.Builder
	sql.WriteString("select " + fn + "(")
	for i := range args {
		if i > 0 {
			sql.WriteString(", ")
		}
		sql.WriteString("$" + strconv.Itoa(i+1))
	}
	sql.WriteString(")")
	_, err := tx.Exec(ctx, sql.String(), args...)
	return err
}

// Defer sends sql now on a transaction, or defers it on a Pipe: for a write whose answer
// nobody waits for, in code that runs on both.
func Defer(ctx context.Context, tx pgx.Tx, sql string, args ...any) error {
	if p, ok := tx.(*Pipe); ok {
		p.Defer(sql, args...)
		return nil
	}
	_, err := tx.Exec(ctx, sql, args...)
	return err
}

// SendBatch sends b on tx and waits for it, its results read by its queries' callbacks; on a
// Pipe, in the same round trip as what was deferred.
func SendBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	if p, ok := tx.(*Pipe); ok {
		p.seal()
		if p.pending == nil {
			p.pending = &pgx.Batch{}
		}
		p.pending.QueuedQueries = append(p.pending.QueuedQueries, b.QueuedQueries...)
		return p.Flush(ctx)
	}
	return tx.SendBatch(ctx, b).Close()
}

// Flush sends what was deferred and waits for it.
func (p *Pipe) Flush(ctx context.Context) error {
	p.seal()
	if p.pending == nil || p.pending.Len() == 0 {
		return nil
	}
	b := p.pending
	p.pending = nil
	return p.Tx.SendBatch(ctx, b).Close()
}

// Exec sends what was deferred and then sql, in one round trip.
func (p *Pipe) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p.seal()
	if p.pending == nil || p.pending.Len() == 0 {
		return p.Tx.Exec(ctx, sql, args...)
	}
	var tag pgconn.CommandTag
	p.Defer(sql, args...).Exec(func(ct pgconn.CommandTag) error {
		tag = ct
		return nil
	})
	return tag, p.Flush(ctx)
}

// Query sends what was deferred and then sql, in one round trip. The connection is busy
// until the rows are closed, as with any pgx query.
func (p *Pipe) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	p.seal()
	if p.pending == nil || p.pending.Len() == 0 {
		return p.Tx.Query(ctx, sql, args...)
	}
	b := p.pending
	p.pending = nil
	deferred := len(b.QueuedQueries)
	b.Queue(sql, args...)
	br := p.Tx.SendBatch(ctx, b)
	for _, qq := range b.QueuedQueries[:deferred] {
		var err error
		if qq.Fn != nil {
			err = qq.Fn(br)
		} else {
			_, err = br.Exec()
		}
		if err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		rows.Close()
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow sends what was deferred and then sql, in one round trip.
func (p *Pipe) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	p.seal()
	if p.pending == nil || p.pending.Len() == 0 {
		return p.Tx.QueryRow(ctx, sql, args...)
	}
	rows, err := p.Query(ctx, sql, args...)
	if err != nil {
		return errRow{err}
	}
	return rowOf{rows}
}

// CopyFrom sends what was deferred, then copies.
func (p *Pipe) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := p.Flush(ctx); err != nil {
		return 0, err
	}
	return p.Tx.CopyFrom(ctx, table, columns, src)
}

// SendBatch sends what was deferred, then b.
func (p *Pipe) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := p.Flush(ctx); err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return p.Tx.SendBatch(ctx, b)
}

// Begin sends what was deferred, then starts a savepoint.
func (p *Pipe) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := p.Flush(ctx); err != nil {
		return nil, err
	}
	return p.Tx.Begin(ctx)
}

// Commit sends what was deferred and the commit in one round trip, and gives the connection
// back to the pool.
func (p *Pipe) Commit(ctx context.Context) error {
	if p.conn == nil {
		return pgx.ErrTxClosed
	}
	p.seal()
	b := p.pending
	if b == nil {
		b = &pgx.Batch{}
	}
	p.pending = nil
	// Sent on the connection itself: the transaction pgx began for the first batch would
	// send a commit of its own.
	err := sendWithCommit(ctx, p.conn, b)
	p.release(ctx)
	return err
}

// sendWithCommit sends b followed by a commit on conn, in one round trip, and reads every
// result. When a statement (or its callback) fails before the commit ran, it ends the
// transaction with a rollback, so the connection can go back to the pool instead of being
// closed; a commit the server turned into a rollback is pgx.ErrTxCommitRollback.
func sendWithCommit(ctx context.Context, conn *pgxpool.Conn, b *pgx.Batch) error {
	var tag pgconn.CommandTag
	b.Queue("commit").Exec(func(ct pgconn.CommandTag) error {
		tag = ct
		return nil
	})
	err := conn.Conn().SendBatch(ctx, b).Close()
	if err == nil && tag.String() == "ROLLBACK" {
		err = pgx.ErrTxCommitRollback
	}
	if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		_, _ = conn.Exec(rbCtx, "rollback")
		cancel()
	}
	return err
}

// Rollback drops what was deferred, rolls back and gives the connection back to the pool.
func (p *Pipe) Rollback(ctx context.Context) error {
	if p.conn == nil {
		return pgx.ErrTxClosed
	}
	p.pending, p.calls = nil, nil
	_, err := p.conn.Exec(ctx, "rollback")
	p.release(ctx)
	return err
}

// release hands the connection back; the pool closes it if it is not idle outside a
// transaction (a failed commit or rollback).
func (p *Pipe) release(context.Context) {
	p.conn.Release()
	p.conn = nil
}

// PipeTx runs fn in a Pipe on a connection of pool: the begin goes out together with what
// first queues (nothing when first is nil), whose callbacks have run when fn is called.
// Committed when fn returns nil (with the deferred writes, in one round trip), rolled back
// otherwise and on panic. Like Tx, the error says whether the database was unavailable.
func PipeTx(ctx context.Context, pool Acquirer, first func(b *pgx.Batch), fn func(p *Pipe) error) (err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return Classify(fmt.Errorf("acquire connection: %w", err))
	}
	b := &pgx.Batch{}
	queueBegin(b, conn.Conn())
	if first != nil {
		first(b)
	}
	br := conn.Conn().SendBatch(ctx, b)
	p := &Pipe{Tx: br.Tx(), conn: conn}
	defer func() {
		if p.conn != nil {
			// fn failed or panicked, or the first batch did: nothing of it may stay. The
			// rollback runs even when ctx is done (a cancelled one would close the
			// connection instead), bounded so a dead server cannot hold it forever.
			rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			if rbErr := p.Rollback(rbCtx); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) && err == nil {
				err = Classify(rbErr)
			}
		}
	}()
	if err := br.Close(); err != nil {
		return Classify(err)
	}
	if err := fn(p); err != nil {
		return Classify(err)
	}
	return Classify(p.Commit(ctx))
}

// batchRows are the rows of the last query of a batch; closing them closes the batch.
type batchRows struct {
	pgx.Rows
	br     pgx.BatchResults
	closed bool
	err    error
}

func (r *batchRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = r.br.Close()
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// rowOf is pgx's QueryRow over rows: the first row, pgx.ErrNoRows when there is none.
type rowOf struct{ rows pgx.Rows }

func (r rowOf) Scan(dest ...any) error {
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// errRow is a pgx.Row that fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
