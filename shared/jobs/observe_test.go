package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/jobs/jobstest"
	"github.com/portal-functions/portal-functions/shared/sam"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
)

// metricNames lists the metric each EMF line publishes, with its Function and Integration.
func metricNames(lines []map[string]any) []string {
	var out []string
	for _, l := range lines {
		aws := l["_aws"].(map[string]any)
		for _, m := range aws["CloudWatchMetrics"].([]any)[0].(map[string]any)["Metrics"].([]any) {
			out = append(out, m.(map[string]any)["Name"].(string)+" "+l["Function"].(string)+"/"+l["Integration"].(string))
		}
	}
	return out
}

func TestEveryFailureIsOneLogLineAndOneMetric(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := enqueueTickets(t, b, 1)
	w := newTicketWorker(func(context.Context, uuid.UUID, int) error {
		return jobs.Upstream(503, "", errors.New("zendesk: 503 service unavailable"))
	})
	logs, metrics := &telemetrytest.Buffer{}, &telemetrytest.Buffer{}
	cfg := jobs.RunConfig{
		Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second,
		Logger:  telemetry.NewLogger(logs, "support-push", slog.LevelInfo),
		Metrics: telemetry.NewMetrics(metrics, "support-push"),
	}

	sum, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 1, Failed: 1}, sum)
	failures := failureLines(logs.Take(t))
	require.Len(t, failures, 1, "one log line per failed attempt")
	line := failures[0]
	require.Equal(t, "WARN", line["level"])
	require.Equal(t, "sync attempt failed", line["msg"])
	require.Equal(t, "helpdesk", line["integration"])
	require.Equal(t, jobs.KindHelpdeskTicket, line["job_kind"])
	require.Equal(t, jobs.TicketSubject(ids[0]), line["subject"])
	require.Equal(t, b.tenantID.String(), line["tenant_id"])
	require.EqualValues(t, 1, line["attempt"])
	require.EqualValues(t, 503, line["upstream_status"])
	require.Equal(t, "retryable", line["error_class"])
	require.Equal(t, []string{"SyncFailures support-push/helpdesk", "SyncFailuresInWindow support-push/helpdesk",
		"QueueOldestWaitingSeconds support-push/helpdesk"}, metricNames(metrics.Take(t)),
		"one failure metric per failed attempt with the window's count, and the run's queue age")

	// The last attempt fails: the job is dead-lettered, at error level, with its own metric.
	_, err = b.pool.Exec(ctx, `update private.river_job set attempt = max_attempts - 1, state = 'available', scheduled_at = now()`)
	require.NoError(t, err)
	sum, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 1, Discarded: 1}, sum)
	failures = failureLines(logs.Take(t))
	require.Len(t, failures, 1)
	require.Equal(t, "ERROR", failures[0]["level"])
	require.Equal(t, "sync dead-lettered", failures[0]["msg"])
	require.Equal(t, "exhausted", failures[0]["error_class"])
	require.Equal(t, []string{"SyncFailures support-push/helpdesk", "SyncDeadLettered support-push/helpdesk",
		"SyncFailuresInWindow support-push/helpdesk", "QueueOldestWaitingSeconds support-push/helpdesk"}, metricNames(metrics.Take(t)))

	letters, err := jobs.DeadLetters(ctx, b.pool, jobs.QueueHelpdesk, nil)
	require.NoError(t, err)
	require.Len(t, letters, 1)
	require.Equal(t, "discarded", letters[0].State)
	require.Equal(t, jobs.MaxAttempts, letters[0].Attempts)
	require.Equal(t, jobs.TicketSubject(ids[0]), letters[0].Subject)
	require.Contains(t, letters[0].LastError, "503 service unavailable")
}

// failureLines keeps the log lines about job outcomes (not River's own or the alert's).
func failureLines(lines []map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["job_kind"] != nil {
			out = append(out, l)
		}
	}
	return out
}

