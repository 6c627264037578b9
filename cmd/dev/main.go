// Command dev runs the whole system on this machine (`make dev`): every HTTP route of
// template.yaml on 127.0.0.1:3000 served by the very handlers Lambda runs, the queue workers
// working continuously in-process, a migrated and seeded local database, and local stand-ins
// for the providers that have no credentials (Stripe via stripe-mock, HubSpot, Zendesk,
// Supabase Storage), each switchable up, down or rate-limited at /_dev/providers.
//
// Routes come from template.yaml (package sam), never from a second list here; settings come
// from the process environment first, then from env.json, as `sam local` would give them.
// Ctrl-C stops the server, the workers and the stand-ins, and closes the pool.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only with -pprof, on its own loopback address
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/portal-functions/portal-functions/shared/function"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "where the API listens (loopback only)")
	noWorkers := flag.Bool("no-workers", false, "do not run the queue workers")
	ephemeral := flag.Bool("ephemeral-standins", false, "put the provider stand-ins on free ports (beside another make dev)")
	latency := flag.Duration("standin-latency", 0, "the HubSpot and Zendesk stand-ins answer every call after this long (e.g. 50ms, the CRM load scenario's HubSpot)")
	dbConns := flag.Int("db-conns", defaultDBConns, "connections of the HTTP functions' pool, which also bounds the requests served at once")
	dbCold := flag.Bool("db-cold", false, "open the pool's connections when a request needs one, and close them after a minute idle, as a Lambda instance does, instead of keeping all of them open from the start")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this loopback address (e.g. 127.0.0.1:6060) to profile a load run")
	flag.Parse()
	// One P, as each deployed HTTP function's instance runs (function.OneProc), unless
	// GOMAXPROCS is set. The dev server's requests mostly wait on Postgres, which needs the
	// machine's other cores: in the side-by-side harness (2 cores, 2026-11-30, two runs in
	// opposite orders) one P used 0.60-0.65 ms of CPU a delivery at 200/s against 0.80-0.85 ms
	// with two, 0.40 against 0.46-0.48 ms at 800/s, and answered as many at 1,600/s (1,481 and
	// 1,531 ok/s against 1,435 and 1,499): a second P mostly spun looking for work.
	if function.OneProc(os.LookupEnv) {
		runtime.GOMAXPROCS(1)
	}
	if *pprofAddr != "" {
		go func() { _ = http.ListenAndServe(*pprofAddr, nil) }() //nolint:gosec // a dev-only profiling port on loopback
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		dbURL = DefaultDatabaseURL
	}
	dbURL = plainOnLoopback(dbURL)
	prepared := true
	if v, ok := os.LookupEnv("DB_PREPARED_STATEMENTS"); ok {
		var err error
		if prepared, err = strconv.ParseBool(v); err != nil {
			fmt.Fprintln(os.Stderr, "dev: DB_PREPARED_STATEMENTS is not true or false")
			os.Exit(2)
		}
	}
	if err := run(ctx, logger, options{Addr: *addr, DatabaseURL: dbURL, Workers: !*noWorkers, UnpreparedStatements: !prepared,
		EphemeralStandins: *ephemeral, StandinLatency: *latency, DBConns: *dbConns, WarmPool: !*dbCold, Out: os.Stdout}); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

// options configure one dev server run.
type options struct {
	Addr string
	// DatabaseURL is the dev database (created when missing); every function uses it.
	DatabaseURL string
	// UnpreparedStatements runs the pools as the deployed functions run by default, behind
	// Supavisor's transaction mode: no statement prepared on the server. The dev database is
	// a direct connection (the server creates it), a long-running server's shape, so it
	// prepares each statement once per connection (db.Options.PreparedStatements) unless
	// DB_PREPARED_STATEMENTS=false.
	UnpreparedStatements bool
	Workers              bool
	// EphemeralStandins puts the provider stand-ins on free ports instead of env.json's fixed
	// ones (and points the functions at them), so a test can run beside a `make dev`.
	EphemeralStandins bool
	// StandinLatency delays every answer of the HubSpot and Zendesk stand-ins (0: none).
	StandinLatency time.Duration
	// DBConns sizes the HTTP functions' pool, and so the requests served at once (0:
	// defaultDBConns). cmd/benchreport/pgcost-side.sh makes it small, so a count of Postgres's
	// work under valgrind is not swamped by backends started at different moments.
	DBConns int
	// WarmPool keeps all DBConns connections open from the start (db.Options.MinConns), so
	// a burst never waits for backends to start; main sets it unless -db-cold.
	WarmPool bool
	Out      interface{ Write([]byte) (int, error) }
	// Ready, when set, is called with the server's base URL once it serves.
	Ready func(baseURL string)
}

func run(ctx context.Context, logger *slog.Logger, o options) error {
	s, err := newServer(ctx, logger, o)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Serve(ctx)
}

// shutdownGrace bounds how long in-flight requests get to finish on Ctrl-C.
const shutdownGrace = 5 * time.Second

var _ http.Handler = (*server)(nil)
