// Package nudge wakes a queue's pusher right after a request commits a job for it, so a
// payment reaches HubSpot (or a ticket Zendesk) in about a second instead of at the pusher's
// next scheduled minute.
//
// A nudge is an asynchronous Lambda invoke (InvocationType Event) of the pusher: it carries no
// data, because River is the record of what to push; the pusher works its queue as it does on
// its schedule, which stays as the safety net. It is sent after the request's transaction
// committed (the middleware sends it once the handler returns, so the job is visible to the
// worker it starts) and is best effort: a failed or slow nudge never fails the request, is
// bounded by a short timeout, and is logged once.
//
// Its cost to the request is bounded by coalescing: an instance sends at most one nudge per
// Window (and never two at once); requests inside the window skip it and pay nothing. No job
// of a skipped request waits for the schedule, because the pusher a nudge starts keeps
// polling its queue for the nudge's whole cover (Window plus the nudge's timeout, carried in
// the event: Linger), and it starts after the nudge was sent: every job committed before the
// cover ends is visible to one of its polls.
package nudge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a Nudger.
const (
	// DefaultTimeout bounds one nudge: an asynchronous invoke is answered (202) in tens of
	// milliseconds once Lambda has queued the event; past this the request stops waiting.
	DefaultTimeout = 100 * time.Millisecond
	// DefaultWindow is how long after a nudge an instance's requests skip theirs (the
	// pusher it started still polls). It bounds the share of requests that pay for a nudge
	// whatever Lambda's routing: N instances send at most N/DefaultWindow nudges a second, so
	// the webhook's 10 reserved instances at 50 payments a second nudge on at most 4 % of
	// them, and the p95 is a latency of requests that sent none.
	DefaultWindow = 5 * time.Second
	// MaxWindow bounds NUDGE_WINDOW: a pusher lingers for the window, within its budget.
	MaxWindow = 30 * time.Second
	// lingerMargin is added to a nudge's cover: a few of the pusher's polls (50 ms apart).
	lingerMargin = 250 * time.Millisecond
)

// DetailType is the detail-type of a nudge's event; the pusher's schedule sends
// "Scheduled Event".
const DetailType = "nudge"

// Detail is a nudge event's detail: how long after the nudge was sent requests of its
// instance relied on it (skipped theirs), so the pusher it starts polls at least that long.
type Detail struct {
	CoverMS int64 `json:"cover_ms"`
}

// Errors of the package.
var (
	// ErrNoFunction is a Nudger built without a target function.
	ErrNoFunction = errors.New("nudge: no target function")
	// ErrWindow is a NUDGE_WINDOW that is not a duration between 0 and MaxWindow.
	ErrWindow = errors.New("nudge: NUDGE_WINDOW must be a duration between 0s and 30s")
)

// Invoker is what a Nudger needs from Lambda: an asynchronous invoke (InvocationType Event)
// of function with payload. *LambdaClient is one.
type Invoker interface {
	InvokeEvent(ctx context.Context, function string, payload []byte) error
}

// Nudger invokes one pusher function asynchronously, at most once per window.
type Nudger struct {
	invoker  Invoker
	function string
	timeout  time.Duration
	window   time.Duration
	detach   bool
	now      func() time.Time
	logger   *slog.Logger
	payload  []byte
	sent     atomic.Int64
	failed   atomic.Int64
	skipped  atomic.Int64

	mu       sync.Mutex
	last     time.Time // when the window's nudge was sent (zero: none, or it failed)
	inFlight bool
}

// Options configure a Nudger; only Function is required.
type Options struct {
	// Function is the pusher's name or ARN (CRM_PUSH_FUNCTION, SUPPORT_PUSH_FUNCTION).
	Function string
	// Timeout bounds one nudge (DefaultTimeout).
	Timeout time.Duration
	// Window is how long after a nudge requests skip theirs (DefaultWindow); negative: every
	// request nudges.
	Window time.Duration
	// Detach sends the middleware's nudge from a goroutine after the response, never on the
	// request's time: for a process that outlives its requests (a net/http server). Under
	// Lambda it must stay false: the environment freezes once the handler returns.
	Detach bool
	// Now reads the clock (time.Now when nil); tests move it.
	Now func() time.Time
	// Logger receives one line per failed nudge (discarded when nil).
	Logger *slog.Logger
}