func TestAlertAtMostOncePerWindowPerIntegration(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var alerts atomic.Int64
	var lastText atomic.Value
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Text string `json:"text"`
		}
		if json.NewDecoder(r.Body).Decode(&body) == nil && r.Header.Get("Content-Type") == "application/json" {
			lastText.Store(body.Text)
			alerts.Add(1)
		}
	}))
	t.Cleanup(receiver.Close)
	w := newTicketWorker(func(context.Context, uuid.UUID, int) error { return errors.New("zendesk: 502 bad gateway") })
	clock := jobstest.NewClock()
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second, Time: clock,
		AlertWebhookURL: receiver.URL, MaxWorkers: 1}

	enqueueTickets(t, b, jobs.AlertThreshold-1)
	_, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Zero(t, alerts.Load(), "fewer failures than the threshold are a blip, not an alert")

	enqueueTickets(t, b, 5)
	_, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, int64(1), alerts.Load(), "the threshold alerts once, however many failures follow")
	require.Contains(t, lastText.Load(), "helpdesk sync failed")

	clock.Advance(5 * time.Minute) // retries fail again within the window
	_, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, int64(1), alerts.Load())

	clock.Advance(jobs.AlertWindow) // a new window: a still-failing integration alerts again
	_, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, int64(2), alerts.Load())
}

func TestRequeueOneJobOnlyIfDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ids := enqueueTickets(t, b, 2)
	broken := map[uuid.UUID]bool{ids[0]: true, ids[1]: true}
	var mu sync.Mutex
	w := newTicketWorker(func(_ context.Context, id uuid.UUID, _ int) error {
		mu.Lock()
		defer mu.Unlock()
		if broken[id] {
			return jobs.Permanent(errors.New("zendesk: 422 RecordInvalid"))
		}
		return nil
	})
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second}
	_, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	letters, err := jobs.DeadLetters(ctx, b.pool, jobs.QueueHelpdesk, nil)
	require.NoError(t, err)
	require.Len(t, letters, 2)

	mu.Lock()
	broken[ids[0]] = false
	mu.Unlock()
	var one int64
	for _, d := range letters {
		if d.Subject == jobs.TicketSubject(ids[0]) {
			one = d.JobID
		}
	}
	res, err := jobs.Requeue(ctx, b.pool, jobs.RequeueFilter{JobID: one})
	require.NoError(t, err)
	require.Equal(t, 1, res.Requeued)
	sum, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, sum, "only the requeued job ran")
	require.Equal(t, 1, w.done[ids[0]])

	_, err = jobs.Requeue(ctx, b.pool, jobs.RequeueFilter{JobID: one})
	require.ErrorIs(t, err, jobs.ErrNotDeadLetter, "a delivered job is not pushed again")
	_, err = jobs.Requeue(ctx, b.pool, jobs.RequeueFilter{JobID: 1 << 40})
	require.ErrorIs(t, err, jobs.ErrNotDeadLetter)
	letters, err = jobs.DeadLetters(ctx, b.pool, jobs.QueueHelpdesk, nil)
	require.NoError(t, err)
	require.Len(t, letters, 1, "the other dead letter stays listed")
}

