package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stripe/stripe-go/v76"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

// DefaultRateLimitWait is how long a refresh waits after a 429 that names no Retry-After.
const DefaultRateLimitWait = 2 * time.Second

// SubscriptionReader reads one subscription from Stripe's API as JSON (StripeClient).
type SubscriptionReader interface {
	GetSubscription(ctx context.Context, id string) ([]byte, error)
}

// RefreshWorker works billing_refresh jobs: it reads the subscription from Stripe and applies
// it to the tenant's projection as a change stamped with the second it was read, so an event
// created before that second loses to it and one created after wins. A read whose second
// ties with an applied event that says otherwise is read again (the event may be newer).
type RefreshWorker struct {
	river.WorkerDefaults[jobs.BillingRefreshArgs]
	db     db.Beginner
	stripe SubscriptionReader
	jobs   Enqueuer
	now    func() time.Time
}

var _ river.Worker[jobs.BillingRefreshArgs] = (*RefreshWorker)(nil)

// NewRefreshWorker builds the worker on a pool, a Stripe reader and the job inserter (for
// the CRM push a refresh can cause). now is the clock the read is stamped with (time.Now when
// nil).
func NewRefreshWorker(b db.Beginner, s SubscriptionReader, q Enqueuer, now func() time.Time) *RefreshWorker {
	if now == nil {
		now = time.Now
	}
	return &RefreshWorker{db: b, stripe: s, jobs: q, now: now}
}

// Work reads, then applies under the account's lock and completes the job in the same
// transaction: a tie noticed after this commit finds no running job in the way of its own.
func (w *RefreshWorker) Work(ctx context.Context, job *river.Job[jobs.BillingRefreshArgs]) error {
	args := job.Args
	// The stamp is taken before the read: everything Stripe's answer reflects happened by then
	// or later in the same second, which the tie check catches.
	read := w.now().UTC().Truncate(time.Second)
	raw, err := w.stripe.GetSubscription(ctx, args.SubscriptionID)
	if err != nil {
		return refreshError(err)
	}
	var s subscription
	if err := json.Unmarshal(raw, &s); err != nil || s.Object != "subscription" || s.ID != args.SubscriptionID {
		return jobs.Permanent(fmt.Errorf("refresh %s: Stripe answered something else than the subscription: %w", args.SubscriptionID, errors.Join(err, ErrMalformedEvent)))
	}
	source := "refresh:" + strconv.FormatInt(job.ID, 10)
	change := subscriptionChange(Stamp{Created: read, EventID: source}, s)
	return db.Tx(ctx, w.db, func(tx pgx.Tx) error {
		before, err := lockAccount(ctx, tx, args.TenantID)
		if err != nil {
			return err
		}
		if before.Tied(change) {
			return jobs.RetryAfter(time.Second, fmt.Errorf("refresh %s: %w", args.SubscriptionID, ErrRefreshTied))
		}
		if _, err := project(ctx, tx, w.jobs, before, change, source, &Result{}, nil); err != nil {
			return err
		}
		if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
			return fmt.Errorf("complete billing refresh job: %w", err)
		}
		return nil
	})
}

// refreshError maps a failed read: a 429 waits for Stripe's Retry-After without using up an
// attempt; an unknown subscription or a refused key is permanent; anything else is retried.
func refreshError(err error) error {
	var se *stripe.Error
	if !errors.As(err, &se) {
		return err
	}
	up := jobs.Upstream(se.HTTPStatusCode, string(se.Code), err)
	switch se.HTTPStatusCode {
	case http.StatusTooManyRequests:
		wait := DefaultRateLimitWait
		if se.LastResponse != nil {
			if d, ok := retryAfter(se.LastResponse.Header.Get("Retry-After")); ok {
				wait = d
			}
		}
		return jobs.RetryAfter(wait, up)
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
		return jobs.Permanent(up)
	}
	return up
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t), true
	}
	return 0, false
}

