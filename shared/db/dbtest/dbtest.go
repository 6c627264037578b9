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

// New creates a migrated database for t and returns a pool on it; both go away when t ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := NewURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := db.Open(ctx, u, db.Options{MaxConns: 20, ApplicationName: "dbtest"})
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		t.Fatalf("dbtest: connect to PostgreSQL at DATABASE_URL (is it running?): %v", err)
	}
	defer admin.Close(ctx)

	tmpl, err := ensureTemplate(ctx, admin)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	name := "pf_test_" + randomSuffix()
	if _, err := admin.Exec(ctx, fmt.Sprintf(`create database %s template %s`, name, tmpl)); err != nil {
		t.Fatalf("dbtest: create test database: %v", err)
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

// ensureTemplate builds the template database for the current migrations once per server.
func ensureTemplate(ctx context.Context, admin *pgx.Conn) (string, error) {
	ms, err := db.LoadMigrations(supabase.Migrations, "migrations")
	if err != nil {
		return "", err
	}
	sum := db.Checksum(append(ms, db.Migration{Version: "0", Name: "standin", SQL: standin.SQL()}))
	name := "pf_tmpl_" + sum
	if _, err := admin.Exec(ctx, `select pg_advisory_lock(7243902)`); err != nil {
		return "", fmt.Errorf("lock template: %w", err)
	}
	defer admin.Exec(context.Background(), `select pg_advisory_unlock(7243902)`) //nolint:errcheck

	var exists bool
	if err := admin.QueryRow(ctx, `select exists (select 1 from pg_database where datname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up template: %w", err)
	}
	if exists {
		return name, nil
	}
	// Templates of older migration sets are of no further use.
	rows, err := admin.Query(ctx, `select datname from pg_database where datname like 'pf_tmpl_%'`)
	if err != nil {
		return "", fmt.Errorf("list old templates: %w", err)
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("list old templates: %w", err)
	}
	for _, o := range old {
		_, _ = admin.Exec(ctx, fmt.Sprintf(`drop database if exists %s with (force)`, o))
	}

	building := name + "_build"
	if _, err := admin.Exec(ctx, fmt.Sprintf(`create database %s`, building)); err != nil {
		return "", fmt.Errorf("create template: %w", err)
	}
	if err := migrate(ctx, withDatabase(ServerURL(), building), ms); err != nil {
		_, _ = admin.Exec(ctx, fmt.Sprintf(`drop database if exists %s with (force)`, building))
		return "", err
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`alter database %s rename to %s`, building, name)); err != nil {
		return "", fmt.Errorf("publish template: %w", err)
	}
	return name, nil
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