// New builds a Nudger that invokes through inv.
func New(inv Invoker, o Options) (*Nudger, error) {
	if o.Function == "" {
		return nil, ErrNoFunction
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	switch {
	case o.Window == 0:
		o.Window = DefaultWindow
	case o.Window < 0:
		o.Window = 0
	case o.Window > MaxWindow:
		return nil, ErrWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	payload, err := json.Marshal(map[string]any{
		"source": "portal-functions", "detail-type": DetailType,
		"detail": Detail{CoverMS: (o.Window + o.Timeout).Milliseconds()},
	})
	if err != nil {
		return nil, fmt.Errorf("nudge payload: %w", err)
	}
	return &Nudger{invoker: inv, function: o.Function, timeout: o.Timeout, window: o.Window, detach: o.Detach,
		now: o.Now, logger: o.Logger, payload: payload}, nil
}

// Payload is the event a nudge sends: EventBridge-shaped, so the pusher's handler (built for
// its schedule) takes it unchanged, with the cover in its detail.
func (n *Nudger) Payload() []byte { return n.payload }

// Linger is how long a pusher started by an event of detailType and detail keeps polling its
// queue after it started: the nudge's cover plus a few polls, at most MaxWindow plus that; 0
// for any other event (its schedule: it stops as soon as nothing is due).
func Linger(detailType string, detail json.RawMessage) time.Duration {
	if detailType != DetailType {
		return 0
	}
	var d Detail
	if json.Unmarshal(detail, &d) != nil || d.CoverMS <= 0 {
		return lingerMargin
	}
	return min(time.Duration(d.CoverMS)*time.Millisecond, MaxWindow+time.Minute) + lingerMargin
}

// FromEnv builds the Nudger of the function named by the variable fnVar (nil, nil when it is
// unset: no nudge, the schedule alone works the queue, as in tests and `make dev`).
// NUDGE_WINDOW sets its window (DefaultWindow; "0s": every request nudges). Outside Lambda
// (no AWS_LAMBDA_RUNTIME_API: a net/http server) its nudges are sent after the response.
func FromEnv(lookup func(string) (string, bool), fnVar string, httpClient *http.Client, logger *slog.Logger) (*Nudger, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	fn, ok := lookup(fnVar)
	if !ok || fn == "" {
		return nil, nil
	}
	o := Options{Function: fn, Logger: logger}
	if v, ok := lookup("NUDGE_WINDOW"); ok && v != "" {
		w, err := time.ParseDuration(v)
		if err != nil || w < 0 || w > MaxWindow {
			return nil, ErrWindow
		}
		o.Window = w
		if w == 0 {
			o.Window = -1
		}
	}
	if _, inLambda := lookup("AWS_LAMBDA_RUNTIME_API"); !inLambda {
		o.Detach = true
	}
	n, err := New(NewLambdaClient(lookup, httpClient), o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fnVar, err)
	}
	return n, nil
}

// Nudge invokes the pusher asynchronously now, whatever the window, waiting at most the
// Nudger's timeout. An error is logged here, once, and returned for the caller's information
// only.
func (n *Nudger) Nudge(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.timeout)
	defer cancel()
	if err := n.invoker.InvokeEvent(ctx, n.function, n.payload); err != nil {
		n.failed.Add(1)
		n.logger.WarnContext(ctx, "nudge failed; the pusher's schedule will push instead",
			"function", n.function, "error", err.Error())
		return fmt.Errorf("nudge %s: %w", n.function, err)
	}
	n.sent.Add(1)
	return nil
}

// Coalesced nudges unless a nudge of this Nudger is in flight or was sent less than the
// window ago (then it returns false at once: that nudge's pusher polls long enough to see
// the caller's job). A failed nudge opens no window, so the next request nudges again.
func (n *Nudger) Coalesced(ctx context.Context) (sent bool, err error) {
	n.mu.Lock()
	now := n.now()
	if n.inFlight || (!n.last.IsZero() && now.Sub(n.last) < n.window) {
		n.mu.Unlock()
		n.skipped.Add(1)
		return false, nil
	}
	n.inFlight, n.last = true, now
	n.mu.Unlock()

	err = n.Nudge(ctx)
	n.mu.Lock()
	n.inFlight = false
	if err != nil {
		n.last = time.Time{}
	}
	n.mu.Unlock()
	return err == nil, err
}

// Counts says how many nudges were sent, how many failed and how many requests skipped theirs
// inside a window, since the Nudger was built.
func (n *Nudger) Counts() (sent, failed, skipped int64) {
	return n.sent.Load(), n.failed.Load(), n.skipped.Load()
}

type markKey struct{}

// Mark records, in a request's context, that the request queued a job for queue; the
// middleware nudges after the handler when the request marked its Nudger's queue. Outside a
// nudging request it does nothing.
func Mark(ctx context.Context, queue string) {
	if p, ok := ctx.Value(markKey{}).(*marks); ok && p.queue == queue {
		p.marked.Store(true)
	}
}

type marks struct {
	queue  string
	marked atomic.Bool
}

// Middleware nudges n (Coalesced) after a request that marked queue (Mark) has been handled
// with a status below 400, that is after its transaction committed. A Detach Nudger nudges
// from a goroutine, after the response has been written. A nil Nudger passes requests through.
func Middleware(n *Nudger, queue string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if n == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m := &marks{queue: queue}
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), markKey{}, m)))
			if !m.marked.Load() || sw.status >= 400 {
				return
			}
			if n.detach {
				go func() { _, _ = n.Coalesced(context.WithoutCancel(r.Context())) }()
				return
			}
			_, _ = n.Coalesced(r.Context())
		})
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
