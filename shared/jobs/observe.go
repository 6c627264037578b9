package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/telemetry"
)

// Metric names (CloudWatch EMF, dimension Integration); template.yaml's alarms use them.
const (
	MetricSyncSuccess      = "SyncSuccess"
	MetricSyncFailures     = "SyncFailures"
	MetricSyncDeadLettered = "SyncDeadLettered"
	MetricSyncRateLimited  = "SyncRateLimited"
	// MetricSyncFailuresInWindow is, at each failure, how many failures the integration had in
	// the last AlertWindow (sliding): the failures alarm reads its Maximum against
	// AlertThreshold, so the alarm and the in-app alert apply the same rule to the same count.
	MetricSyncFailuresInWindow = "SyncFailuresInWindow"
	// MetricQueueOldestWaiting is, at the end of every run, the age in seconds of the queue's
	// oldest job still waiting to be done (0 when none): the queue-age alarm reads it.
	MetricQueueOldestWaiting = "QueueOldestWaitingSeconds"
)

// Alerting: an integration alerts at most once per AlertWindow, when it dead-letters a job or
// has more than AlertThreshold failures within the last AlertWindow (one blip does not page
// anyone). A job still rate-limited RateLimitAlertAfter after it was queued counts each further
// snooze as a failure, so a daily limit cannot retry forever in silence.
const (
	AlertWindow         = 10 * time.Minute
	AlertThreshold      = 3
	RateLimitAlertAfter = time.Hour
	// alertKeep bounds the failure times kept per integration (the count saturates there).
	alertKeep = 100
)

// UpstreamError carries what the provider answered, so the failure log line can say it.
type UpstreamError struct {
	// Status is the provider's HTTP status (0: no answer).
	Status int
	// Class is the provider's error category (VALIDATION_ERROR, RATE_LIMIT, ...), if any.
	Class string
	Err   error
}

func (e *UpstreamError) Error() string { return e.Err.Error() }
func (e *UpstreamError) Unwrap() error { return e.Err }

// Upstream annotates err with the provider's status and category for logs and sync status.
func Upstream(status int, class string, err error) error {
	return &UpstreamError{Status: status, Class: class, Err: err}
}

// Outcome is what became of one attempt of a job.
type Outcome string

// Outcomes, as logged and counted in Summary.
const (
	OutcomeSucceeded    Outcome = "succeeded"
	OutcomeFailed       Outcome = "failed"        // will be retried with backoff
	OutcomeDeadLettered Outcome = "dead_lettered" // cancelled or out of attempts
	OutcomeSnoozed      Outcome = "snoozed"       // rate limited, or interrupted by a stop
)

// observer is the worker middleware of every River client of this package: it turns the
// worker's error into River's decision (cancel, snooze, retry) and records the outcome in
// private.sync_status, the log, the metrics, the alert channel and the run's Summary.
type observer struct {
	river.MiddlewareDefaults
	pool     *pgxpool.Pool
	logger   *slog.Logger
	metrics  *telemetry.Metrics
	alerts   *alerter
	now      func() time.Time
	stopping *atomic.Bool
	summary  *counters
}

var _ rivertype.WorkerMiddleware = (*observer)(nil)

type counters struct {
	worked, succeeded, failed, discarded, snoozed atomic.Int64
}

func (c *counters) summary() Summary {
	return Summary{
		Worked: int(c.worked.Load()), Succeeded: int(c.succeeded.Load()), Failed: int(c.failed.Load()),
		Discarded: int(c.discarded.Load()), Snoozed: int(c.snoozed.Load()),
	}
}

// jobSubject reads the tenant and subject of a job from its args.
func jobSubject(job *rivertype.JobRow) (uuid.UUID, string) {
	return subjectOf(job.Kind, job.EncodedArgs)
}

func subjectOf(kind string, encodedArgs []byte) (tenantID uuid.UUID, subject string) {
	var args struct {
		TenantID uuid.UUID `json:"tenant_id"`
		TicketID uuid.UUID `json:"ticket_id"`
	}
	_ = json.Unmarshal(encodedArgs, &args)
	switch kind {
	case KindHelpdeskTicket:
		return args.TenantID, TicketSubject(args.TicketID)
	case KindBillingRefresh:
		var refresh BillingRefreshArgs
		_ = json.Unmarshal(encodedArgs, &refresh)
		return args.TenantID, "subscription:" + refresh.SubscriptionID
	}
	return args.TenantID, CRMSubject(args.TenantID)
}

// Work implements rivertype.WorkerMiddleware.
func (o *observer) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = o.finish(ctx, job, fmt.Errorf("panic in %s worker: %v", job.Kind, r))
		}
	}()
	return o.finish(ctx, job, doInner(ctx))
}

