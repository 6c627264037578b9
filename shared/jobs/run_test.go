package jobs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/jobs/jobstest"
)

// ticketWorker is a hand-written helpdesk worker: WorkFunc decides each attempt's result.
type ticketWorker struct {
	mu       sync.Mutex
	attempts map[uuid.UUID]int
	done     map[uuid.UUID]int
	WorkFunc func(ctx context.Context, ticketID uuid.UUID, attempt int) error
}

func (w *ticketWorker) workers() *river.Workers {
	ws := river.NewWorkers()
	river.AddWorker(ws, river.WorkFunc(func(ctx context.Context, job *river.Job[jobs.HelpdeskTicketArgs]) error {
		w.mu.Lock()
		w.attempts[job.Args.TicketID]++
		n := w.attempts[job.Args.TicketID]
		w.mu.Unlock()
		if err := w.WorkFunc(ctx, job.Args.TicketID, n); err != nil {
			return err
		}
		w.mu.Lock()
		w.done[job.Args.TicketID]++
		w.mu.Unlock()
		return nil
	}))
	return ws
}

func newTicketWorker(f func(ctx context.Context, ticketID uuid.UUID, attempt int) error) *ticketWorker {
	return &ticketWorker{attempts: map[uuid.UUID]int{}, done: map[uuid.UUID]int{}, WorkFunc: f}
}

func enqueueTickets(t *testing.T, b bundle, n int) []uuid.UUID {
	t.Helper()
	ctx := context.Background()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
		require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
			return b.inserter.EnqueueHelpdeskTicket(ctx, tx, b.tenantID, ids[i])
		}))
	}
	return ids
}

func jobStates(t *testing.T, b bundle) map[string]int {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `select state::text, count(*) from private.river_job group by 1`)
	require.NoError(t, err)
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		require.NoError(t, rows.Scan(&s, &n))
		out[s] = n
	}
	require.NoError(t, rows.Err())
	return out
}

func TestRetryableJobsAreWorkedAgainAcrossShortRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := enqueueTickets(t, b, 5)
	w := newTicketWorker(func(_ context.Context, _ uuid.UUID, attempt int) error {
		if attempt <= 2 {
			return jobs.Upstream(503, "", errors.New("zendesk: 503 service unavailable"))
		}
		return nil
	})
	clock := jobstest.NewClock()
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second, Time: clock}

	sum, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 5, Failed: 5}, sum)
	require.Equal(t, "retrying", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(ids[0])))

	sum, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Zero(t, sum.Worked, "nothing is due before the first backoff (15 s) has passed")

	clock.Advance(20 * time.Second) // > 15 s + 20% jitter
	sum, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 5, Failed: 5}, sum)

	clock.Advance(40 * time.Second) // > 30 s + 20% jitter
	sum, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 5, Succeeded: 5}, sum)

	for _, id := range ids {
		require.Equal(t, 1, w.done[id])
		require.Equal(t, "synced", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(id)))
	}
	require.Equal(t, map[string]int{"completed": 5}, jobStates(t, b))
}

func TestRunStoppedMidBatchLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := enqueueTickets(t, b, 20)
	slow := true
	var mu sync.Mutex
	w := newTicketWorker(func(ctx context.Context, _ uuid.UUID, _ int) error {
		mu.Lock()
		s := slow
		mu.Unlock()
		if !s {
			return nil
		}
		select { // a provider call slower than the whole run
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return nil
		}
	})
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 500 * time.Millisecond, Margin: 200 * time.Millisecond, MaxWorkers: 5}

	sum, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Positive(t, sum.Snoozed, "jobs cut off by the stop are put back, not failed")
	require.Zero(t, sum.Failed)
	require.Zero(t, sum.Succeeded)

	mu.Lock()
	slow = false
	mu.Unlock()
	cfg.Budget = 10 * time.Second
	for i := 0; i < 3 && jobStates(t, b)["completed"] < len(ids); i++ {
		_, err = jobs.Run(ctx, b.pool, cfg)
		require.NoError(t, err)
	}
	require.Equal(t, map[string]int{"completed": len(ids)}, jobStates(t, b))
	for _, id := range ids {
		require.Equal(t, 1, w.done[id], "ticket %s pushed exactly once", id)
	}
}

func TestJobLeftRunningByAKilledContainerIsRescued(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := enqueueTickets(t, b, 1)
	// The container died mid-job: River had marked it running and nobody finished it.
	_, err := b.pool.Exec(ctx, `update private.river_job set state = 'running', attempt = 1,
		attempted_at = now() - interval '10 minutes', attempted_by = array['dead-container']`)
	require.NoError(t, err)

	w := newTicketWorker(func(context.Context, uuid.UUID, int) error { return nil })
	sum, err := jobs.Run(ctx, b.pool, jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second})
	require.NoError(t, err)
	require.Equal(t, 1, sum.Succeeded)
	require.Equal(t, 1, w.done[ids[0]])
}

