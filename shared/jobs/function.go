package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/riverqueue/river"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/nudge"
)

// NudgedIdleStop is how long a nudged run keeps polling an empty queue after its linger
// (RunConfig.IdleStop): under a steady stream of payments the running pusher keeps them, and
// no job waits for a fresh invocation's start.
const NudgedIdleStop = time.Second

// QueueFunction is a scheduled worker function: it works one queue with the workers its
// settings C describe. crm-push and support-push are both one, so Lambda and the dev server
// build every queue worker the same way.
type QueueFunction[C any] struct {
	// Name is the function's name (logs, metrics, alarms).
	Name string
	// Queue is the River queue it works.
	Queue string
	// Workers builds the queue's workers (provider clients from cfg, the pool from deps).
	Workers func(deps function.Deps, cfg C) (*river.Workers, error)
	// AlertWebhookURL returns where failure alerts go (a Slack-compatible webhook, optional).
	AlertWebhookURL func(cfg C) config.Secret
	// Measure, when set, runs at the start of every scheduled invocation, before the queue is
	// worked: gauges that an alarm watches are emitted once a schedule tick even when no job
	// is due. A failure is logged; the queue is worked anyway.
	Measure func(ctx context.Context, deps function.Deps) error
}

// RunConfig is one run of the queue: the Lambda handler runs it once per invocation,
// RunContinuously runs it back to back.
func (q QueueFunction[C]) RunConfig(deps function.Deps, cfg C) (RunConfig, error) {
	workers, err := q.Workers(deps, cfg)
	if err != nil {
		return RunConfig{}, fmt.Errorf("%s workers: %w", q.Name, err)
	}
	run := RunConfig{
		Queue:      q.Queue,
		Workers:    workers,
		Logger:     deps.Logger,
		Metrics:    deps.Metrics,
		HTTPClient: deps.HTTPClient,
	}
	if q.AlertWebhookURL != nil {
		run.AlertWebhookURL = q.AlertWebhookURL(cfg).Reveal()
	}
	return run, nil
}

// LoadRunConfig reads C from deps.Lookup and builds the run (the dev server's entry).
func (q QueueFunction[C]) LoadRunConfig(deps function.Deps) (RunConfig, error) {
	var cfg C
	if err := config.LoadFrom(deps.Lookup, &cfg); err != nil {
		return RunConfig{}, fmt.Errorf("%s settings: %w", q.Name, err)
	}
	return q.RunConfig(deps, cfg)
}

// Function is the Lambda form: every scheduled event (EventBridge) works the queue until
// nothing is due or the invocation's time is nearly up, and answers what it did. A nudge's
// event (package nudge) keeps it polling for the nudge's cover first, then until nothing has
// been due for NudgedIdleStop.
func (q QueueFunction[C]) Function() function.Invoked[C, events.EventBridgeEvent, Summary] {
	return function.Invoked[C, events.EventBridgeEvent, Summary]{
		Name: q.Name,
		Build: func(_ context.Context, deps function.Deps, cfg C) (func(context.Context, events.EventBridgeEvent) (Summary, error), error) {
			run, err := q.RunConfig(deps, cfg)
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context, ev events.EventBridgeEvent) (Summary, error) {
				run := run
				// A run a nudge started polls for the nudge's cover, so the jobs of the
				// requests that skipped theirs inside it do not wait for the schedule.
				run.Linger = nudge.Linger(ev.DetailType, ev.Detail)
				if run.Linger > 0 {
					run.IdleStop = NudgedIdleStop
				}
				if q.Measure != nil {
					if err := q.Measure(ctx, deps); err != nil && deps.Logger != nil {
						deps.Logger.ErrorContext(ctx, "measure before the queue run", "function", q.Name, "error", err.Error())
					}
				}
				return Run(ctx, deps.Pool, run)
			}, nil
		},
	}
}
