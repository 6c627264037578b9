// Package dbtest gives each test its own throwaway database on the local PostgreSQL, with the
// local Supabase stand-in and every migration applied, and drops it when the test ends.
//
// The first caller builds a template database per migration checksum; every test database is
// then a cheap CREATE DATABASE ... TEMPLATE copy of it, so tests stay independent and fast.
// DATABASE_URL names the server (default: the local PostgreSQL); a missing server fails the
// test loudly, never skips it.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/standin"
	"github.com/portal-functions/portal-functions/supabase"
)

// DefaultURL is the local PostgreSQL every machine of this project runs.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL is the admin URL of the test server: $DATABASE_URL or DefaultURL.
func ServerURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// Option changes the pool a test gets (db.Options).
type Option func(*db.Options)

// Prepared gives the pool's connections prepared statements (db.Options.PreparedStatements),
// as a function whose DATABASE_URL keeps its backend runs them.
func Prepared(o *db.Options) { o.PreparedStatements = true }

// New creates a migrated database for t and returns a pool on it; both go away when t ends.
func New(t testing.TB, opts ...Option) *pgxpool.Pool {
	t.Helper()
	return open(t, nil, opts)
}

// NewCounted is New with a Counter on the pool, so a test can hold a code path to a budget of
// round trips and statements.
func NewCounted(t testing.TB, opts ...Option) (*pgxpool.Pool, *Counter) {
	t.Helper()
	c := &Counter{}
	return open(t, c, opts), c
}

func open(t testing.TB, tracer pgx.QueryTracer, opts []Option) *pgxpool.Pool {
	t.Helper()
	u := NewURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := db.Options{MaxConns: 20, ApplicationName: "dbtest", Tracer: tracer}
	for _, f := range opts {
		f(&o)
	}
	pool, err := db.Open(ctx, u, o)
	if err != nil {
		t.Fatalf("dbtest: open test database: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// NewURL creates a migrated database for t and returns its URL (for code under test that opens
// its own pool, such as the dev server). It is dropped when t ends.
func NewURL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, func(ctx context.Context, admin *pgx.Conn, name string) error {
		return createFromTemplate(ctx, admin, name)
	})
}

// NewEmptyURL is NewURL without the migrations: an empty database, for a test of what applies
// them (make dev's start applies them on the connections it then serves from).
func NewEmptyURL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, func(ctx context.Context, admin *pgx.Conn, name string) error {
		_, err := admin.Exec(ctx, fmt.Sprintf(`create database %s`, name))
		return err
	})
}

// newDatabase creates a database with create and drops it when the test ends.
func newDatabase(t testing.TB, create func(ctx context.Context, admin *pgx.Conn, name string) error) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		t.Fatalf("dbtest: connect to PostgreSQL at DATABASE_URL (is it running?): %v", err)
	}
	defer admin.Close(ctx)

	name := "pf_test_" + randomSuffix()
	if err := create(ctx, admin, name); err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			t.Errorf("dbtest: drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, fmt.Sprintf(`drop database if exists %s with (force)`, name)); err != nil {
			t.Errorf("dbtest: drop %s: %v", name, err)
		}
	})
	return withDatabase(ServerURL(), name)
}

// templateLock is the advisory lock that guards the templates: held shared while a test
// database is copied from one, exclusively while one is built or old ones are dropped. So a
// template never disappears under a copy, even when checkouts with other migrations (another
// branch, a CI clone) test against the same server at the same time.
const templateLock = 7243902

// keepTemplates is how many templates of other migration sets survive a new build: the newest
// ones, so several checkouts on one server (worktrees of parallel branches, a CI clone) do not
// keep dropping each other's and rebuilding under the exclusive lock.
const keepTemplates = 12

// createFromTemplate creates database name as a copy of the current migrations' template,
// building the template first when it is missing.
func createFromTemplate(ctx context.Context, admin *pgx.Conn, name string) error {
	ms, err := db.LoadMigrations(supabase.Migrations, "migrations")
	if err != nil {
		return err
	}
	tmpl := "pf_tmpl_" + db.Checksum(append(ms, db.Migration{Version: "0", Name: "standin", SQL: standin.SQL()}))
	for range 3 {
		copied, err := copyTemplate(ctx, admin, tmpl, name)
		if err != nil || copied {
			return err
		}
		if err := buildTemplate(ctx, admin, tmpl, ms); err != nil {
			return err
		}
	}
	return fmt.Errorf("create test database: template %s keeps disappearing", tmpl)
}

// copyTemplate copies tmpl to name under the shared lock; false when tmpl does not exist.
func copyTemplate(ctx context.Context, admin *pgx.Conn, tmpl, name string) (bool, error) {
	if _, err := admin.Exec(ctx, `select pg_advisory_lock_shared($1)`, templateLock); err != nil {
		return false, fmt.Errorf("lock template: %w", err)
	}
	defer admin.Exec(context.Background(), `select pg_advisory_unlock_shared($1)`, templateLock) //nolint:errcheck
	var exists bool
	if err := admin.QueryRow(ctx, `select exists (select 1 from pg_database where datname = $1)`, tmpl).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up template: %w", err)
	}
	if !exists {
		return false, nil
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`create database %s template %s`, name, tmpl)); err != nil {
		return false, fmt.Errorf("create test database: %w", err)
	}
	return true, nil
}

// buildTemplate builds tmpl (unless another process just did) under the exclusive lock, and
// drops all but the newest keepTemplates templates of other migration sets.
func buildTemplate(ctx context.Context, admin *pgx.Conn, tmpl string, ms []db.Migration) error {
	if _, err := admin.Exec(ctx, `select pg_advisory_lock($1)`, templateLock); err != nil {
		return fmt.Errorf("lock template: %w", err)
	}
	defer admin.Exec(context.Background(), `select pg_advisory_unlock($1)`, templateLock) //nolint:errcheck

	var exists bool
	if err := admin.QueryRow(ctx, `select exists (select 1 from pg_database where datname = $1)`, tmpl).Scan(&exists); err != nil {
		return fmt.Errorf("look up template: %w", err)
	}
	if exists {
		return nil
	}
	rows, err := admin.Query(ctx, `select datname from pg_database where datname like 'pf\_tmpl\_%' order by oid desc offset $1`, keepTemplates)
	if err != nil {
		return fmt.Errorf("list old templates: %w", err)
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list old templates: %w", err)
	}
	for _, o := range old {
		_, _ = admin.Exec(ctx, fmt.Sprintf(`drop database if exists %s with (force)`, o))
	}

	building := tmpl + "_build"
	_, _ = admin.Exec(ctx, fmt.Sprintf(`drop database if exists %s with (force)`, building)) // left by a crashed build
	if _, err := admin.Exec(ctx, fmt.Sprintf(`create database %s`, building)); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	if err := migrate(ctx, withDatabase(ServerURL(), building), ms); err != nil {
		_, _ = admin.Exec(ctx, fmt.Sprintf(`drop database if exists %s with (force)`, building))
		return err
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`alter database %s rename to %s`, building, tmpl)); err != nil {
		return fmt.Errorf("publish template: %w", err)
	}
	return nil
}

func migrate(ctx context.Context, u string, ms []db.Migration) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return fmt.Errorf("connect to template: %w", err)
	}
	defer conn.Close(ctx)
	if err := standin.Apply(ctx, conn); err != nil {
		return err
	}
	if _, err := db.Migrate(ctx, conn, ms); err != nil {
		return err
	}
	return nil
}

func withDatabase(server, name string) string {
	u, err := url.Parse(server)
	if err != nil || u.Scheme == "" {
		// A key=value DSN: a later dbname wins.
		return server + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
