package crm

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// race is two crm-push containers (workers A and B, each with its own batcher that sends only
// when the script says so) on one database and one HubSpot stand-in, and one tenant whose
// projection changes from plan "starter" (version 1) to plan "pro" (version 2).
type race struct {
	t      *testing.T
	pool   *pgxpool.Pool
	fake   *hubspotfake.Server
	tenant uuid.UUID
	w      map[string]*Worker
	// results of each job's Work, in order.
	mu      sync.Mutex
	results map[string][]error
	running sync.WaitGroup
	// hold: the next HubSpot call waits for release; arrived is signalled when it is held.
	holdNext bool
	arrived  chan struct{}
	release  chan struct{}
}

func newRace(t *testing.T) *race {
	pool := dbtest.New(t)
	fake := hubspotfake.NewTest(t)
	r := &race{t: t, pool: pool, fake: fake, w: map[string]*Worker{}, results: map[string][]error{},
		arrived: make(chan struct{}, 1), release: make(chan struct{})}
	hs := hubspot.New(hubspot.Config{BaseURL: fake.URL(), AccessToken: fake.AccessToken()})
	for _, name := range []string{"A", "B"} {
		w := NewWorker(pool, hs, nil)
		w.batch.window, w.batch.max = time.Hour, MaxBatchSize // sent only by flush
		r.w[name] = w
	}
	fake.SetBeforeWrite(func(string, []hubspotfake.RecordedUpsert) {
		r.mu.Lock()
		hold := r.holdNext
		r.holdNext = false
		r.mu.Unlock()
		if hold {
			r.arrived <- struct{}{}
			<-r.release
		}
	})
	require.NoError(t, pool.QueryRow(context.Background(),
		`insert into public.tenants (name, contact_email) values ('Acme', 'founder@acme.test') returning id`).Scan(&r.tenant))
	return r
}

