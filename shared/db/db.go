// Package db opens the Postgres pool every function shares and runs transactions on it.
//
// The pool is sized for Lambda (one invocation at a time per container, so a handful of
// connections), has connect and idle timeouts so a frozen container does not hold server
// slots, and by default never depends on server-side prepared statements surviving between
// transactions, so it works behind Supavisor's transaction mode as well as on a direct
// connection. Where the connection keeps its backend, Options.PreparedStatements spares
// Postgres the parse and plan of every statement.
package db

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrUnavailable marks an error as "the database could not be reached": callers answer 503 so a
// webhook sender retries, instead of 500.
var ErrUnavailable = errors.New("database unavailable")

// ErrPreparedStatementLost marks an error as a statement prepared on one backend run on
// another: Options.PreparedStatements behind a pooler in transaction mode. It names the
// setting, so the log line of the failed request says what to change.
var ErrPreparedStatementLost = errors.New("a prepared statement is missing on this backend or already there " +
	"(DB_PREPARED_STATEMENTS=true needs a DATABASE_URL that keeps its backend: a direct connection or a pooler " +
	"in session mode, not Supavisor's transaction mode)")

// Querier is what data-access code needs from a pool, a connection or a transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ Querier = (*pgxpool.Pool)(nil)
	_ Querier = (pgx.Tx)(nil)
)

// Options tune the pool; the zero value suits a Lambda function.
type Options struct {
	// MaxConns bounds the pool (default 4: one request at a time plus the queue client).
	MaxConns int32
	// MinConns keeps that many connections open, from the start and however long they idle
	// (pgxpool's MinConns; at most MaxConns). Zero suits a Lambda instance, which serves one
	// request at a time. A long-running server that takes bursts sets it to MaxConns: a new
	// backend forks, reads the catalog and compiles the PL/pgSQL it is asked to run, tens of
	// milliseconds of CPU each on a 2-core box, so a first burst that opens a dozen at once
	// waits past the dev server's 100 ms queue (the side-by-side harness at 200/s, 2026-11-30:
	// 23, 45 and 25 deliveries refused in a fresh server's first second, none with the pool
	// kept open).
	MinConns int32
	// ConnectTimeout bounds each new connection (default 5 s).
	ConnectTimeout time.Duration
	// StatementTimeout bounds every statement of the transactions that Tx, PipeTx and
	// BatchTx run, so a stuck query cannot outlive the function (default 10 s; 0 keeps the
	// default, negative disables). It is sent as `set local statement_timeout` in the same
	// pipeline as the begin, never as a startup parameter: PgBouncer refuses a connection
	// that names one it does not know (08P01, unless ignore_startup_parameters lists it, and
	// then it is dropped), Supavisor drops it, and a session-level SET would stay on a
	// backend that a transaction pooler then lends to other clients. Statements sent on the
	// pool outside these helpers get the server's own bound (on Supabase, the role's).
	StatementTimeout time.Duration
	// ApplicationName shows in pg_stat_activity (default "portal-functions").
	ApplicationName string
	// Lazy skips the first ping: a Lambda cold start must not fail because the database is
	// briefly down; requests then answer 503 until it is back.
	Lazy bool
	// PreparedStatements prepares each statement once per connection and then only binds and
	// executes it (pgx's statement cache), sparing Postgres the parse, analysis and planning
	// that an unnamed statement costs on every execution: a fifth of its work per webhook
	// delivery (make bench-pg). Only for a connection that keeps its backend: a direct
	// connection or a pooler in session mode. A pooler in transaction mode (Supavisor on
	// port 6543, PgBouncer before 1.21 or without max_prepared_statements) hands the next
	// transaction another backend, where the statement does not exist. Off by default: the
	// functions' documented connection is Supavisor's transaction mode.
	PreparedStatements bool
	// Tracer sees every query, batch and prepare on the pool's connections (pgx's tracing
	// hooks): tests count round trips with it (dbtest.Counter), a deployment may log with it.
	Tracer pgx.QueryTracer
}

