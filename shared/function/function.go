// Package function is the one way a Lambda entry point starts: it loads the function's
// settings from the environment (failing at cold start with one error that names every
// missing or malformed variable, never a value), opens the shared resources, builds the
// function and hands it to the Lambda runtime. The dev server builds the very same functions
// from the same definitions, so what runs locally is what runs in Lambda.
package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/web"
)

// Base is what every function reads from the environment.
type Base struct {
	DatabaseURL config.Secret `env:"DATABASE_URL" required:"true"`
	LogLevel    string        `env:"LOG_LEVEL" default:"info"`
	// DBMaxConns bounds the pool (Lambda serves one request at a time per container).
	DBMaxConns int `env:"DB_MAX_CONNS" default:"4"`
	// DBStatementTimeout bounds each statement of the function's transactions (sent with
	// their begin as set local, so it holds behind a transaction pooler); keep it below the
	// function's Timeout so a runaway statement is answered 503 before Lambda kills it.
	DBStatementTimeout time.Duration `env:"DB_STATEMENT_TIMEOUT" default:"10s"`
	// DBPreparedStatements prepares each statement once per connection (db.Options): only for
	// a DATABASE_URL that keeps its backend (direct, or a pooler in session mode), never
	// Supavisor's transaction mode.
	DBPreparedStatements bool `env:"DB_PREPARED_STATEMENTS" default:"false"`
}

// Deps are the resources a function is built from. The Lambda runner makes one set per
// container; the dev server shares one set between all functions.
type Deps struct {
	Name       string
	Pool       *pgxpool.Pool
	Logger     *slog.Logger
	Metrics    *telemetry.Metrics
	HTTPClient *http.Client
	// Lookup reads the environment (os.LookupEnv in Lambda; the dev server's overlay locally).
	Lookup func(string) (string, bool)
	// Limit bounds the HTTP requests running at once on Pool, shared by every function on
	// it (web.Options.Limit); nil: no bound.
	Limit *web.Limiter
}

// HTTP is a function served through API Gateway: Build turns its config into a handler.
// C is a struct with `env` tags (see package config).
type HTTP[C any] struct {
	Name  string
	Build func(ctx context.Context, deps Deps, cfg C) (http.Handler, error)
	// MaxBody bounds request bodies in web.Wrap (web.DefaultMaxBody when zero). A handler that
	// enforces its own, smaller limit (to count and log what it refuses) sets a larger one here
	// so oversized requests reach it instead of being answered before it.
	MaxBody int64
}

// Invoked is a function called with an event (schedule, manual invoke) that returns a result.
type Invoked[C, In, Out any] struct {
	Name  string
	Build func(ctx context.Context, deps Deps, cfg C) (func(ctx context.Context, in In) (Out, error), error)
}

// Handler loads C from deps.Lookup and builds the handler wrapped in web.Wrap (used by the
// dev server and tests; Lambda goes through Start).
func (f HTTP[C]) Handler(ctx context.Context, deps Deps) (http.Handler, error) {
	var cfg C
	if err := config.LoadFrom(deps.Lookup, &cfg); err != nil {
		return nil, err
	}
	h, err := f.Build(ctx, deps, cfg)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", f.Name, err)
	}
	return web.Wrap(detached(h), web.Options{Logger: deps.Logger, MaxBody: f.MaxBody, Limit: deps.Limit}), nil
}

// WorkTimeout bounds what a request's handler does once its client has gone: the functions'
// Timeout in template.yaml (Globals), which Lambda's own deadline enforces there.
const WorkTimeout = 15 * time.Second