// finish decides and records the outcome of one attempt and returns River's instruction.
func (o *observer) finish(ctx context.Context, job *rivertype.JobRow, workErr error) error {
	o.summary.worked.Add(1)
	var (
		outcome   Outcome
		riverErr  error
		permanent *PermanentError
		retry     *RetryAfterError
		again     *AgainError
	)
	switch {
	case workErr == nil:
		outcome = OutcomeSucceeded
	case errors.As(workErr, &permanent):
		outcome, riverErr = OutcomeDeadLettered, river.JobCancel(workErr)
	case errors.As(workErr, &retry):
		outcome, riverErr = OutcomeSnoozed, river.JobSnooze(retry.Wait)
	case errors.As(workErr, &again):
		outcome, riverErr = OutcomeSnoozed, river.JobSnooze(0)
	case o.stopping.Load() && (errors.Is(workErr, context.Canceled) || ctx.Err() != nil):
		// Interrupted by the end of the run, not a failure of the push: run it again at once
		// next time, without using up an attempt.
		outcome, riverErr = OutcomeSnoozed, river.JobSnooze(0)
	case job.Attempt >= job.MaxAttempts:
		outcome, riverErr = OutcomeDeadLettered, workErr
	default:
		outcome, riverErr = OutcomeFailed, workErr
	}

	// Record with a context of its own: the job's may be the one that was just cancelled.
	recCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	o.record(recCtx, job, outcome, workErr)
	return riverErr
}

func (o *observer) record(ctx context.Context, job *rivertype.JobRow, outcome Outcome, workErr error) {
	integration := job.Queue
	tenantID, subject := jobSubject(job)
	now := o.now()
	dims := map[string]string{"Integration": integration}

	var state, lastError string
	rateLimitedTooLong := false
	switch outcome {
	case OutcomeSucceeded:
		o.summary.succeeded.Add(1)
		state = "synced"
		o.metrics.Count(ctx, MetricSyncSuccess, 1, dims)
	case OutcomeSnoozed:
		o.summary.snoozed.Add(1)
		state = "retrying"
		if errors.Is(workErr, context.Canceled) || !isRateLimit(workErr) {
			state = "" // interrupted: leave the status as it was
		} else {
			lastError = workErr.Error()
			o.metrics.Count(ctx, MetricSyncRateLimited, 1, dims)
			if waited := now.Sub(job.CreatedAt); waited > RateLimitAlertAfter {
				rateLimitedTooLong = true
				lastError = fmt.Sprintf("rate limited for %s: %s", waited.Round(time.Minute), lastError)
				o.metrics.Count(ctx, MetricSyncFailures, 1, dims)
			}
		}
	case OutcomeFailed:
		o.summary.failed.Add(1)
		state, lastError = "retrying", workErr.Error()
		o.metrics.Count(ctx, MetricSyncFailures, 1, dims)
	case OutcomeDeadLettered:
		o.summary.discarded.Add(1)
		state, lastError = "failed", workErr.Error()
		o.metrics.Count(ctx, MetricSyncFailures, 1, dims)
		o.metrics.Count(ctx, MetricSyncDeadLettered, 1, dims)
	}

	if workErr != nil {
		var up *UpstreamError
		status, class := 0, errorClass(outcome, workErr)
		if errors.As(workErr, &up) {
			status = up.Status
			if up.Class != "" {
				class += ":" + up.Class
			}
		}
		level := slog.LevelWarn
		msg := "sync attempt failed"
		switch outcome {
		case OutcomeDeadLettered:
			level, msg = slog.LevelError, "sync dead-lettered"
		case OutcomeSnoozed:
			level, msg = slog.LevelInfo, "sync postponed"
		}
		o.logger.LogAttrs(ctx, level, msg,
			slog.String("integration", integration), slog.String("job_kind", job.Kind),
			slog.Int64("job_id", job.ID), slog.String("subject", subject),
			slog.String("tenant_id", tenantID.String()), slog.Int("attempt", job.Attempt),
			slog.Int("max_attempts", job.MaxAttempts), slog.Int("upstream_status", status),
			slog.String("error_class", class), slog.String("error", workErr.Error()))
	}

	if state != "" && tenantID != uuid.Nil && integration != QueueBilling {
		if err := o.upsertStatus(ctx, integration, subject, tenantID, state, lastError, job.Attempt, now); err != nil {
			o.logger.ErrorContext(ctx, "record sync status failed", "integration", integration, "subject", subject, "error", err.Error())
		}
	}
	if outcome == OutcomeFailed || outcome == OutcomeDeadLettered || rateLimitedTooLong {
		what := strings.ReplaceAll(string(outcome), "_", "-")
		if rateLimitedTooLong {
			what = "still rate-limited"
		}
		inWindow, ok := o.alerts.failure(ctx, integration, outcome == OutcomeDeadLettered,
			fmt.Sprintf("%s sync %s for %s (tenant %s, attempt %d/%d): %s",
				integration, what, subject, tenantID, job.Attempt, job.MaxAttempts, lastError), now)
		if ok {
			o.metrics.Count(ctx, MetricSyncFailuresInWindow, float64(inWindow), dims)
		}
	}
}

