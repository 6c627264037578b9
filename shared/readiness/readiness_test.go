package readiness_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/readiness"
	"github.com/portal-functions/portal-functions/shared/web"
)

// countingDB is the real test database with a counter in front: every statement the checker
// sends is recorded, so the tests can count them and EXPLAIN them.
type countingDB struct {
	pool *pgxpool.Pool
	mu   sync.Mutex
	sqls []string
}

func (c *countingDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.mu.Lock()
	c.sqls = append(c.sqls, sql)
	c.mu.Unlock()
	return c.pool.QueryRow(ctx, sql, args...)
}

func (c *countingDB) statements() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.sqls...)
}

// clock is a settable time source, so the cache's expiry is tested without sleeping.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type bundle struct {
	pool    *pgxpool.Pool
	db      *countingDB
	iss     *authtest.Issuer
	clock   *clock
	checker *readiness.Checker
	handler http.Handler
}

type option func(*readiness.Options, *bundle)

// setup builds a checker on a fresh migrated database and a live JWKS, served as portal-read
// serves it (behind web.Wrap).
func setup(t testing.TB, opts ...option) *bundle {
	t.Helper()
	pool := dbtest.New(t)
	b := &bundle{pool: pool, db: &countingDB{pool: pool}, iss: authtest.New(t),
		clock: &clock{now: time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)}}
	o := readiness.Options{DB: b.db, Now: b.clock.Now}
	for _, opt := range opts {
		opt(&o, b)
	}
	if o.Keys == nil {
		o.Keys = b.iss.Verifier(t)
	}
	b.checker = readiness.New(o)
	b.handler = web.Wrap(b.checker, web.Options{Logger: slog.New(slog.DiscardHandler)})
	return b
}

func (b *bundle) get(t testing.TB) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	b.handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/health", nil))
	return w
}

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := b.pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err)
}

type answer struct {
	Checks        map[string]string `json:"checks"`
	FailingChecks []string          `json:"failing_checks"`
	RequestID     string            `json:"request_id"`
	Type          string            `json:"type"`
}

// requireFailing asserts a 503 problem naming exactly want, and nothing of the cause: no
// Postgres text, host, port, URL or version.
func requireFailing(t *testing.T, w *httptest.ResponseRecorder, want ...string) {
	t.Helper()
	require.Equal(t, http.StatusServiceUnavailable, w.Code, w.Body.String())
	require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	require.Contains(t, w.Header().Get("Cache-Control"), "no-store")
	require.NotEmpty(t, w.Header().Get("Retry-After"))
	var a answer
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &a), w.Body.String())
	require.Equal(t, want, a.FailingChecks)
	require.Equal(t, "/problems/service-unavailable", a.Type)
	require.NotEmpty(t, a.RequestID)
	for _, name := range want {
		require.Equal(t, "failing", a.Checks[name])
	}
	body := strings.ToLower(w.Body.String())
	for _, leak := range []string{"127.0.0.1", "localhost", "postgres", "pgx", "sqlstate", "error:", "relation",
		"schema_migrations", "hunter2", "connect", "refused", "dial", "timeout", "deadline", "jwks", "http://", "503 service", "2026"} {
		require.NotContains(t, body, leak, "the answer leaks internals")
	}
}

func requireOK(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Contains(t, w.Header().Get("Cache-Control"), "no-store")
	var a struct {
		answer
		Status string `json:"status"`
	}
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &a), w.Body.String())
	require.Equal(t, "ok", a.Status)
	require.Equal(t, map[string]string{"database": "ok", "migrations": "ok", "token_keys": "ok"}, a.Checks)
}

func TestHealthyDeployAnswers200(t *testing.T) {
	t.Parallel()
	b := setup(t)
	requireOK(t, b.get(t))
}

