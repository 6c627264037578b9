package jobs_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// benchTenants is how many tenants BenchmarkEnqueueCRMSyncInPipe spreads its jobs over, one per
// iteration, so each iteration's tenant is in the sync status its case names: a fixed number
// up to that many iterations, so the set-up costs the same whatever b.N (callgrind's per-job
// figure is the difference of two runs with -benchtime 30x and 130x,
// /work/wt/tools/pgcost.sh), b.N beyond.
const benchTenants = 300

// BenchmarkEnqueueCRMSyncInPipe queues one CRM push per iteration the way the webhook does:
// Inserter.EnqueueCRMSync on a db.Pipe, in a transaction of its own (begin with the first
// batch, the job with the commit), for a tenant and event not seen before, so each job is new.
// The cases are the tenant's sync status before the job: "pending" (the side-by-side
// harness, whose dev server runs no workers: the status stays pending, the summary triggers
// see no change), "synced" (production, where the previous push completed: the status moves
// to pending and the sync summary counts it) and "none" (the tenant's first job). "no job" is
// the same transaction without the job (a txid_current() call, so it still has an xid and a
// commit record): the difference is what a queued job costs.
func BenchmarkEnqueueCRMSyncInPipe(b *testing.B) {
	for _, status := range []string{"pending", "synced", "none", "no job"} {
		b.Run(status, func(b *testing.B) {
			ctx := context.Background()
			pool, counter := dbtest.NewCounted(b)
			ins, err := jobs.NewInserter(pool)
			if err != nil {
				b.Fatal(err)
			}
			rows, err := pool.Query(ctx, `insert into public.tenants (name) select 'bench ' || i from generate_series(1, $1) i returning id`, max(benchTenants, b.N))
			if err != nil {
				b.Fatal(err)
			}
			tenants := make([]uuid.UUID, 0, max(benchTenants, b.N))
			for rows.Next() {
				var id uuid.UUID
				if err := rows.Scan(&id); err != nil {
					b.Fatal(err)
				}
				tenants = append(tenants, id)
			}
			if err := rows.Err(); err != nil {
				b.Fatal(err)
			}
			if status == "pending" || status == "synced" {
				if _, err := pool.Exec(ctx, `insert into private.sync_status (integration, subject, tenant_id, state, attempts)
					select 'crm', 'tenant:' || t, t, $2, 0 from unnest($1::uuid[]) t`, tenants, status); err != nil {
					b.Fatal(err)
				}
			}
			counter.Reset()
			b.ResetTimer()
			for i := range b.N {
				err := db.PipeTx(ctx, pool, nil, func(p *db.Pipe) error {
					if status == "no job" {
						p.DeferCall("pg_catalog.txid_current", nil, nil)
						return nil
					}
					return ins.EnqueueCRMSync(ctx, p, tenants[i], fmt.Sprintf("evt_bench_%d", i), int64(i+1))
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			work := counter.Reset()
			b.ReportMetric(float64(work.Statements)/float64(b.N), "statements/op")
			b.ReportMetric(float64(work.RoundTrips+work.Describes)/float64(b.N), "roundtrips/op")
		})
	}
}