func TestPermanentFailureIsDeadLetteredAndRequeueDeliversIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := enqueueTickets(t, b, 2)
	broken := true
	w := newTicketWorker(func(_ context.Context, id uuid.UUID, _ int) error {
		if broken && id == ids[0] {
			return jobs.Permanent(jobs.Upstream(422, "RecordInvalid", errors.New("zendesk: 422 RecordInvalid: Requester email is invalid")))
		}
		return nil
	})
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second}

	sum, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 2, Succeeded: 1, Discarded: 1}, sum)
	require.Equal(t, "failed", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(ids[0])))

	letters, err := jobs.DeadLetters(ctx, b.pool, jobs.QueueHelpdesk, &b.tenantID)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	require.Equal(t, jobs.TicketSubject(ids[0]), letters[0].Subject)
	require.Equal(t, "cancelled", letters[0].State)
	require.Contains(t, letters[0].LastError, "Requester email is invalid")
	other := uuid.New()
	none, err := jobs.DeadLetters(ctx, b.pool, jobs.QueueHelpdesk, &other)
	require.NoError(t, err)
	require.Empty(t, none, "another tenant's filter sees nothing")

	_, err = jobs.Requeue(ctx, b.pool, jobs.RequeueFilter{})
	require.ErrorIs(t, err, jobs.ErrRequeueUnscoped)

	broken = false // the founder fixed the requester's email
	res, err := jobs.Requeue(ctx, b.pool, jobs.RequeueFilter{Integration: jobs.QueueHelpdesk, TenantID: &b.tenantID})
	require.NoError(t, err)
	require.Equal(t, 1, res.Requeued)
	require.Equal(t, "pending", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(ids[0])))

	sum, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, sum)
	require.Equal(t, "synced", syncState(t, b.pool, jobs.QueueHelpdesk, jobs.TicketSubject(ids[0])))
	letters, err = jobs.DeadLetters(ctx, b.pool, jobs.QueueHelpdesk, nil)
	require.NoError(t, err)
	require.Empty(t, letters)
}

func TestBackoffGivesUpAfterAboutADay(t *testing.T) {
	t.Parallel()
	sched := jobs.DefaultBackoff().Schedule()
	require.Len(t, sched, jobs.MaxAttempts-1)
	require.Less(t, sched[0]+sched[1], time.Minute, "the first retries come within a minute")
	var total time.Duration
	for _, d := range sched {
		total += d
	}
	require.InDelta(t, 24, total.Hours(), 1.5, "the last attempt comes about a day after the first")
}

// River's job cleaner (run by whichever queue run's client is elected leader) deletes
// cancelled jobs after a day and discarded ones after a week by default; dead letters must stay
// until someone requeues or resolves them, while completed jobs are still pruned.
func TestDeadLettersOutliveTheJobCleaner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := enqueueTickets(t, b, 3)
	w := newTicketWorker(func(_ context.Context, id uuid.UUID, _ int) error {
		if id == ids[2] {
			return nil
		}
		return jobs.Permanent(errors.New("zendesk: 401 Couldn't authenticate you"))
	})
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second}
	_, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	// One dead letter of each kind, a completed job, all finalized long ago.
	_, err = b.pool.Exec(ctx, `update private.river_job set state = 'discarded' where args->>'ticket_id' = $1`, ids[1].String())
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `update private.river_job set finalized_at = now() - interval '30 days'`)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"cancelled": 1, "discarded": 1, "completed": 1}, jobStates(t, b))

	// Runs long enough for their client to be elected leader and for the cleaner's first pass
	// (a few, since a loaded machine can delay both past one run).
	cfg.UntilBudget, cfg.Budget = true, 4*time.Second
	for i := 0; i < 5 && jobStates(t, b)["completed"] > 0; i++ {
		_, err = jobs.Run(ctx, b.pool, cfg)
		require.NoError(t, err)
	}

	require.Equal(t, map[string]int{"cancelled": 1, "discarded": 1}, jobStates(t, b),
		"the month-old completed job is pruned, the dead letters stay")
	letters, err := jobs.DeadLetters(ctx, b.pool, jobs.QueueHelpdesk, nil)
	require.NoError(t, err)
	require.Len(t, letters, 2)

	// Once resolved, a dead letter is kept for jobs.ResolvedRetention, then pruned by a run.
	require.NoError(t, jobs.Resolve(ctx, b.pool, letters[0].JobID, "pushed by hand"))
	require.NoError(t, jobs.Resolve(ctx, b.pool, letters[1].JobID, "pushed by hand"))
	_, err = b.pool.Exec(ctx, `update private.river_job set metadata = jsonb_set(metadata, '{resolved_at}', to_jsonb(now() - interval '31 days'))
		where id = $1`, letters[0].JobID)
	require.NoError(t, err)
	cfg.UntilBudget = false
	_, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, map[string]int{letters[1].State: 1}, jobStates(t, b), "only the recently resolved one is left")
}
