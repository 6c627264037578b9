package dbtest

import (
	"context"
	"errors"
	"os"
	"testing"

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