// detached serves h with a request context that keeps the request's values and deadline
// (Lambda's, or WorkTimeout from now if that is sooner) but not its client's hang-up. pgx
// closes a connection whose query is cancelled mid-flight, so under overload, where clients
// give up, every abandoned request would cost a reconnect (a new backend, or a TLS and SCRAM
// login at the pooler) on top of its work, and behind a transaction pooler its statement runs
// on regardless. Letting a short request finish costs less. In Lambda nothing changes: API
// Gateway does not cancel an invocation whose client left, and the deadline is kept. The
// limiter in web.Wrap still sees the client's context, so a request that waits for a slot and
// is abandoned leaves at once.
func detached(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := db.Detach(r.Context(), WorkTimeout)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// FunctionName reports the function's name (for the dev server's registry).
func (f HTTP[C]) FunctionName() string { return f.Name }

// Start runs f under the Lambda runtime; it never returns. The instance runs Go with one P
// (OneProc) unless GOMAXPROCS is set.
func (f HTTP[C]) Start() {
	if OneProc(os.LookupEnv) {
		runtime.GOMAXPROCS(1)
	}
	ctx := context.Background()
	deps, cfg := mustLoad[C](ctx, f.Name)
	h, err := f.Build(ctx, deps, cfg)
	if err != nil {
		fail(deps.Logger, fmt.Errorf("build %s: %w", f.Name, err))
	}
	lambda.Start(web.Lambda(web.Wrap(detached(h), web.Options{Logger: deps.Logger, MaxBody: f.MaxBody, Limit: deps.Limit})))
}

// OneProc reports whether an HTTP function's Lambda instance should run Go with one P: yes,
// unless the environment sets GOMAXPROCS. An instance serves one request at a time (Lambda
// sends the next invocation only after the answer), so a second P runs nothing alongside it
// and only adds the scheduler's hand-offs between threads at each database round trip: with
// one, BenchmarkWebhookDelivery (one delivery at a time, as an instance serves them) used 21 %
// less CPU per delivery (471 -> 373 us, p=0.002, -cpu 2 vs 1) at the same latency. The dev
// server runs one P as well (cmd/dev), though it serves many requests at once: its work is
// waiting on Postgres, which shares the machine's cores.
func OneProc(lookup func(string) (string, bool)) bool {
	_, set := lookup("GOMAXPROCS")
	return !set
}

// Start runs f under the Lambda runtime; it never returns.
func (f Invoked[C, In, Out]) Start() {
	ctx := context.Background()
	deps, cfg := mustLoad[C](ctx, f.Name)
	h, err := f.Build(ctx, deps, cfg)
	if err != nil {
		fail(deps.Logger, fmt.Errorf("build %s: %w", f.Name, err))
	}
	lambda.Start(h)
}

// Load reads Base and C from lookup in one pass, so a cold start names every problem at once.
func Load[C any](lookup func(string) (string, bool)) (Base, C, error) {
	var base Base
	var cfg C
	errBase := config.LoadFrom(lookup, &base)
	errCfg := config.LoadFrom(lookup, &cfg)
	merged := &config.Error{}
	for _, err := range []error{errBase, errCfg} {
		var ce *config.Error
		switch {
		case err == nil:
		case errors.As(err, &ce):
			merged.Missing = append(merged.Missing, ce.Missing...)
			merged.Malformed = append(merged.Malformed, ce.Malformed...)
		default:
			return base, cfg, err
		}
	}
	if len(merged.Missing) > 0 || len(merged.Malformed) > 0 {
		return base, cfg, merged
	}
	return base, cfg, nil
}

// NewLogger is the logger every function uses: JSON on stdout, stamped with its name.
func NewLogger(name, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return telemetry.NewLogger(os.Stdout, name, l)
}

func mustLoad[C any](ctx context.Context, name string) (Deps, C) {
	base, cfg, err := Load[C](os.LookupEnv)
	logger := NewLogger(name, base.LogLevel)
	if err != nil {
		fail(logger, err)
	}
	openCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pool, err := db.Open(openCtx, base.DatabaseURL.Reveal(), db.Options{
		MaxConns:           int32(base.DBMaxConns),
		StatementTimeout:   base.DBStatementTimeout,
		PreparedStatements: base.DBPreparedStatements,
		ApplicationName:    name,
		Lazy:               true,
	})
	if err != nil {
		fail(logger, err)
	}
	return Deps{
		Name:       name,
		Pool:       pool,
		Logger:     logger,
		Metrics:    telemetry.NewMetrics(os.Stdout, name),
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Lookup:     os.LookupEnv,
		// Lambda runs one request at a time per container; the bound matters where a
		// process serves many (the dev server), and costs nothing here.
		Limit: web.NewLimiter(base.DBMaxConns, 1),
	}, cfg
}

// fail reports a cold-start error and exits: Lambda shows it as an init error, and the log
// line names what is wrong (never a secret's value: config errors only carry names).
func fail(logger *slog.Logger, err error) {
	logger.Error("cold start failed", "error", err.Error())
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
