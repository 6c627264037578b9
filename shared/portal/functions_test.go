package portal

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/health"
)

// The owner's health in an account read runs private.tenant_health, while ops' health
// (shared/health.ForTenant) states the query in Go: the function must hold exactly that
// query, or the portal and ops would count differently.
func TestTheHealthFunctionRunsHealthsQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var src string
	require.NoError(t, pool.QueryRow(ctx, `select prosrc from pg_proc where oid = $1::regproc`, health.TenantFunction).Scan(&src))
	sql, _ := health.ForTenantQuery(uuid.New(), health.DefaultWindow)
	flat := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	require.Contains(t, flat(src), "return query "+flat(sql)+";")
}
