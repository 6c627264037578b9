// Package standin installs, on a vanilla PostgreSQL, the small part of a Supabase project that
// the migrations rely on: the roles anon, authenticated and service_role, and auth.uid(),
// auth.role(), auth.email() and auth.jwt() reading request.jwt.claims exactly as Supabase
// defines them. Tests and `make dev` use it; it never goes into supabase/migrations.
package standin

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed standin.sql
var script string

// SQL returns the stand-in script, so a caller can fold it into a checksum.
func SQL() string { return script }

// Execer runs a multi-statement script.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Apply installs the stand-in; it is idempotent and safe to run from several databases at
// once (a lost race on a cluster-wide role is retried).
func Apply(ctx context.Context, db Execer) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if _, err = db.Exec(ctx, script, pgx.QueryExecModeSimpleProtocol); err == nil {
			return nil
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return fmt.Errorf("install local Supabase stand-in: %w", err)
}
