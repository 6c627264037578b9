// Package web is the request skeleton every HTTP function shares: one http.Handler per function,
// served by Lambda through the API Gateway HTTP API adapter (lambda.go), by the dev server and
// by httptest alike, wrapped in the same middleware (request id, one log line per request,
// panic recovery, body limit, security and cache headers) and answering errors in one place.
package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/problem"
)

// HeaderRequestID carries the request id in and out.
const HeaderRequestID = "X-Request-Id"

// DefaultMaxBody is the body limit when Options.MaxBody is zero (64 KiB: every portal payload
// is far smaller; Stripe events are well under it).
const DefaultMaxBody = 64 << 10

// Options configure Wrap.
type Options struct {
	// Logger receives one line per request (and the cause of every 5xx).
	Logger *slog.Logger
	// MaxBody bounds request bodies (DefaultMaxBody when zero).
	MaxBody int64
	// Limit bounds the requests running at once; the excess is answered 503 with
	// Retry-After before its handler runs. Nil: no bound.
	Limit *Limiter
}

type ctxKey int

// stateKey holds the request's *requestState: one context value for the id, the logger and
// the log line's attributes (each context value is an allocation and a lookup per use).
const stateKey ctxKey = iota

// requestState is what the middleware keeps for one request.
type requestState struct {
	id   string
	base *slog.Logger

	mu    sync.Mutex
	log   *slog.Logger // base with the request id, made when first asked for
	attrs []slog.Attr  // the request line's attributes
}

func (st *requestState) logger() *slog.Logger {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.log == nil {
		st.log = st.base.With("request_id", st.id)
	}
	return st.log
}

// RequestID returns the request's id ("" outside a request).
func RequestID(ctx context.Context) string {
	if st, ok := ctx.Value(stateKey).(*requestState); ok {
		return st.id
	}
	return ""
}

// Logger returns the request's logger, carrying its request id (slog.Default outside a request).
func Logger(ctx context.Context) *slog.Logger {
	if st, ok := ctx.Value(stateKey).(*requestState); ok {
		return st.logger()
	}
	return slog.Default()
}

// AddLogAttrs adds attributes (tenant id, user hash, event type ...) to the request's log line.
func AddLogAttrs(ctx context.Context, attrs ...slog.Attr) {
	if st, ok := ctx.Value(stateKey).(*requestState); ok {
		st.mu.Lock()
		st.attrs = append(st.attrs, attrs...)
		st.mu.Unlock()
	}
}

// Wrap puts h behind the standard middleware. Order, outermost first: request id, log line,
// panic recovery, headers, concurrency limit, body limit.
func Wrap(next http.Handler, o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := requestIDFor(r)
		st := &requestState{id: id, base: o.Logger, attrs: make([]slog.Attr, 0, 12)}
		r = r.WithContext(context.WithValue(r.Context(), stateKey, st))

		rec := &statusRecorder{ResponseWriter: w}
		hdr := w.Header()
		hdr.Set(HeaderRequestID, id)
		// Every answer is about one caller's account: never cached by a browser or a CDN.
		hdr.Set("Cache-Control", "private, no-store")
		hdr.Add("Vary", "Authorization")
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Referrer-Policy", "no-referrer")
		hdr.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		hdr.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")

		defer func() {
			if v := recover(); v != nil {
				st.logger().Error("panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if !rec.wrote {
					problem.Write(rec, problem.Internal(fmt.Errorf("panic: %v", v)), id)
				}
			}
			logRequest(r.Context(), o.Logger.Handler(), st, r, rec.statusCode(), time.Since(start))
		}()

		if o.Limit != nil {
			if !o.Limit.admit(r.Context()) {
				o.Limit.shed(rec, r)
				return
			}
			defer o.Limit.release()
		}
		if r.ContentLength > o.MaxBody {
			Error(rec, r, problem.TooLarge(o.MaxBody))
			return
		}
		r.Body = http.MaxBytesReader(rec, r.Body, o.MaxBody)
		next.ServeHTTP(rec, r)
	})
}

// logRequest writes the request's one log line through h: the request id, method, path, status
// and duration, then the attributes the handlers added. It makes the record itself, without
// slog.Logger's lookup of the caller (the handlers do not print it) and without a logger
// derived for the request id.
func logRequest(ctx context.Context, h slog.Handler, st *requestState, r *http.Request, status int, took time.Duration) {
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	if !h.Enabled(ctx, level) {
		return
	}
	line := slog.NewRecord(time.Now(), level, "request", 0)
	line.AddAttrs(
		slog.String("request_id", st.id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
	)
	st.mu.Lock()
	line.AddAttrs(st.attrs...)
	st.mu.Unlock()
	_ = h.Handle(ctx, line)
}

// Route records the matched route pattern for the request's log line (ServeMux sets
// r.Pattern only on the request it hands the handler, which the outer log cannot see).
func Route(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			AddLogAttrs(r.Context(), slog.String("route", pattern))
		}
		mux.ServeHTTP(w, r)
	})
}

// Error answers err as problem+json: a *problem.Problem as it is, an unreachable database as
// 503 (so Stripe and clients retry), a cancelled or timed-out request as 503, anything else as
// a 500 that says only "internal error". The cause of every 5xx goes to the log. This is the
// one place where errors become statuses.
func Error(w http.ResponseWriter, r *http.Request, err error) {
	var p *problem.Problem
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &p):
	case errors.As(err, &maxErr):
		p = problem.TooLarge(maxErr.Limit)
	case db.IsUnavailable(err):
		p = problem.Unavailable("the database is unavailable; retry shortly").WithCause(err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		p = problem.Unavailable("the request ran out of time; retry shortly").WithCause(err)
	default:
		p = problem.Internal(err)
	}
	if p.Status >= 500 {
		Logger(r.Context()).Error("request failed", "status", p.Status, "error", err.Error())
	}
	problem.Write(w, p, RequestID(r.Context()))
}

// JSON writes v as a JSON response with the given status.
func JSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		problem.Write(w, problem.Internal(err), "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func requestIDFor(r *http.Request) string {
	if id := r.Header.Get(HeaderRequestID); validRequestID(id) {
		return id
	}
	if lc, ok := lambdacontext.FromContext(r.Context()); ok && lc.AwsRequestID != "" {
		return lc.AwsRequestID
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validRequestID accepts ids a caller may pass: short, printable, no spaces (they end up in logs).
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r > '~' || r == '"' }) < 0
}

// statusRecorder remembers the status for the log line and whether anything was written.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.wrote {
		return
	}
	s.status, s.wrote = code, true
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.wrote {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) statusCode() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
