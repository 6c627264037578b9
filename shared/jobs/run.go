package jobs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/portal-functions/portal-functions/shared/telemetry"
)

// Runner defaults.
const (
	// DefaultBudget is how long one scheduled invocation works when its context has no deadline.
	DefaultBudget = 50 * time.Second
	// DefaultMargin is kept free before the Lambda deadline for stopping and reporting.
	DefaultMargin = 3 * time.Second
	// DefaultMaxWorkers is how many jobs of the queue run at once: one full HubSpot batch.
	DefaultMaxWorkers = 100
	// DefaultJobTimeout bounds one job; a provider call has its own, shorter timeout.
	DefaultJobTimeout = 30 * time.Second
	// DefaultRescueAfter is when a job left running (its container was killed) is retried.
	DefaultRescueAfter = 2 * time.Minute
	// CompletedRetention is how long River's job cleaner keeps a completed job (a finished
	// push). A week covers reconcile's look-back at a recent incident; older ones only cost space.
	CompletedRetention = 7 * 24 * time.Hour
	// pollInterval is how often a run polls for jobs and checks whether it is done.
	pollInterval = 50 * time.Millisecond
	// keepForever is River's "never delete" retention (-1; any other negative value is refused).
	keepForever time.Duration = -1
)

// RunConfig says which queue to work, with which workers, for how long, and where failures go.
type RunConfig struct {
	// Queue is the integration's queue (QueueCRM, QueueHelpdesk). Required.
	Queue string
	// Workers has a worker for every kind on the queue. Required.
	Workers *river.Workers
	// Budget bounds the run (DefaultBudget); it is cut to the context's deadline minus Margin.
	Budget time.Duration
	// Margin is kept free before the context's deadline (DefaultMargin).
	Margin time.Duration
	// UntilBudget keeps working until the budget is spent even when the queue is empty (the
	// dev server's continuous worker); by default a run ends as soon as nothing is due.
	UntilBudget bool
	// Linger keeps a run polling for at least this long after its start even when nothing is
	// due: a run started by a nudge (nudge.Linger) covers the jobs that requests committed
	// after the nudge without sending their own.
	Linger time.Duration
	// IdleStop keeps a run polling until nothing has been due for this long (0: it stops at
	// the first poll that finds nothing): a nudged run stays up through a steady stream of
	// jobs instead of handing over to a fresh invocation at every lull.
	IdleStop time.Duration
	// MaxWorkers is how many jobs run at once (DefaultMaxWorkers).
	MaxWorkers int
	// Backoff is the queue's retry schedule (DefaultBackoff when zero).
	Backoff Backoff
	// Logger, Metrics: where outcomes go (discarded when nil).
	Logger  *slog.Logger
	Metrics *telemetry.Metrics
	// AlertWebhookURL receives a Slack-compatible {"text": ...} POST per alert; empty: alerts
	// are only logged.
	AlertWebhookURL string
	// HTTPClient posts alerts (a 5 s client when nil).
	HTTPClient *http.Client
	// Time drives River's clock, the retry policy and the sync timestamps (tests simulate
	// hours in milliseconds with jobstest.Clock); the wall clock when nil.
	Time rivertype.TimeGenerator
}

