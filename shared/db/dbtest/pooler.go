package dbtest

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db/pgbouncer"
)

// Pooler starts PgBouncer in transaction mode in front of the database at direct (a URL from
// NewURL) and returns the URL through it; it stops when t ends. Without the pgbouncer binary
// the test is skipped with a message saying what goes unchecked (why), except in CI
// (CI set), where that fails it: .ci/run installs PgBouncer.
func Pooler(t testing.TB, direct string, o pgbouncer.Options, why string) (pooled string, p *pgbouncer.Pooler) {
	t.Helper()
	o.Upstream = direct
	p, err := pgbouncer.Start(context.Background(), o)
	if errors.Is(err, pgbouncer.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip("pgbouncer is not installed on this machine (apt-get install -y pgbouncer; .ci/run installs it): " + why)
	}
	if err != nil {
		t.Fatalf("dbtest: start PgBouncer: %v", err)
	}
	t.Cleanup(p.Stop)
	pooled, err = p.Via(direct)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	return pooled, p
}

// Count runs a count(*) query on the database at url from a connection of its own (a test's
// pool may be busy, and a connection kept in a transaction would see a frozen
// pg_stat_activity).
func Count(t testing.TB, url, query string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("dbtest: connect: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var n int
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("dbtest: %s: %v", query, err)
	}
	return n
}