// alertReceiver counts the alert posts it receives.
func alertReceiver(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// lastValue is the last value of metric in the EMF lines (-1: never emitted).
func lastValue(lines []map[string]any, metric string) float64 {
	v := -1.0
	for _, l := range lines {
		if x, ok := l[metric].(float64); ok {
			v = x
		}
	}
	return v
}

// windowCounts are the values of MetricSyncFailuresInWindow in lines, smallest first. Concurrent
// failures count themselves under the alert row's lock, one after another, but each emits its
// count after its commit, so the lines come in any order: the alarm reads their Maximum, and
// a test compares them as a set (the last line need not be the largest).
func windowCounts(lines []map[string]any) []float64 {
	var out []float64
	for _, l := range lines {
		if x, ok := l[jobs.MetricSyncFailuresInWindow].(float64); ok {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// "More than 3 failures in 10 minutes" over a sliding window, said the same way by the in-app
// alert and by the metric the CloudWatch alarm reads: exactly three is not an alert; failures
// older than ten minutes no longer count; four within any ten minutes are, across any boundary.
// Each failure reports how many the window holds with it: the concurrent ones of one run count
// one after another (their lines may come in any order).
func TestFailureAlertIsMoreThanThreeInSlidingTenMinutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	url, alerts := alertReceiver(t)
	metrics := &telemetrytest.Buffer{}
	w := newTicketWorker(func(_ context.Context, _ uuid.UUID, attempt int) error {
		if attempt == 1 {
			return errors.New("zendesk: 502 bad gateway")
		}
		return nil
	})
	clock := jobstest.NewClock()
	// A run ends as soon as nothing is due; the budget only bounds a run that hangs. A short
	// one could end a run under a loaded machine before it worked every job, and the next
	// step's counts would then include them.
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: time.Minute, Time: clock,
		AlertWebhookURL: url, Metrics: telemetry.NewMetrics(metrics, "support-push")}
	failAt := func(advance time.Duration, n int) {
		t.Helper()
		clock.Advance(advance)
		enqueueTickets(t, b, n)
		sum, err := jobs.Run(ctx, b.pool, cfg)
		require.NoError(t, err)
		require.Equal(t, n, sum.Failed, "every new job failed its first attempt in this run")
	}

	failAt(0, 3)
	require.Zero(t, alerts.Load(), "three failures are not more than three")
	require.Equal(t, []float64{1, 2, 3}, windowCounts(metrics.Take(t)))

	failAt(10*time.Minute+time.Second, 2) // the first three have left the window
	require.Zero(t, alerts.Load())
	require.Equal(t, []float64{1, 2}, windowCounts(metrics.Take(t)))

	failAt(5*time.Minute, 2) // 2 + 2 within ten minutes
	require.Equal(t, int64(1), alerts.Load())
	require.Equal(t, []float64{3, 4}, windowCounts(metrics.Take(t)))
}

// A provider's rate limit snoozes a job without using an attempt, but not forever in silence:
// once a job has waited longer than jobs.RateLimitAlertAfter, each further snooze counts as a
// failure (metric and alert).
func TestLongRateLimitingAlertsLikeFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	url, alerts := alertReceiver(t)
	metrics := &telemetrytest.Buffer{}
	w := newTicketWorker(func(context.Context, uuid.UUID, int) error {
		return jobs.RetryAfter(time.Minute, errors.New("hubspot: 429 daily limit"))
	})
	clock := jobstest.NewClock()
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second, Time: clock,
		AlertWebhookURL: url, Metrics: telemetry.NewMetrics(metrics, "support-push")}
	enqueueTickets(t, b, jobs.AlertThreshold+1)

	sum, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.AlertThreshold+1, sum.Snoozed)
	require.Zero(t, alerts.Load(), "a fresh rate limit is waited out quietly")
	require.EqualValues(t, -1, lastValue(metrics.Take(t), jobs.MetricSyncFailures))

	clock.Advance(jobs.RateLimitAlertAfter + time.Minute)
	sum, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Equal(t, jobs.AlertThreshold+1, sum.Snoozed, "still snoozed, attempts untouched")
	require.Equal(t, int64(1), alerts.Load(), "rate limited for over an hour: alerted like failures")
	require.Equal(t, []float64{1, 2, 3, 4}, windowCounts(metrics.Take(t)), "each snooze past the hour counts as a failure")
}

