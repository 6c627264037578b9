package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
)

// Alerting defaults: an integration alerts at most once per AlertWindow, when it dead-letters a
// job or fails AlertThreshold times within the window (one blip does not page anyone).
const (
	AlertWindow    = 10 * time.Minute
	AlertThreshold = 3
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
	)
	switch {
	case workErr == nil:
		outcome = OutcomeSucceeded
	case errors.As(workErr, &permanent):
		outcome, riverErr = OutcomeDeadLettered, river.JobCancel(workErr)
	case errors.As(workErr, &retry):
		outcome, riverErr = OutcomeSnoozed, river.JobSnooze(retry.Wait)
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
	if outcome == OutcomeFailed || outcome == OutcomeDeadLettered {
		o.alerts.failure(ctx, integration, outcome == OutcomeDeadLettered,
			fmt.Sprintf("%s sync %s for %s (tenant %s, attempt %d/%d): %s",
				integration, strings.ReplaceAll(string(outcome), "_", "-"), subject, tenantID, job.Attempt, job.MaxAttempts, lastError), now)
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
// error; a failure keeps the last success, so the portal can say "last synced 2 h ago".
func (o *observer) upsertStatus(ctx context.Context, integration, subject string, tenantID uuid.UUID, state, lastError string, attempts int, now time.Time) error {
	_, err := o.pool.Exec(ctx, `
		insert into private.sync_status
			(integration, subject, tenant_id, state, last_success_at, last_attempt_at, last_error, attempts, updated_at)
		values ($1, $2, $3, $4, case when $4 = 'synced' then $7::timestamptz end, $7, nullif($5, ''), $6, $7)
		on conflict (integration, subject) do update set
			state = excluded.state,
			last_success_at = coalesce(excluded.last_success_at, private.sync_status.last_success_at),
			last_attempt_at = excluded.last_attempt_at,
			last_error = excluded.last_error,
			attempts = excluded.attempts,
			updated_at = excluded.updated_at`,
		integration, subject, tenantID, state, lastError, attempts, now)
	if err != nil {
		return fmt.Errorf("upsert sync status: %w", err)
	}
	return nil
}

// alerter posts a Slack-compatible {"text": ...} message to a webhook, at most once per window
// per integration across every container: the window is claimed in private.sync_alerts.
type alerter struct {
	pool   *pgxpool.Pool
	url    string
	client *http.Client
	logger *slog.Logger
	window time.Duration
}

func (a *alerter) failure(ctx context.Context, integration string, deadLetter bool, text string, now time.Time) {
	if a == nil || a.pool == nil {
		return
	}
	// Count the failure in the current window and claim the alert, under the row's lock, so two
	// containers failing at once cannot both send.
	var send bool
	err := db.Tx(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into private.sync_alerts (integration, window_started_at, failures)
			values ($1, $2, 0) on conflict (integration) do nothing`, integration, now); err != nil {
			return fmt.Errorf("create alert row: %w", err)
		}
		var (
			windowStart time.Time
			failures    int
			lastSent    *time.Time
		)
		if err := tx.QueryRow(ctx, `select window_started_at, failures, last_sent_at from private.sync_alerts
			where integration = $1 for update`, integration).Scan(&windowStart, &failures, &lastSent); err != nil {
			return fmt.Errorf("lock alert row: %w", err)
		}
		if !now.Before(windowStart.Add(a.window)) {
			windowStart, failures = now, 0
		}
		failures++
		send = (deadLetter || failures >= AlertThreshold) && (lastSent == nil || !now.Before(lastSent.Add(a.window)))
		if send {
			lastSent = &now
		}
		if _, err := tx.Exec(ctx, `update private.sync_alerts set window_started_at = $2, failures = $3,
			last_sent_at = $4, last_message = case when $5 then $6 else last_message end where integration = $1`,
			integration, windowStart, failures, lastSent, send, text); err != nil {
			return fmt.Errorf("update alert row: %w", err)
		}
		return nil
	})
	if err != nil {
		a.logger.ErrorContext(ctx, "count failure for alerting", "integration", integration, "error", err.Error())
		return
	}
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
