package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/jobs/jobstest"
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
	require.Equal(t, []string{"SyncFailures support-push/helpdesk"}, metricNames(metrics.Take(t)),
		"one metric per failed attempt, with the dimensions template.yaml's alarm uses")

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
	require.Equal(t, []string{"SyncFailures support-push/helpdesk", "SyncDeadLettered support-push/helpdesk"}, metricNames(metrics.Take(t)))

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
