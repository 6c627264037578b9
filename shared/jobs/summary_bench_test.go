package jobs_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// BenchmarkEnqueueKeepingTheSummary is what keeping the portal's delivery summary in the
// writes costs the webhook's and ticket-create's transaction: one enqueue (River's insert plus
// the sync status upsert, each now with its row trigger's upsert of a summary row), with the
// triggers on and, for comparison in the same run, off. Sub-benchmarks alternate, so a burst
// of load on the shared machine hits both alike.
func BenchmarkEnqueueKeepingTheSummary(b *testing.B) {
	ctx := context.Background()
	pool := dbtest.New(b)
	ins, err := jobs.NewInserter(pool)
	if err != nil {
		b.Fatal(err)
	}
	var tenantID uuid.UUID
	if err := pool.QueryRow(ctx, `insert into public.tenants (name) values ('Bench') returning id`).Scan(&tenantID); err != nil {
		b.Fatal(err)
	}
	toggle := func(on bool) {
		verb := "disable"
		if on {
			verb = "enable"
		}
		_, err := pool.Exec(ctx, fmt.Sprintf(`
			alter table private.river_job %[1]s trigger job_summary_insert;
			alter table private.sync_status %[1]s trigger sync_summary_insert;
			alter table private.sync_status %[1]s trigger sync_summary_update`, verb))
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, on := range []bool{false, true, false, true} {
		name := "triggers off"
		if on {
			name = "triggers on"
		}
		b.Run(name, func(b *testing.B) {
			toggle(on)
			defer toggle(true)
			for b.Loop() {
				err := db.Tx(ctx, pool, func(tx pgx.Tx) error {
					return ins.EnqueueCRMSync(ctx, tx, tenantID, "evt_"+uuid.NewString(), 0)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