// Summary counts what one run did; Worked is the sum of the other four.
type Summary struct {
	Worked    int `json:"worked"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Discarded int `json:"discarded"`
	Snoozed   int `json:"snoozed"`
}

// Run works cfg.Queue until nothing is due or the budget is spent, then stops softly (running
// jobs finish) and, if they do not finish before the budget's end, hard (their contexts are
// cancelled and they run again next time). It is made for a scheduled Lambda: River runs in
// poll-only mode (no LISTEN, safe behind a transaction pooler), and every run first does the
// maintenance River's elected leader would do on a schedule (rescue jobs left running by a
// killed container, move due retries to available), so short runs make progress even when no
// process lives long enough to be leader.
func Run(ctx context.Context, pool *pgxpool.Pool, cfg RunConfig) (Summary, error) {
	if cfg.Queue == "" || cfg.Workers == nil {
		return Summary{}, ErrRunConfig
	}
	start := time.Now()
	budget := cfg.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	margin := cfg.Margin
	if margin <= 0 {
		margin = DefaultMargin
	}
	hardStop := start.Add(budget)
	if d, ok := ctx.Deadline(); ok && d.Add(-margin).Before(hardStop) {
		hardStop = d.Add(-margin)
	}
	// The last fifth of the budget (at most 5 s) is for running jobs to finish.
	grace := min((hardStop.Sub(start))/5, 5*time.Second)
	workUntil := hardStop.Add(-grace)

	counts := &counters{}
	stopping := &atomic.Bool{}
	client, now, err := newClient(pool, cfg, counts, stopping, false)
	if err != nil {
		return Summary{}, err
	}
	if err := maintain(ctx, pool, cfg.Queue, now); err != nil {
		return Summary{}, err
	}
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		return Summary{}, fmt.Errorf("start %s queue: %w", cfg.Queue, err)
	}

	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var loopErr error
	lastMaintain := time.Now()
	lingerUntil := start.Add(cfg.Linger)
	var idleSince time.Time
loop:
	for time.Now().Before(workUntil) {
		select {
		case <-ctx.Done():
			break loop
		case <-ticker.C:
		}
		if cfg.UntilBudget || time.Now().Before(lingerUntil) {
			// River's own fetcher picks up what is committed meanwhile; the loop only keeps
			// due retries moving, as the leader would.
			if time.Since(lastMaintain) < time.Second {
				continue
			}
			lastMaintain = time.Now()
			if err := maintain(ctx, pool, cfg.Queue, now); err != nil {
				loopErr = err
				break
			}
			continue
		}
		busy, err := busy(ctx, pool, cfg.Queue, client.ID(), now)
		if err != nil {
			loopErr = err
			break
		}
		if !busy {
			if idleSince.IsZero() {
				idleSince = time.Now()
			}
			if time.Since(idleSince) >= cfg.IdleStop {
				break
			}
			continue
		}
		idleSince = time.Time{}
	}

	softCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), hardStop)
	defer cancel()
	if err := client.Stop(softCtx); err != nil {
		stopping.Store(true)
		hardCtx, cancelHard := context.WithTimeout(context.WithoutCancel(ctx), margin)
		defer cancelHard()
		if err := client.StopAndCancel(hardCtx); err != nil {
			return counts.summary(), fmt.Errorf("stop %s queue: %w", cfg.Queue, err)
		}
	}
	if err := emitQueueAge(context.WithoutCancel(ctx), pool, cfg, now()); err != nil && loopErr == nil {
		loopErr = err
	}
	return counts.summary(), loopErr
}

// emitQueueAge publishes the age of the queue's oldest waiting job (0 when none), as
// `reconcile health` counts it: every state River will still run. A queue-age alarm then sees
// a queue that stopped moving, even when no attempt fails.
func emitQueueAge(ctx context.Context, pool *pgxpool.Pool, cfg RunConfig, now time.Time) error {
	if cfg.Metrics == nil {
		return nil
	}
	var oldest *time.Time
	if err := pool.QueryRow(ctx, `select min(created_at) from private.river_job
		where queue = $1 and state in ('available', 'pending', 'retryable', 'running', 'scheduled')`,
		cfg.Queue).Scan(&oldest); err != nil {
		return fmt.Errorf("read %s queue age: %w", cfg.Queue, err)
	}
	age := 0.0
	if oldest != nil && oldest.Before(now) {
		age = now.Sub(*oldest).Seconds()
	}
	cfg.Metrics.Count(ctx, MetricQueueOldestWaiting, age, map[string]string{"Integration": cfg.Queue})
	return nil
}

// RunContinuously works the queues until ctx ends: the dev server's in-process workers. Each
// queue is worked by back-to-back runs of cfg (Queue set per run), so it behaves as the
// scheduled functions do, only without the pause between invocations.
func RunContinuously(ctx context.Context, pool *pgxpool.Pool, cfgs ...RunConfig) error {
	errs := make(chan error, len(cfgs))
	for _, cfg := range cfgs {
		go func() {
			for ctx.Err() == nil {
				c := cfg
				c.UntilBudget = true
				if c.Budget <= 0 {
					c.Budget = 30 * time.Second
				}
				if _, err := Run(ctx, pool, c); err != nil && ctx.Err() == nil {
					if c.Logger != nil {
						c.Logger.Error("queue run failed", "queue", c.Queue, "error", err.Error())
					}
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			}
			errs <- nil
		}()
	}
	for range cfgs {
		<-errs
	}
	return nil
}

// newClient builds the River client of one run (workFor false: insert/ops only, no queue).
func newClient(pool *pgxpool.Pool, cfg RunConfig, counts *counters, stopping *atomic.Bool, opsOnly bool) (*river.Client[pgx.Tx], func() time.Time, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	now := time.Now
	if cfg.Time != nil {
		now = cfg.Time.Now
	}
	backoff := cfg.Backoff
	if backoff == (Backoff{}) {
		backoff = DefaultBackoff()
	}
	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 5 * time.Second}
	}
	obs := &observer{
		pool: pool, logger: logger, metrics: cfg.Metrics, now: now, stopping: stopping, summary: counts,
		alerts: &alerter{pool: pool, url: cfg.AlertWebhookURL, client: httpClient, logger: logger, window: AlertWindow},
	}
	maxWorkers := cfg.MaxWorkers
	if maxWorkers <= 0 {
		maxWorkers = DefaultMaxWorkers
	}
	rc := &river.Config{
		Schema:               Schema,
		PollOnly:             true,
		FetchPollInterval:    pollInterval,
		FetchCooldown:        10 * time.Millisecond,
		JobTimeout:           DefaultJobTimeout,
		RescueStuckJobsAfter: DefaultRescueAfter,
		MaxAttempts:          MaxAttempts,
		// The leader's job cleaner would delete cancelled jobs after a day and discarded ones
		// after a week: those are the dead letters, kept until someone requeues or resolves them.
		CancelledJobRetentionPeriod: keepForever,
		DiscardedJobRetentionPeriod: keepForever,
		CompletedJobRetentionPeriod: CompletedRetention,
		RetryPolicy:                 &RetryPolicy{Backoffs: map[string]Backoff{cfg.Queue: backoff}, Now: now},
		Logger:                      slog.New(warnAndAbove{logger.With("component", "river").Handler()}),
		Middleware:                  []rivertype.Middleware{obs},
		Workers:                     cfg.Workers,
		Test:                        river.TestConfig{Time: cfg.Time},
	}
	if !opsOnly {
		rc.Queues = map[string]river.QueueConfig{cfg.Queue: {MaxWorkers: maxWorkers}}
	}
	client, err := river.NewClient(riverpgxv5.New(pool), rc)
	if err != nil {
		return nil, nil, fmt.Errorf("river client for %s: %w", cfg.Queue, err)
	}
	return client, now, nil
}

// maintain does at the start of a run what River's leader does on its schedule: jobs of the
// queue left running past DefaultRescueAfter (their container died) become retryable at once,
// and every retryable or scheduled job that is due becomes available. Both use River's own
// driver queries.
func maintain(ctx context.Context, pool *pgxpool.Pool, queue string, now func() time.Time) error {
	exec := riverpgxv5.New(pool).GetExecutor()
	t := now().UTC()
	stuck, err := exec.JobGetStuck(ctx, &riverdriver.JobGetStuckParams{
		Max: 1000, Schema: Schema, StuckHorizon: t.Add(-DefaultRescueAfter),
	})
	if err != nil {
		return fmt.Errorf("find stuck jobs: %w", err)
	}
	rescue := riverdriver.JobRescueManyParams{Schema: Schema, StuckHorizon: t.Add(-DefaultRescueAfter)}
	for _, job := range stuck {
		if job.Queue != queue {
			continue // another queue's runner rescues its own
		}
		state, finalized := rivertype.JobStateRetryable, (*time.Time)(nil)
		if job.Attempt >= job.MaxAttempts {
			state, finalized = rivertype.JobStateDiscarded, &t
		}
		errData := fmt.Appendf(nil, `{"at":%q,"attempt":%d,"error":"stuck job rescued: its worker stopped without finishing","trace":""}`,
			t.Format(time.RFC3339Nano), job.Attempt)
		rescue.ID = append(rescue.ID, job.ID)
		rescue.Error = append(rescue.Error, errData)
		rescue.FinalizedAt = append(rescue.FinalizedAt, finalized)
		rescue.ScheduledAt = append(rescue.ScheduledAt, t)
		rescue.State = append(rescue.State, string(state))
	}
	if len(rescue.ID) > 0 {
		if _, err := exec.JobRescueMany(ctx, &rescue); err != nil {
			return fmt.Errorf("rescue stuck jobs: %w", err)
		}
	}
	if _, err := exec.JobSchedule(ctx, &riverdriver.JobScheduleParams{Max: 10000, Now: &t, Schema: Schema}); err != nil {
		return fmt.Errorf("schedule due jobs: %w", err)
	}
	// River's cleaner keeps dead letters forever; once resolved, they go after ResolvedRetention.
	if _, err := pool.Exec(ctx, `
		delete from private.river_job where id in (
		    select id from private.river_job
		    where queue = $1 and state in ('discarded', 'cancelled')
		      and (metadata->>'resolved_at')::timestamptz < $2
		    limit 1000)`, queue, t.Add(-ResolvedRetention)); err != nil {
		return fmt.Errorf("prune resolved dead letters: %w", err)
	}
	return nil
}

// busy reports whether the queue has work due now or a job this run is still working, after
// moving due retries to available.
func busy(ctx context.Context, pool *pgxpool.Pool, queue, clientID string, now func() time.Time) (bool, error) {
	if err := maintain(ctx, pool, queue, now); err != nil {
		return false, err
	}
	var due bool
	err := pool.QueryRow(ctx, `
		select exists (select 1 from private.river_job where queue = $1 and state = 'available' and scheduled_at <= $2)
		    or exists (select 1 from private.river_job where queue = $1 and state = 'running'
		               and attempted_by[array_length(attempted_by, 1)] = $3)`,
		queue, now(), clientID).Scan(&due)
	if err != nil {
		return false, fmt.Errorf("check %s queue: %w", queue, err)
	}
	return due, nil
}

// warnAndAbove keeps River's own log lines at warn and above: River logs every job error at
// info ("Job errored; retrying"), which would make each failure two lines; the observer logs
// each outcome once, with our fields, and River's operational trouble is logged at warn/error.
type warnAndAbove struct{ slog.Handler }

func (h warnAndAbove) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h warnAndAbove) WithAttrs(attrs []slog.Attr) slog.Handler {
	return warnAndAbove{h.Handler.WithAttrs(attrs)}
}

func (h warnAndAbove) WithGroup(name string) slog.Handler {
	return warnAndAbove{h.Handler.WithGroup(name)}
}