// RefreshConfig is billing-refresh's environment.
type RefreshConfig struct {
	// StripeAPIKey reads subscriptions (a restricted key with Subscriptions: read is enough).
	StripeAPIKey config.Secret `env:"STRIPE_API_KEY" required:"true"`
	// StripeAPIBase points the client elsewhere than api.stripe.com (a stand-in locally).
	StripeAPIBase string `env:"STRIPE_API_BASE" default:"https://api.stripe.com"`
	// AlertWebhookURL receives failure alerts (Slack incoming webhook); optional.
	AlertWebhookURL config.Secret `env:"ALERT_WEBHOOK_URL"`
}

// NewRefreshWorkers builds billing-refresh's workers (Lambda and the dev server alike).
func NewRefreshWorkers(deps function.Deps, cfg RefreshConfig) (*river.Workers, error) {
	return refreshWorkers(deps.Pool, NewStripeClient(cfg.StripeAPIKey, cfg.StripeAPIBase, deps.HTTPClient))
}

func refreshWorkers(pool *pgxpool.Pool, s SubscriptionReader) (*river.Workers, error) {
	inserter, err := jobs.NewInserter(pool)
	if err != nil {
		return nil, fmt.Errorf("job inserter: %w", err)
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, NewRefreshWorker(pool, s, inserter, nil)); err != nil {
		return nil, fmt.Errorf("register billing refresh worker: %w", err)
	}
	return workers, nil
}

// Refresh is billing-refresh's queue: the billing queue worked by NewRefreshWorkers. Each
// scheduled run also measures the unmatched inbox (MeasureUnmatched).
var Refresh = jobs.QueueFunction[RefreshConfig]{
	Name:            "billing-refresh",
	Queue:           jobs.QueueBilling,
	Workers:         NewRefreshWorkers,
	AlertWebhookURL: func(cfg RefreshConfig) config.Secret { return cfg.AlertWebhookURL },
	Measure: func(ctx context.Context, deps function.Deps) error {
		return MeasureUnmatched(ctx, deps.Pool, deps.Metrics)
	},
}

// Metrics of the unmatched inbox, emitted by billing-refresh once a minute with the dimension
// Function only; template.yaml's UnmatchedEventsAlarm watches MetricOldestUnmatchedAge.
const (
	// MetricUnmatchedEvents is how many stored events match no tenant yet.
	MetricUnmatchedEvents = "UnmatchedEvents"
	// MetricOldestUnmatchedAge is how long (seconds) the oldest of them has waited; 0 when none.
	MetricOldestUnmatchedAge = "OldestUnmatchedEventAgeSeconds"
)

// UnmatchedWindow bounds which unmatched events are measured: a sale outside the portal (a
// Payment Link no tenant bought through) stays unmatched for good, and stops holding the
// alarm after a week; `reconcile health` and reconcile still list it.
const UnmatchedWindow = 7 * 24 * time.Hour

// MeasureUnmatched emits MetricUnmatchedEvents and MetricOldestUnmatchedAge for the events
// received in the last UnmatchedWindow (one query on the unmatched partial index).
func MeasureUnmatched(ctx context.Context, q db.Querier, m Counter) error {
	var (
		n   int
		age float64
	)
	err := q.QueryRow(ctx, `
		select count(*), coalesce(extract(epoch from now() - min(received_at)), 0)::float8
		from private.stripe_events
		where outcome = 'unmatched' and received_at > now() - make_interval(secs => $1)`, UnmatchedWindow.Seconds()).Scan(&n, &age)
	if err != nil {
		return fmt.Errorf("measure unmatched events: %w", db.Classify(err))
	}
	m.Count(ctx, MetricUnmatchedEvents, float64(n), nil)
	m.Count(ctx, MetricOldestUnmatchedAge, age, nil)
	return nil
}

// RefreshFunction is billing-refresh: on its schedule (EventBridge, every minute) it reads the
// subscriptions whose same-second events could not be ordered from Stripe and applies them.
var RefreshFunction = Refresh.Function()
