package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/checkout"
	"github.com/portal-functions/portal-functions/shared/crm"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/standin"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/helpdesk"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/sam"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/web"
	"github.com/portal-functions/portal-functions/supabase"
)

// DefaultDatabaseURL is the dev database on the local PostgreSQL (created when missing).
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/pf_dev?sslmode=disable"

// plainOnLoopback adds sslmode=disable to a postgres URL of a loopback address that names no
// sslmode, as DefaultDatabaseURL and env.json's URLs do: pgx's default (prefer) would otherwise
// wrap every round trip in TLS, which on the same machine protects nothing: crypto/tls took
// about a sixth of the dev server's CPU samples at 200 webhook deliveries/s, and the Postgres
// backend pays the other end. A URL
// that names an sslmode, another host or the key=value form is kept as it is.
func plainOnLoopback(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Query().Has("sslmode") {
		return dbURL
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return dbURL
	}
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

// httpFunction is what the dev server needs of a function.HTTP definition.
type httpFunction interface {
	Handler(ctx context.Context, deps function.Deps) (http.Handler, error)
	FunctionName() string
}

// httpFunctions maps each HTTP function's logical id to its definition: the only list here.
// Routes come from template.yaml; a template function missing from this map stops the start.
var httpFunctions = map[string]httpFunction{
	"PaymentWebhookFunction": billing.WebhookFunction,
	"CheckoutCreateFunction": checkout.Function,
	"TicketCreateFunction":   ticket.CreateFunction,
	"PortalReadFunction":     portal.ReadFunction,
}

// shedAtOnce names the HTTP functions whose callers retry a 503 on their own (Stripe redelivers
// a webhook): while the limiter is overloaded (it refused a request within the last 250 ms),
// their requests that find no free slot are refused at once (issue 12). The others serve a
// person in a browser, which does not retry: they still wait up to interactiveWait for a
// slot then. Outside overload every request waits for a slot up to web.DefaultQueue's wait,
// so a stall (a slow WAL fsync holds every commit behind it) refuses nobody. Lambda serves
// one request at a time per instance, so this is the shape of a long-running host like
// this one.
var shedAtOnce = map[string]bool{"PaymentWebhookFunction": true}

// defaultDBConns sizes the HTTP functions' pool: more connections than the two cores cover
// the round trips' and commits' waits (BENCHMARKS.md, issue 12: 6, 16 and 32 compared).
const defaultDBConns = 16

// workerConns sizes the queue workers' own pool. In Lambda the pushers are functions of their
// own with their own connections; sharing the HTTP functions' pool here let up to 100 running
// helpdesk jobs take the connections that the limiter's admitted requests then queued for
// (at 300 tickets/s, most of a created ticket's p50). Kept small: Postgres has two cores
// here, and a request waiting on a busy backend is worse than a push a few seconds late.
const workerConns = 4

// helpdeskWorkers bounds how many helpdesk pushes run at once in make dev (support-push's own
// runs keep jobs.DefaultMaxWorkers per invocation). Here the pushers share the request path's
// two cores: with 100 allowed, each 50 ms fetch started all of the last 50 ms's tickets
// (about 15 at 300 tickets/s) together and their backends landed on the requests' tail
// (issue 13, 300 tickets/s: ticket p95 11.8-15.7 ms with 100, 7.7-8.4 ms with 4). Four keep
// up with 300 tickets/s against the stand-in (no job left waiting at the end of a run), one per
// worker connection; two did not (3,171 jobs behind after 30 s). Only the helpdesk queue:
// crm-push's batches want every job of a fetch at once.
const helpdeskWorkers = workerConns

// interactiveWait bounds how long an interactive request waits for one of the limiter's slots
// while the limiter is overloaded.
const interactiveWait = 20 * time.Millisecond

// ErrUnwiredFunction is an HTTP function of the template the dev server has no definition for.
var ErrUnwiredFunction = errors.New("dev: template.yaml has an HTTP function the dev server does not know")

type server struct {
	logger *slog.Logger
	opts   options
	tmpl   *sam.Template
	envs   sam.EnvFile
	dbURL  string
	pool   *pgxpool.Pool
	// workerPool is the queue workers' own (nil with -no-workers): see workerConns.
	workerPool *pgxpool.Pool
	stands     *standins
	handler    http.Handler
	routes     []sam.FunctionRoute
	lookups    map[string]func(string) (string, bool)
	listener   net.Listener
	// limit is the one bound on HTTP requests at once for every function on pool.
	limit *web.Limiter
}

func newServer(ctx context.Context, logger *slog.Logger, o options) (*server, error) {
	p, err := sam.Open(".")
	if err != nil {
		return nil, err
	}
	root := p.Root
	s := &server{logger: logger, opts: o, tmpl: p.Template, envs: p.Env, lookups: map[string]func(string) (string, bool){}}
	s.dbURL = o.DatabaseURL
	if err := ensureDatabase(ctx, s.dbURL); err != nil {
		return nil, err
	}
	conns := int32(cmp.Or(o.DBConns, defaultDBConns))
	warm := int32(0)
	if o.WarmPool {
		warm = conns
	}
	s.pool, err = db.Open(ctx, s.dbURL, db.Options{MaxConns: conns, MinConns: warm, ApplicationName: "make-dev",
		PreparedStatements: !o.UnpreparedStatements})
	if err != nil {
		return nil, fmt.Errorf("open dev database: %w", err)
	}
	s.limit = web.NewLimiter(int(s.pool.Config().MaxConns), 1)
	if err := prepare(ctx, s.pool, logger); err != nil {
		s.pool.Close()
		return nil, err
	}
	if o.Workers {
		s.workerPool, err = db.Open(ctx, s.dbURL, db.Options{MaxConns: workerConns, ApplicationName: "make-dev-workers",
			PreparedStatements: !o.UnpreparedStatements})
		if err != nil {
			s.pool.Close()
			return nil, fmt.Errorf("open dev database for the workers: %w", err)
		}
	}
	s.stands, err = startStandins(ctx, root, logger, p.Env, o.EphemeralStandins)
	if err != nil {
		s.Close()
		return nil, err
	}
	if s.stands.hub != nil {
		s.stands.hub.SetLatency(o.StandinLatency)
	}
	if s.stands.desk != nil {
		s.stands.desk.SetLatency(o.StandinLatency)
	}
	// Listen before building the handlers: checkout returns the browser to this server's
	// portal (PORTAL_URL), so its address must be known.
	s.listener, err = net.Listen("tcp", o.Addr)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("listen on %s (is another make dev running?): %w", o.Addr, err)
	}
	if err := s.build(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// lookupFor is a function's environment: DATABASE_URL is the dev database; otherwise the
// process environment first, then env.json's values for that function (which point at the
// local stand-ins); a provider with real credentials in the process environment keeps its own
// settings.
func (s *server) lookupFor(f sam.Function) func(string) (string, bool) {
	local := s.envs.For(f)
	return func(name string) (string, bool) {
		if name == "DATABASE_URL" {
			return s.dbURL, true
		}
		if v, ok := os.LookupEnv(name); ok && v != "" {
			return v, true
		}
		if name == "PORTAL_URL" && s.listener != nil {
			// The portal is this server's own page at /.
			return s.baseURL(), true
		}
		if s.stands.real[name] {
			return "", false
		}
		if u, ok := s.stands.urls[name]; ok {
			return u, true
		}
		v, ok := local[name]
		return v, ok
	}
}

func (s *server) deps(name string, lookup func(string) (string, bool)) function.Deps {
	return function.Deps{
		Name:       name,
		Pool:       s.pool,
		Logger:     telemetry.NewLogger(os.Stdout, name, slog.LevelInfo),
		Metrics:    telemetry.NewMetrics(os.Stdout, name),
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Lookup:     lookup,
		Limit:      s.limit,
	}
}

// build makes one handler per HTTP function and mounts it on each of its template routes.
func (s *server) build(ctx context.Context) error {
	mux := http.NewServeMux()
	for _, f := range s.tmpl.Functions {
		s.lookups[f.LogicalID] = s.lookupFor(f)
		if !f.IsHTTP() {
			continue
		}
		def, ok := httpFunctions[f.LogicalID]
		if !ok {
			return fmt.Errorf("%w: %s", ErrUnwiredFunction, f.LogicalID)
		}
		deps := s.deps(def.FunctionName(), s.lookups[f.LogicalID])
		if !shedAtOnce[f.LogicalID] {
			deps.Limit = s.limit.OverloadWait(interactiveWait)
		}
		h, err := def.Handler(ctx, deps)
		if err != nil {
			return fmt.Errorf("build %s: %w", f.LogicalID, err)
		}
		for _, r := range f.Routes {
			mux.Handle(r.Pattern(), h)
			s.routes = append(s.routes, sam.FunctionRoute{Function: f.LogicalID, Route: r})
		}
	}
	mux.Handle("/_dev/", s.stands)
	c, err := newConsole(s)
	if err != nil {
		return err
	}
	c.mount(mux)
	s.handler = mux
	return nil
}

// baseURL is where the server listens, as the browser reaches it.
func (s *server) baseURL() string { return "http://" + s.listener.Addr().String() }

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Serve answers requests and works the queues until ctx ends, then shuts down in order:
// stop accepting, let requests finish, stop the workers.
func (s *server) Serve(ctx context.Context) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	if s.opts.Workers {
		cfgs, err := s.workers()
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = jobs.RunContinuously(ctx, s.workerPool, cfgs...)
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.listener) }()
	base := s.baseURL()
	if s.opts.Out != nil {
		s.printWelcome(base)
	}
	if s.opts.Ready != nil {
		s.opts.Ready(base)
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.logger.Info("shutting down")
	shutdownCtx, done := context.WithTimeout(context.Background(), shutdownGrace)
	defer done()
	_ = srv.Shutdown(shutdownCtx)
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// workers builds the continuous runners of every queue from the workers' own settings, as
// their Lambda functions do.
func (s *server) workers() ([]jobs.RunConfig, error) {
	queues := []struct {
		logicalID string
		queue     interface {
			LoadRunConfig(function.Deps) (jobs.RunConfig, error)
		}
		name       string
		maxWorkers int // 0: the queue's own default
	}{
		{"SupportPushFunction", helpdesk.Push, helpdesk.Push.Name, helpdeskWorkers},
		{"CrmPushFunction", crm.Push, crm.Push.Name, 0},
		{"BillingRefreshFunction", billing.Refresh, billing.Refresh.Name, 0},
	}
	var cfgs []jobs.RunConfig
	for _, q := range queues {
		f, err := s.tmpl.Function(q.logicalID)
		if err != nil {
			continue
		}
		deps := s.deps(q.name, s.lookups[f.LogicalID])
		deps.Pool = s.workerPool
		run, err := q.queue.LoadRunConfig(deps)
		if err != nil {
			return nil, err
		}
		if q.maxWorkers > 0 {
			run.MaxWorkers = q.maxWorkers
		}
		cfgs = append(cfgs, run)
	}
	return cfgs, nil
}

// Close stops the stand-ins and closes the pool.
func (s *server) Close() {
	if s.listener != nil {
		_ = s.listener.Close()
	}
	if s.stands != nil {
		s.stands.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.workerPool != nil {
		s.workerPool.Close()
	}
}

func (s *server) printWelcome(base string) {
	w := s.opts.Out
	secret, _ := s.lookups["PortalReadFunction"]("SUPABASE_JWT_SECRET")
	supaURL, _ := s.lookups["PortalReadFunction"]("SUPABASE_URL")
	token, err := demo.Token(secret, supaURL, 12*time.Hour)
	if err != nil {
		token = "(no token: " + err.Error() + ")"
	}
	fmt.Fprintf(w, "\nportal-functions dev server on %s\n\n", base)
	fmt.Fprintf(w, "  database   %s (migrated; demo tenant %s, owner %s)\n", redactURL(s.dbURL), demo.TenantID, demo.UserEmail)
	fmt.Fprintln(w, "  routes (template.yaml):")
	for _, r := range s.routes {
		fmt.Fprintf(w, "    %-28s -> %s\n", r.Pattern(), r.Function)
	}
	fmt.Fprintln(w, "  providers:")
	for _, p := range s.stands.providers {
		fmt.Fprintf(w, "    %-9s %s\n", p.Name, describe(p))
	}
	fmt.Fprintf(w, "\nOpen %s/ in a browser: the client portal (sign in as a seeded user) and the ops console.\n", base)
	fmt.Fprintf(w, "\nOr with curl (the token is the demo owner's, valid 12 h):\n\n")
	fmt.Fprintf(w, "  export TOKEN=%s\n", token)
	fmt.Fprintf(w, "  curl -s %s/v1/account -H \"Authorization: Bearer $TOKEN\"\n", base)
	fmt.Fprintf(w, "  curl -s %s/v1/tickets -H \"Authorization: Bearer $TOKEN\"\n", base)
	fmt.Fprintf(w, "  curl -s -X POST %s/v1/tickets -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n", base)
	fmt.Fprintf(w, "       -H \"Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)\" -d '{\"subject\":\"Cannot log in\",\"body\":\"Since this morning.\",\"category\":\"technical\"}'\n")
	fmt.Fprintf(w, "  curl -s %s/_dev/providers                    # stand-ins and their modes\n", base)
	fmt.Fprintf(w, "  curl -s -X POST %s/_dev/providers/zendesk/down   # or up, rate-limited\n", base)
	fmt.Fprintf(w, "  make invoke FN=PaymentWebhookFunction EVENT=events/<a payment-webhook sample>.json\n\nCtrl-C stops everything.\n\n")
}

// ensureDatabase creates the database dbURL names when the server lacks it.
func ensureDatabase(ctx context.Context, dbURL string) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return errors.New("DATABASE_URL is not a valid postgres URL")
	}
	name := cfg.Database
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if conn, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		return conn.Close(ctx)
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s (is it running? start it, or set DATABASE_URL): %w", cfg.Host, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()); err != nil {
		var exists bool
		if qerr := conn.QueryRow(ctx, `select exists (select 1 from pg_database where datname = $1)`, name).Scan(&exists); qerr == nil && exists {
			return nil
		}
		return fmt.Errorf("create dev database %s: %w", name, err)
	}
	return nil
}