// Every alarm of template.yaml on a metric of the queue runs reads a metric the runs emit,
// under exactly its dimension set: failures in the sliding window, dead letters, queue age.
func TestQueueAlarmsReadWhatTheRunsEmit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	p, err := sam.Open(".")
	require.NoError(t, err)
	for _, q := range []struct {
		queue, function string
		alarms          int
	}{{jobs.QueueHelpdesk, "support-push", 3}, {jobs.QueueCRM, "crm-push", 3}, {jobs.QueueBilling, "billing-refresh", 1}} {
		metrics := &telemetrytest.Buffer{}
		clock := jobstest.NewClock()
		ws := river.NewWorkers()
		fail := func(context.Context) error { return jobs.Permanent(errors.New("401 unauthorized")) }
		river.AddWorker(ws, river.WorkFunc(func(ctx context.Context, _ *river.Job[jobs.HelpdeskTicketArgs]) error { return fail(ctx) }))
		river.AddWorker(ws, river.WorkFunc(func(ctx context.Context, _ *river.Job[jobs.CRMSyncArgs]) error { return fail(ctx) }))
		river.AddWorker(ws, river.WorkFunc(func(ctx context.Context, _ *river.Job[jobs.BillingRefreshArgs]) error { return fail(ctx) }))
		cfg := jobs.RunConfig{Queue: q.queue, Workers: ws, Budget: 5 * time.Second, Time: clock,
			Metrics: telemetry.NewMetrics(metrics, q.function)}
		require.NoError(t, db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
			switch q.queue {
			case jobs.QueueCRM:
				return b.inserter.EnqueueCRMSync(ctx, tx, b.tenantID, "evt_alarm", 0)
			case jobs.QueueBilling:
				return b.inserter.EnqueueBillingRefresh(ctx, tx, b.tenantID, "sub_alarm", time.Now())
			}
			return b.inserter.EnqueueHelpdeskTicket(ctx, tx, b.tenantID, uuid.New())
		}))
		_, err := jobs.Run(ctx, b.pool, cfg)
		require.NoError(t, err)
		lines := metrics.Lines(t)
		checked := 0
		for _, a := range p.Template.Alarms {
			runMetric := slices.Contains([]string{jobs.MetricSyncFailures, jobs.MetricSyncFailuresInWindow,
				jobs.MetricSyncDeadLettered, jobs.MetricQueueOldestWaiting}, a.MetricName)
			if a.Namespace != telemetry.Namespace || a.Dimensions["Function"].Value != q.function || !runMetric {
				continue // another emitter's alarm (the webhook's, billing's unmatched events)
			}
			if a.MetricName == billing.MetricOldestUnmatchedAge {
				continue // billing-refresh's own gauge, emitted before the queue run (shared/billing tests it)
			}
			dims := map[string]string{}
			for k, v := range a.Dimensions {
				dims[k] = v.Value
			}
			telemetrytest.RequireMetric(t, lines, a.Namespace, a.MetricName, dims)
			checked++
		}
		require.GreaterOrEqual(t, checked, q.alarms, "%s: the queue's alarms (failures, dead letters, queue age)", q.function)
	}
}

// The queue's age (its oldest waiting job) is emitted by every run, so an alarm sees a queue
// that stopped moving even while nothing fails.
func TestRunEmitsTheQueuesOldestWaitingJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	metrics := &telemetrytest.Buffer{}
	clock := jobstest.NewClock()
	w := newTicketWorker(func(context.Context, uuid.UUID, int) error { return errors.New("zendesk: 503") })
	cfg := jobs.RunConfig{Queue: jobs.QueueHelpdesk, Workers: w.workers(), Budget: 5 * time.Second, Time: clock,
		Metrics: telemetry.NewMetrics(metrics, "support-push")}
	_, err := jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.Zero(t, lastValue(metrics.Take(t), jobs.MetricQueueOldestWaiting), "an empty queue is zero seconds old")

	enqueueTickets(t, b, 1)
	clock.Advance(20 * time.Minute)
	_, err = jobs.Run(ctx, b.pool, cfg)
	require.NoError(t, err)
	require.GreaterOrEqual(t, lastValue(metrics.Take(t), jobs.MetricQueueOldestWaiting), (20 * time.Minute).Seconds())
}