// Each check that fails turns the answer into a 503 naming it, and only it.
func TestEachFailingCheckIsNamedAndNothingInternalLeaks(t *testing.T) {
	t.Parallel()
	deadDB := func(o *readiness.Options, b *bundle) {
		// Nothing listens on port 1: the pool cannot connect.
		pool, err := db.Open(context.Background(), "postgres://postgres:hunter2@127.0.0.1:1/pf?sslmode=disable",
			db.Options{Lazy: true, ConnectTimeout: time.Second})
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		o.DB = pool
	}
	noKeys := func(o *readiness.Options, b *bundle) {
		b.iss.SetDown(true)
		cfg := b.iss.Config()
		cfg.UnknownKIDRateLimit = time.Hour
		v, err := auth.NewVerifier(t.Context(), cfg)
		require.NoError(t, err)
		o.Keys = v
	}
	cases := []struct {
		name    string
		opts    []option
		arrange func(t *testing.T, b *bundle)
		want    []string
	}{
		{name: "database unreachable", opts: []option{deadDB}, want: []string{"database"}},
		{name: "newest migration not applied", want: []string{"migrations"},
			arrange: func(t *testing.T, b *bundle) {
				b.exec(t, `delete from supabase_migrations.schema_migrations
					where version = (select max(version) from supabase_migrations.schema_migrations)`)
			}},
		{name: "migrations never recorded", want: []string{"migrations"},
			arrange: func(t *testing.T, b *bundle) { b.exec(t, `delete from supabase_migrations.schema_migrations`) }},
		{name: "migrations table missing", want: []string{"migrations"},
			arrange: func(t *testing.T, b *bundle) { b.exec(t, `drop schema supabase_migrations cascade`) }},
		{name: "no signing keys and the JWKS unreachable", opts: []option{noKeys}, want: []string{"token_keys"}},
		{name: "database and keys at once", opts: []option{deadDB, noKeys}, want: []string{"database", "token_keys"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.opts...)
			if tc.arrange != nil {
				tc.arrange(t, b)
			}
			requireFailing(t, b.get(t), tc.want...)
		})
	}
}

// A database that accepts the connection but does not answer (a lock, an overloaded server)
// fails the check within the bound instead of hanging the probe.
func TestADatabaseThatDoesNotAnswerFailsWithinTheBound(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *readiness.Options, _ *bundle) { o.Timeout = 200 * time.Millisecond })
	tx, err := b.pool.Begin(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	_, err = tx.Exec(context.Background(), `lock table supabase_migrations.schema_migrations in access exclusive mode`)
	require.NoError(t, err)

	requireFailing(t, b.get(t), "database")
}

// A database migrated past the code (a rollback of the functions after a migration) is fine.
func TestADatabaseAheadOfTheCodeIsHealthy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, `insert into supabase_migrations.schema_migrations (version, name) values ('99991231235959', 'future')`)
	requireOK(t, b.get(t))
}

// The probe cannot be used to load the database: within the cache's lifetime any number of
// requests, one after another or all at once, cost one statement; the next one after it
// expires costs one more. Failures are cached the same way, and a fixed cause shows once the
// cached answer expires.
func TestAnswersAreCachedSoTheProbeCannotLoadTheDatabase(t *testing.T) {
	t.Parallel()
	b := setup(t)

	for range 10 {
		requireOK(t, b.get(t))
	}
	require.Len(t, b.db.statements(), 1, "ten probes, one statement")

	b.clock.Advance(readiness.DefaultTTL - time.Millisecond)
	requireOK(t, b.get(t))
	require.Len(t, b.db.statements(), 1, "still inside the cache's lifetime")

	b.clock.Advance(time.Millisecond)
	var wg sync.WaitGroup
	codes := make([]int, 32)
	for i := range codes {
		wg.Go(func() { codes[i] = b.get(t).Code })
	}
	wg.Wait()
	for _, c := range codes {
		require.Equal(t, http.StatusOK, c)
	}
	require.Len(t, b.db.statements(), 2, "32 concurrent probes after expiry, one statement")

	newest := ""
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`delete from supabase_migrations.schema_migrations
		 where version = (select max(version) from supabase_migrations.schema_migrations) returning version`).Scan(&newest))
	requireOK(t, b.get(t))
	b.clock.Advance(readiness.DefaultTTL)
	requireFailing(t, b.get(t), "migrations")
	requireFailing(t, b.get(t), "migrations")
	require.Len(t, b.db.statements(), 3, "the failure is cached too")

	b.exec(t, `insert into supabase_migrations.schema_migrations (version, name) values ($1, 'back')`, newest)
	requireFailing(t, b.get(t), "migrations")
	b.clock.Advance(readiness.DefaultTTL)
	requireOK(t, b.get(t))
	require.Len(t, b.db.statements(), 4)
}

// What the checker sends is cheap: no sequential scan of any table, whatever its size.
func TestTheCheckScansNoTable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Make a scan tempting: many rows, fresh statistics.
	b.exec(t, `insert into supabase_migrations.schema_migrations (version, name)
		select (19000101000000 + g)::text, 'filler' from generate_series(1, 20000) g`)
	b.exec(t, `analyze supabase_migrations.schema_migrations`)
	requireOK(t, b.get(t))

	stmts := b.db.statements()
	require.Len(t, stmts, 1)
	var plan []map[string]any
	require.NoError(t, b.pool.QueryRow(context.Background(), `explain (format json) `+stmts[0]).Scan(&plan))
	raw, err := json.Marshal(plan)
	require.NoError(t, err)
	require.NotContains(t, string(raw), `"Seq Scan"`, "plan: %s", raw)
	require.Contains(t, string(raw), `"Index Only Scan"`, "plan: %s", raw)
}