func isRateLimit(err error) bool {
	var retry *RetryAfterError
	return errors.As(err, &retry)
}

func errorClass(outcome Outcome, err error) string {
	var permanent *PermanentError
	switch {
	case errors.As(err, &permanent):
		return "permanent"
	case isRateLimit(err):
		return "rate_limited"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case outcome == OutcomeDeadLettered:
		return "exhausted"
	default:
		return "retryable"
	}
}

// upsertStatus writes the subject's sync status. synced stamps last_success_at and clears the
// error; a failure keeps the last success, so the portal can say "last synced 2 h ago". The
// times only move forward: two workers of one subject (a tenant's CRM pushes) may finish out
// of order, and "last synced" going back would be wrong (and would leave the kept summary,
// private.sync_summary, disagreeing with a recount).
func (o *observer) upsertStatus(ctx context.Context, integration, subject string, tenantID uuid.UUID, state, lastError string, attempts int, now time.Time) error {
	// Its commit does not wait for the WAL flush: River commits the job's new state after
	// this (completed, retryable, snoozed or discarded), synchronously, and that flush carries
	// this record too (WAL is flushed in order); a crash that loses it loses the job's state
	// as well, so the attempt runs and is recorded again. One statement, whose plan Postgres
	// keeps (private.sync_status_record sets synchronous_commit for its own transaction).
	if _, err := o.pool.Exec(ctx, `select private.sync_status_record($1, $2, $3, $4, $5, $6, $7)`,
		integration, subject, tenantID, state, lastError, attempts, now); err != nil {
		return fmt.Errorf("upsert sync status: %w", err)
	}
	return nil
}

// alerter posts a Slack-compatible {"text": ...} message to a webhook, at most once per window
// per integration across every container. The recent failure times and the last alert are
// kept in private.sync_alerts, under the row's lock, so every container counts the same
// sliding window.
type alerter struct {
	pool   *pgxpool.Pool
	url    string
	client *http.Client
	logger *slog.Logger
	window time.Duration
}

// failure counts one failure of integration at now, alerts if the rule says so, and returns
// how many failures the integration had in the window ending now (ok false if it could not
// count).
func (a *alerter) failure(ctx context.Context, integration string, deadLetter bool, text string, now time.Time) (inWindow int, ok bool) {
	if a == nil || a.pool == nil {
		return 0, false
	}
	// Count the failure and claim the alert under the row's lock, so two containers failing
	// at once cannot both send.
	var send bool
	err := db.Tx(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into private.sync_alerts (integration) values ($1)
			on conflict (integration) do nothing`, integration); err != nil {
			return fmt.Errorf("create alert row: %w", err)
		}
		var (
			recent   []time.Time
			lastSent *time.Time
		)
		if err := tx.QueryRow(ctx, `select recent_failures, last_sent_at from private.sync_alerts
			where integration = $1 for update`, integration).Scan(&recent, &lastSent); err != nil {
			return fmt.Errorf("lock alert row: %w", err)
		}
		recent = append(slices.DeleteFunc(recent, func(t time.Time) bool { return !t.After(now.Add(-a.window)) }), now)
		if len(recent) > alertKeep {
			recent = recent[len(recent)-alertKeep:]
		}
		inWindow = len(recent)
		send = (deadLetter || inWindow > AlertThreshold) && (lastSent == nil || !now.Before(lastSent.Add(a.window)))
		if send {
			lastSent = &now
		}
		if _, err := tx.Exec(ctx, `update private.sync_alerts set recent_failures = $2,
			last_sent_at = $3, last_message = case when $4 then $5 else last_message end where integration = $1`,
			integration, recent, lastSent, send, text); err != nil {
			return fmt.Errorf("update alert row: %w", err)
		}
		return nil
	})
	if err != nil {
		a.logger.ErrorContext(ctx, "count failure for alerting", "integration", integration, "error", err.Error())
		return 0, false
	}
	a.send(ctx, send, integration, text)
	return inWindow, true
}

// send logs the alert and posts it to the webhook, when there is one to send.
func (a *alerter) send(ctx context.Context, send bool, integration, text string) {
	if !send {
		return
	}
	a.logger.ErrorContext(ctx, "sync alert", "integration", integration, "alert", text)
	if a.url == "" {
		return
	}
	body, _ := json.Marshal(map[string]string{"text": ":rotating_light: portal-functions: " + text})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		a.logger.ErrorContext(ctx, "alert webhook", "error", err.Error())
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		a.logger.ErrorContext(ctx, "alert webhook", "error", err.Error())
		return
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		a.logger.ErrorContext(ctx, "alert webhook", "status", resp.StatusCode)
	}
}