// change saves a new plan with the next crm_version, as the webhook's saveAccount does, and
// returns the version (the job's).
func (r *race) change(plan string) int64 {
	var v int64
	ctx := context.Background()
	require.NoError(r.t, db.Tx(ctx, r.pool, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			insert into private.billing_accounts (tenant_id, plan, status, crm_version) values ($1, $2, 'active', 1)
			on conflict (tenant_id) do update set plan = excluded.plan, crm_version = private.billing_accounts.crm_version + 1
			returning crm_version`, r.tenant, plan).Scan(&v)
	}))
	return v
}

// read starts job (queued for version) on worker w: it reads the projection now and waits in
// w's batch.
func (r *race) read(w, job string, version int64) {
	b := r.w[w].batch
	b.mu.Lock()
	before := len(b.pending)
	b.mu.Unlock()
	r.running.Add(1)
	go func() {
		defer r.running.Done()
		err := r.w[w].Work(context.Background(), &river.Job[jobs.CRMSyncArgs]{
			JobRow: &rivertype.JobRow{ID: 1, Kind: jobs.KindCRMSync},
			Args:   jobs.CRMSyncArgs{TenantID: r.tenant, SourceEvent: "evt_" + job, Version: version},
		})
		r.mu.Lock()
		r.results[job] = append(r.results[job], err)
		r.mu.Unlock()
	}()
	require.Eventually(r.t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.pending) > before
	}, 5*time.Second, time.Millisecond, "job %s reads and joins %s's batch", job, w)
}

// flush sends w's batch in the background.
func (r *race) flush(w string) { go r.w[w].batch.flush() }

// hold makes the next HubSpot call wait until unhold.
func (r *race) hold() {
	r.mu.Lock()
	r.holdNext = true
	r.mu.Unlock()
}

func (r *race) waitHeld() {
	select {
	case <-r.arrived:
	case <-time.After(5 * time.Second):
		r.t.Fatal("no HubSpot call arrived to hold")
	}
}

// jobDone waits for job's newest attempt to end and returns its error.
func (r *race) jobDone(job string, attempts int) error {
	require.Eventually(r.t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.results[job]) >= attempts
	}, 10*time.Second, time.Millisecond, "job %s attempt %d ends", job, attempts)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results[job][attempts-1]
}

// TestTwoChangesAndTwoJobsInEveryOrderEndWithTheNewestState interleaves two changes of one
// tenant (v1 "starter", v2 "pro") and their two jobs in every order that matters: reads
// before and after the second change, one batch for both, a batch of the old read sent after
// the new one completed, and two batches overlapping at HubSpot in both orders. Whatever the
// order, a job that ends without error is only one whose version HubSpot was sent, a job told
// to run again (snooze 0) pushes again, and HubSpot ends with the newest state.
func TestTwoChangesAndTwoJobsInEveryOrderEndWithTheNewestState(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		script func(r *race, v1 int64) (v2 int64)
	}{
		{"one after the other", func(r *race, v1 int64) int64 {
			r.read("A", "J1", v1)
			r.flush("A")
			require.NoError(t, r.jobDone("J1", 1))
			v2 := r.change("pro")
			r.read("A", "J2", v2)
			r.flush("A")
			return v2
		}},
		{"both read after the second change", func(r *race, v1 int64) int64 {
			v2 := r.change("pro")
			r.read("A", "J1", v1)
			r.read("A", "J2", v2)
			r.flush("A")
			return v2
		}},
		{"old and new read in one batch", func(r *race, v1 int64) int64 {
			r.read("A", "J1", v1)
			v2 := r.change("pro")
			r.read("A", "J2", v2)
			r.flush("A")
			return v2
		}},
		{"new read in one batch, old read in another", func(r *race, v1 int64) int64 {
			r.read("A", "J2x", v1) // a second job of v1 reads too, in a batch that ends first
			v2 := r.change("pro")
			r.read("B", "J2", v2)
			r.read("A", "J1", v1)
			r.flush("A")
			r.flush("B")
			return v2
		}},
		{"old read sent after the new one completed", func(r *race, v1 int64) int64 {
			r.read("A", "J1", v1)
			v2 := r.change("pro")
			r.read("B", "J2", v2)
			r.flush("B")
			require.NoError(t, r.jobDone("J2", 1))
			r.flush("A")
			return v2
		}},
		{"slow old batch overlaps a fast new one", func(r *race, v1 int64) int64 {
			r.read("A", "J1", v1)
			r.hold()
			r.flush("A")
			r.waitHeld() // the old state is at HubSpot, not yet written
			v2 := r.change("pro")
			r.read("B", "J2", v2)
			r.flush("B")
			time.Sleep(50 * time.Millisecond) // give B every chance to overtake
			close(r.release)
			return v2
		}},
		{"slow new batch overlaps a fast old one", func(r *race, v1 int64) int64 {
			r.read("A", "J1", v1)
			v2 := r.change("pro")
			r.read("B", "J2", v2)
			r.hold()
			r.flush("B")
			r.waitHeld()
			r.flush("A")
			time.Sleep(50 * time.Millisecond)
			close(r.release)
			return v2
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRace(t)
			v1 := r.change("starter")
			v2 := tc.script(r, v1)
			r.running.Wait()

			// A job told to run again does (River snoozes it for 0 s), reading the newest state.
			for job, errs := range r.snapshot() {
				for attempt := len(errs); ; attempt++ {
					err := r.jobDone(job, attempt)
					if err == nil {
						break
					}
					var again *jobs.AgainError
					require.ErrorAs(t, err, &again, "job %s attempt %d", job, attempt)
					require.Less(t, attempt, 5, "job %s keeps being overtaken", job)
					r.read("A", job, v1)
					r.flush("A")
					r.running.Wait()
				}
			}
			company, ok := r.fake.Company(r.tenant.String())
			require.True(t, ok)
			require.Equal(t, "pro", company.Properties[PropPlan], "HubSpot shows the newest state")
			var sent int64
			require.NoError(t, r.pool.QueryRow(context.Background(),
				`select sent_version from private.crm_pushes where tenant_id = $1`, r.tenant).Scan(&sent))
			require.Equal(t, v2, sent, "the version HubSpot holds is recorded")
		})
	}
}

func (r *race) snapshot() map[string][]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]error{}
	for k, v := range r.results {
		out[k] = append([]error(nil), v...)
	}
	return out
}