// Open connects a pool to url and checks that the server answers.
func Open(ctx context.Context, url string, opts Options) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message can echo the URL, password included: keep it out.
		return nil, errors.New("parse DATABASE_URL: not a valid postgres URL or DSN")
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 4
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	if opts.StatementTimeout == 0 {
		opts.StatementTimeout = 10 * time.Second
	}
	if opts.ApplicationName == "" {
		opts.ApplicationName = "portal-functions"
	}
	cfg.MaxConns = opts.MaxConns
	cfg.MinConns = min(opts.MinConns, opts.MaxConns)
	cfg.MaxConnIdleTime = time.Minute
	cfg.MaxConnLifetime = 30 * time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	// Without PreparedStatements, describe each statement on its connection and cache only the
	// description, never a named server-side statement: safe when a transaction pooler hands
	// us another backend.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	if opts.PreparedStatements {
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = opts.ApplicationName
	cfg.ConnConfig.Tracer = opts.Tracer
	var setTimeout string
	if opts.StatementTimeout > 0 {
		setTimeout = fmt.Sprintf("set local statement_timeout = %d", max(opts.StatementTimeout.Milliseconds(), 1))
	}
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		registerUUID(conn.TypeMap())
		if setTimeout != "" {
			conn.PgConn().CustomData()[timeoutKey] = setTimeout
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", Classify(err))
	}
	if opts.Lazy {
		return pool, nil
	}
	pingCtx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database: %w", Classify(err))
	}
	return pool, nil
}

// Beginner starts transactions; a pool and a transaction (for a savepoint) both are one.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Tx runs fn in a transaction: committed when fn returns nil, rolled back otherwise (and on
// panic). The error says whether the database was unavailable. On a pool opened by Open, the
// begin and the pool's statement timeout go in one round trip, as a plain Begin's would.
func Tx(ctx context.Context, b Beginner, fn func(tx pgx.Tx) error) error {
	var err error
	if pool, ok := b.(Acquirer); ok {
		err = boundedTx(ctx, pool, fn)
	} else {
		err = pgx.BeginFunc(ctx, b, fn)
	}
	if err != nil {
		return Classify(err)
	}
	return nil
}

// timeoutKey names, in a connection's CustomData, the statement that sets the pool's
// statement timeout for one transaction (Options.StatementTimeout).
const timeoutKey = "portal-functions/db.set-statement-timeout"

// queueBegin queues the begin of a transaction on conn and then queueTimeout's statement.
func queueBegin(b *pgx.Batch, conn *pgx.Conn) {
	b.BeginTx(pgx.TxOptions{})
	queueTimeout(b, conn)
}

// queueTimeout queues, right after a begin, the statement that bounds the transaction's
// statements, if conn's pool has one (Options.StatementTimeout): sent in the begin's
// pipeline, it costs a statement but no round trip. It is `set local`, so it ends with the
// transaction and never stays on a backend that a transaction pooler lends to others.
func queueTimeout(b *pgx.Batch, conn *pgx.Conn) {
	if sql, ok := conn.PgConn().CustomData()[timeoutKey].(string); ok {
		b.Queue(sql)
	}
}

// boundedTx is pgx.BeginFunc on a connection of pool whose begin carries the statement timeout.
func boundedTx(ctx context.Context, pool Acquirer, fn func(tx pgx.Tx) error) (err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	// Released after the commit or rollback: the pool closes a connection left in a
	// transaction instead of lending it again.
	defer conn.Release()
	b := &pgx.Batch{}
	queueBegin(b, conn.Conn())
	br := conn.Conn().SendBatch(ctx, b)
	tx := br.Tx()
	if err := br.Close(); err != nil {
		return err
	}
	defer func() {
		// As PipeTx's: the rollback runs even when ctx is done (a cancelled one would close
		// the connection instead), bounded so a dead server cannot hold it.
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		if rbErr := tx.Rollback(rbCtx); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) && err == nil {
			err = rbErr
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Detach returns a context for database work that must not end with the request that asked
// for it: it keeps ctx's values and its deadline, if that is sooner than d from now, but not
// its cancellation. pgx closes a connection whose query is cancelled mid-flight, so work that
// a client's hang-up cancels costs a reconnect as well as the work, exactly when the server is
// overloaded and clients give up.
func Detach(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

// Classify wraps err with ErrUnavailable when it says the server could not be reached or went
// away (connection refused, timeouts while connecting, admin shutdown, too many connections)
// or did not answer in time (a statement cancelled at the statement timeout),
// so the edge answers 503 rather than 500; with ErrPreparedStatementLost when a prepared
// statement was missing on the backend (a 500 whose log names the setting to change). Other
// errors come back unchanged.
func Classify(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if IsUnavailable(err) {
		return &unavailableError{err: err}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "26000" || pgErr.Code == "42P05") && !errors.Is(err, ErrPreparedStatementLost) {
		// invalid_sql_statement_name, duplicate_prepared_statement: only pgx's statement
		// cache names statements here, so its backend changed under it.
		return fmt.Errorf("%w: %w", ErrPreparedStatementLost, err)
	}
	return err
}

// IsUnavailable reports whether err means the database could not be reached.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08": // connection exception
			return true
		case pgErr.Code == "53300", pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03":
			return true
		case pgErr.Code == "57014": // query_canceled: past statement_timeout, or a cancel request
			return true
		}
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return pgconn.SafeToRetry(err)
}

type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() []error {
	return []error{ErrUnavailable, e.err}
}