// prepare makes the dev database what a Supabase project would be: the local stand-in only
// where Supabase's auth schema is missing (a `supabase start` database has the real one),
// then the migrations, then the demo tenant.
func prepare(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	var hasAuth bool
	if err := pool.QueryRow(ctx, `select exists (select 1 from pg_namespace where nspname = 'auth')`).Scan(&hasAuth); err != nil {
		return fmt.Errorf("inspect dev database: %w", err)
	}
	if !hasAuth {
		if err := standin.Apply(ctx, pool); err != nil {
			return err
		}
		logger.Info("installed the local Supabase stand-in (roles, auth.uid())")
	}
	ms, err := db.LoadMigrations(supabase.Migrations, "migrations")
	if err != nil {
		return err
	}
	applied, err := db.Migrate(ctx, pool, ms)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		logger.Info("applied migrations", "versions", strings.Join(applied, ","))
	}
	if err := demo.Seed(ctx, pool); err != nil {
		return err
	}
	// The demo tickets go to the helpdesk like any other (a job per ticket, so once).
	ins, err := jobs.NewInserter(pool)
	if err != nil {
		return fmt.Errorf("queue the demo tickets: %w", err)
	}
	for _, t := range demo.Tickets {
		err := db.Tx(ctx, pool, func(tx pgx.Tx) error {
			var synced bool
			if err := tx.QueryRow(ctx, `select helpdesk_ticket_id is not null from public.tickets where id = $1`, t.ID).Scan(&synced); err != nil {
				return fmt.Errorf("look up demo ticket %s: %w", t.ID, err)
			}
			if synced {
				return nil
			}
			if err := ins.EnqueueHelpdeskTicket(ctx, tx, t.TenantID, t.ID); err != nil {
				return fmt.Errorf("queue demo ticket %s: %w", t.ID, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func redactURL(u string) string {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		return "(DATABASE_URL)"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}
