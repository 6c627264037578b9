package portal

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/health"
)

// The handlers send each read through a PL/pgSQL function (so Postgres keeps its plan), while
// the plan test and BENCHMARKS.md explain the query itself: each function must hold exactly
// the query that is explained, or the plans shown would be of something the portal does not
// run.
func TestEachReadFunctionRunsTheExplainedQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	id := uuid.New()
	source := func(function string) string {
		t.Helper()
		var src string
		require.NoError(t, pool.QueryRow(ctx, `select prosrc from pg_proc where oid = $1::regproc`, function).Scan(&src))
		return strings.Join(strings.Fields(src), " ")
	}
	flat := func(sql string) string { return strings.Join(strings.Fields(sql), " ") }
	for _, r := range []read{accountRead(id), syncsRead(id), ticketRead(id, id), ticketPageRead(id, nil, DefaultLimit),
		ticketPageRead(id, &Cursor{CreatedAt: time.Now(), ID: id}, DefaultLimit)} {
		function := r.Call[strings.Index(r.Call, " from ")+len(" from ") : strings.Index(r.Call, "(")]
		require.Contains(t, source(function), "return query "+flat("select * "+r.from)+";", function)
	}
	sql, _ := health.ForTenantQuery(id, health.DefaultWindow)
	require.Contains(t, source(health.TenantFunction), "return query "+flat(sql)+";")
}
