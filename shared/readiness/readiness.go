// Package readiness answers GET /v1/health: whether this deploy can serve the portal, for an
// uptime probe outside AWS. It checks that the database answers within a short bound, that the
// migrations the code expects are applied, and that the token verifier holds (or can fetch) the
// project's signing keys.
//
// The answer tells the truth and leaks nothing: 200 when every check passes, otherwise 503
// naming the failing checks (fixed words), never a Postgres message, a host or a value; the
// causes go to the log. It is cheap and cannot be used to load the database: one indexed
// statement per run, and a run's result is cached for a few seconds, however many probes
// arrive.
package readiness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
	"github.com/portal-functions/portal-functions/supabase"
)

// The checks, by the names an answer carries.
const (
	CheckDatabase   = "database"
	CheckMigrations = "migrations"
	CheckTokenKeys  = "token_keys"
)

// The states of a check in an answer.
const (
	StateOK      = "ok"
	StateFailing = "failing"
	// StateSkipped is a check that could not run because another failed first (the
	// migrations cannot be read from a database that does not answer).
	StateSkipped = "skipped"
)

// Defaults for the zero values of Options.
const (
	// DefaultTimeout bounds one run of the checks: a probe learns "failing" in seconds, never
	// waits on a hung connection.
	DefaultTimeout = 2 * time.Second
	// DefaultTTL is how long a run's result answers every probe.
	DefaultTTL = 5 * time.Second
)

// Errors of this package (for the log; an answer names only the check).
var (
	// ErrMigrationsBehind is a database whose newest recorded migration is older than the
	// newest one this code was built with (or that records none).
	ErrMigrationsBehind = errors.New("readiness: the database lacks migrations the code expects")
	// ErrNoMigrations is code built without a single migration to expect (a build bug).
	ErrNoMigrations = errors.New("readiness: no embedded migrations")
)

// versionQuery reads the newest applied migration: max() of the primary key, which Postgres
// answers from the end of its index, however many versions are recorded.
const versionQuery = `select max(version) from supabase_migrations.schema_migrations`

// Querier is what the checker needs from the database (a pool).
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Keys is what the checker needs from the token verifier (auth.Verifier).
type Keys interface {
	KeysReady(ctx context.Context) error
}

