// Package nudge wakes a queue's pusher right after a request commits a job for it, so a
// payment reaches HubSpot (or a ticket Zendesk) in about a second instead of at the pusher's
// next scheduled minute.
//
// A nudge is an asynchronous Lambda invoke (InvocationType Event) of the pusher with an
// empty event: it carries no data, because River is the record of what to push; the pusher
// works its queue as it does on its schedule, which stays as the safety net. It is sent after
// the request's transaction committed (the middleware sends it once the handler returns, so
// the job is visible to the worker it starts) and is best effort: a failed or slow nudge never
// fails the request, is bounded by a short timeout, and is logged once.
package nudge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// DefaultTimeout bounds one nudge: an asynchronous invoke is answered (202) in a few
// milliseconds once Lambda has queued the event; past this the request stops waiting.
const DefaultTimeout = 100 * time.Millisecond

// Payload is the event a nudged pusher receives: an EventBridge-shaped event, so the pusher's
// handler (built for its schedule) takes it unchanged.
var Payload = []byte(`{"source":"portal-functions","detail-type":"nudge","detail":{}}`)

// ErrNoFunction is a Nudger built without a target function.
var ErrNoFunction = errors.New("nudge: no target function")

// Invoker is what a Nudger needs from Lambda: *lambda.Client is one.
type Invoker interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, opts ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

var _ Invoker = (*lambda.Client)(nil)

// Nudger invokes one pusher function asynchronously.
type Nudger struct {
	invoker  Invoker
	function string
	timeout  time.Duration
	logger   *slog.Logger
	sent     atomic.Int64
	failed   atomic.Int64
}

// Options configure a Nudger; only Function is required.
type Options struct {
	// Function is the pusher's name or ARN (CRM_PUSH_FUNCTION, SUPPORT_PUSH_FUNCTION).
	Function string
	// Timeout bounds one nudge (DefaultTimeout).
	Timeout time.Duration
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
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Nudger{invoker: inv, function: o.Function, timeout: o.Timeout, logger: o.Logger}, nil
}

// NewLambdaClient builds the Lambda client from the function's own environment, as Lambda sets
// it: AWS_REGION and the execution role's temporary credentials (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). AWS_ENDPOINT_URL_LAMBDA (the SDKs' standard
// override) points it at a local stand-in. No retries: a nudge that fails is not worth a
// second try on a request's time (the schedule is the safety net).
func NewLambdaClient(lookup func(string) (string, bool), httpClient *http.Client) *lambda.Client {
	get := func(k string) string {
		v, _ := lookup(k)
		return v
	}
	o := lambda.Options{
		Region: get("AWS_REGION"),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{
				AccessKeyID: get("AWS_ACCESS_KEY_ID"), SecretAccessKey: get("AWS_SECRET_ACCESS_KEY"),
				SessionToken: get("AWS_SESSION_TOKEN"), Source: "environment",
			}, nil
		}),
		RetryMaxAttempts: 1,
	}
	if httpClient != nil {
		o.HTTPClient = httpClient
	}
	if ep := get("AWS_ENDPOINT_URL_LAMBDA"); ep != "" {
		o.BaseEndpoint = aws.String(ep)
	}
	return lambda.New(o)
}

// FromEnv builds the Nudger of the function named by the variable fnVar (nil, nil when it is
// unset: no nudge, the schedule alone works the queue, as in tests and `make dev`).
func FromEnv(lookup func(string) (string, bool), fnVar string, httpClient *http.Client, logger *slog.Logger) (*Nudger, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	fn, ok := lookup(fnVar)
	if !ok || fn == "" {
		return nil, nil
	}
	n, err := New(NewLambdaClient(lookup, httpClient), Options{Function: fn, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fnVar, err)
	}
	return n, nil
}

// Nudge invokes the pusher asynchronously, waiting at most the Nudger's timeout. An error is
// logged here, once, and returned for the caller's information only.
func (n *Nudger) Nudge(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.timeout)
	defer cancel()
	_, err := n.invoker.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(n.function),
		InvocationType: types.InvocationTypeEvent,
		Payload:        Payload,
	})
	if err != nil {
		n.failed.Add(1)
		n.logger.WarnContext(ctx, "nudge failed; the pusher's schedule will push instead",
			"function", n.function, "error", err.Error())
		return fmt.Errorf("nudge %s: %w", n.function, err)
	}
	n.sent.Add(1)
	return nil
}

// Counts says how many nudges were sent and how many failed since the Nudger was built.
func (n *Nudger) Counts() (sent, failed int64) { return n.sent.Load(), n.failed.Load() }

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

// Middleware nudges n once after a request that marked queue (Mark) has been handled with a
// status below 400, that is after its transaction committed. A nil Nudger passes requests
// through.
func Middleware(n *Nudger, queue string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if n == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m := &marks{queue: queue}
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), markKey{}, m)))
			if m.marked.Load() && sw.status < 400 {
				_ = n.Nudge(r.Context())
			}
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