// Options build a Checker. DB and Keys are required.
type Options struct {
	DB   Querier
	Keys Keys
	// WantMigration is the migration version the code expects at least (default: the newest
	// file of supabase/migrations embedded in this build).
	WantMigration string
	// Timeout bounds one run of the checks (default DefaultTimeout).
	Timeout time.Duration
	// TTL is how long a run's result is reused (default DefaultTTL).
	TTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Report is the result of one run of the checks.
type Report struct {
	// Checks maps each check's name to its state.
	Checks map[string]string
	// Causes are why the failing checks failed: for the log only, never for a caller.
	Causes map[string]error
}

// Failing lists the failing checks' names, sorted.
func (r Report) Failing() []string {
	var out []string
	for name, state := range r.Checks {
		if state == StateFailing {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// OK is true when every check passed.
func (r Report) OK() bool { return len(r.Failing()) == 0 }

// Checker runs the checks and caches the result. Safe for concurrent use; build one per
// process, so its cache is shared by every request the process serves.
type Checker struct {
	o        Options
	wantErr  error
	mu       sync.Mutex // held during a run, so concurrent probes wait for it instead of adding their own
	last     Report
	lastAt   time.Time
	hasCache bool
}

// New builds a Checker.
func New(o Options) *Checker {
	c := &Checker{o: o}
	if c.o.Timeout <= 0 {
		c.o.Timeout = DefaultTimeout
	}
	if c.o.TTL <= 0 {
		c.o.TTL = DefaultTTL
	}
	if c.o.Now == nil {
		c.o.Now = time.Now
	}
	if c.o.WantMigration == "" {
		// An error here fails the migrations check (and reaches the log) rather than the
		// cold start: the portal's reads do not depend on it.
		c.o.WantMigration, c.wantErr = newestEmbeddedMigration()
	}
	return c
}

func newestEmbeddedMigration() (string, error) {
	ms, err := db.LoadMigrations(supabase.Migrations, "migrations")
	if err != nil {
		return "", fmt.Errorf("load embedded migrations: %w", err)
	}
	if len(ms) == 0 {
		return "", ErrNoMigrations
	}
	return ms[len(ms)-1].Version, nil
}

// Check returns the cached report while it is fresh, and otherwise runs the checks once,
// however many callers ask at the same time.
func (c *Checker) Check(ctx context.Context) Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hasCache && c.o.Now().Sub(c.lastAt) < c.o.TTL {
		return c.last
	}
	c.last, c.lastAt, c.hasCache = c.run(ctx), c.o.Now(), true
	return c.last
}

// run performs the checks. The caller's cancellation does not cut it short (its result answers
// other probes too); the timeout does.
func (c *Checker) run(ctx context.Context) Report {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.Timeout)
	defer cancel()
	r := Report{Checks: map[string]string{}, Causes: map[string]error{}}
	set := func(name string, err error) {
		if err == nil {
			r.Checks[name] = StateOK
			return
		}
		r.Checks[name] = StateFailing
		r.Causes[name] = err
	}
	var keysErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		keysErr = c.o.Keys.KeysReady(ctx)
	}()
	dbErr, migErr := c.checkDatabase(ctx)
	<-done
	set(CheckDatabase, dbErr)
	if dbErr != nil {
		r.Checks[CheckMigrations] = StateSkipped
	} else {
		set(CheckMigrations, migErr)
	}
	set(CheckTokenKeys, keysErr)
	return r
}

// checkDatabase reads the newest applied migration: one statement answers both whether the
// database answers and whether it is migrated far enough.
func (c *Checker) checkDatabase(ctx context.Context) (dbErr, migErr error) {
	if c.wantErr != nil {
		return nil, c.wantErr
	}
	var newest *string
	err := c.o.DB.QueryRow(ctx, versionQuery).Scan(&newest)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
	case errors.As(err, &pgErr) && answeredButUnmigrated(pgErr.Code):
		return nil, fmt.Errorf("read newest migration: %w", err)
	default:
		return fmt.Errorf("read newest migration: %w", err), nil
	}
	if newest == nil || versionBefore(*newest, c.o.WantMigration) {
		got := "none"
		if newest != nil {
			got = *newest
		}
		return nil, fmt.Errorf("%w: newest applied %s, code expects %s", ErrMigrationsBehind, got, c.o.WantMigration)
	}
	return nil, nil
}

// answeredButUnmigrated tells the errors of a database that answered but has no readable
// migrations table (never migrated, or not readable by our role) from those of one that did
// not answer.
func answeredButUnmigrated(code string) bool {
	switch code {
	case "42P01", // undefined_table
		"3F000", // invalid_schema_name
		"42501": // insufficient_privilege
		return true
	}
	return false
}

// versionBefore orders migration versions (digits, the Supabase CLI's timestamps) as numbers.
func versionBefore(a, b string) bool {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// healthy is the 200 answer.
type healthy struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// unhealthy is the 503 answer: a problem (RFC 9457) with two extension members that carry
// only check names and states.
type unhealthy struct {
	problem.Problem
	FailingChecks []string          `json:"failing_checks"`
	Checks        map[string]string `json:"checks"`
}

// ServeHTTP answers GET /v1/health. Wrap it in web.Wrap for the request id and the log line.
func (c *Checker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep := c.Check(r.Context())
	// A probe must see each answer as it is now, never a copy kept by a cache on the way.
	w.Header().Set("Cache-Control", "no-store")
	failing := rep.Failing()
	if len(failing) == 0 {
		web.JSON(w, http.StatusOK, healthy{Status: StateOK, Checks: rep.Checks})
		return
	}
	log := web.Logger(r.Context())
	for _, name := range failing {
		log.Warn("health check failing", "check", name, "error", rep.Causes[name].Error())
	}
	// Written here rather than by problem.Write, which blanks a 5xx detail: this one holds
	// only the fixed check names.
	p := problem.Unavailable("failing checks: " + strings.Join(failing, ", "))
	p.RequestID = web.RequestID(r.Context())
	body, err := json.Marshal(unhealthy{Problem: *p, FailingChecks: failing, Checks: rep.Checks})
	if err != nil {
		web.Error(w, r, fmt.Errorf("encode health answer: %w", err))
		return
	}
	// Retry when the cached answer expires.
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(c.o.TTL.Round(time.Second)/time.Second))))
	w.Header().Set("Content-Type", problem.ContentType)
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(body)
}
