// Package lambdafake is a local stand-in of Lambda's Invoke API for asynchronous invokes
// (POST /2015-03-31/functions/{FunctionName}/invocations with X-Amz-Invocation-Type: Event),
// for tests and local runs where a nudge must reach a function running on this machine (under
// the Lambda RIE, or in process).
//
// It answers as Lambda does: 202 with an empty body once the event is queued, 404
// ResourceNotFoundException for a function it does not know, 403 for a request that is not
// SigV4-signed, 400 InvalidParameterValueException for a body over 256 KB (the asynchronous
// payload limit). SetLatency makes it answer as slowly as the real service (an asynchronous
// invoke is answered in tens of milliseconds). Each function's events are run by at most Concurrency workers at a time,
// as reserved concurrency bounds a function's instances: a burst waits in the function's
// queue instead of starting one worker per event.
package lambdafake

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxAsyncPayload is Lambda's limit on an asynchronous invocation's event (256 KB).
const MaxAsyncPayload = 256 << 10

// Run runs one event of a function (an RIE invoke, or an in-process handler).
type Run func(ctx context.Context, payload []byte)

// Function is one function the stand-in knows.
type Function struct {
	// Name is matched against the path's FunctionName (a name, or an ARN ending in :Name).
	Name string
	// Run runs one event.
	Run Run
	// Concurrency is the most events run at once (reserved concurrency); 1 when zero.
	Concurrency int
}

// Server is the stand-in; it is an http.Handler. Close stops its workers.
type Server struct {
	fns      map[string]*queue
	accepted atomic.Int64
	latency  atomic.Int64 // time.Duration before each answer
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

type queue struct {
	events chan []byte
	ran    atomic.Int64
}

// New starts the workers of fns.
func New(fns ...Function) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{fns: map[string]*queue{}, ctx: ctx, cancel: cancel}
	for _, f := range fns {
		q := &queue{events: make(chan []byte, 10000)}
		s.fns[f.Name] = q
		for range max(f.Concurrency, 1) {
			s.wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						return
					case ev := <-q.events:
						f.Run(ctx, ev)
						q.ran.Add(1)
					}
				}
			})
		}
	}
	return s
}

// Close stops the workers (a running event's context is cancelled) and waits for them.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// SetLatency makes every answer wait d first (0: answer at once).
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// Accepted is how many events were queued (answered 202).
func (s *Server) Accepted() int64 { return s.accepted.Load() }

// Ran is how many events of the function have run to the end.
func (s *Server) Ran(name string) int64 {
	if q, ok := s.fns[name]; ok {
		return q.ran.Load()
	}
	return 0
}

// ServeHTTP answers POST /2015-03-31/functions/{FunctionName}/invocations.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d := time.Duration(s.latency.Load()); d > 0 {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(d):
		}
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/2015-03-31/functions/")
	name, ok2 := strings.CutSuffix(rest, "/invocations")
	if !ok || !ok2 || r.Method != http.MethodPost {
		writeError(w, http.StatusNotFound, "UnknownOperationException", "Unknown operation "+r.Method+" "+r.URL.Path)
		return
	}
	if name, _ = url.PathUnescape(name); strings.Contains(name, ":") {
		name = name[strings.LastIndex(name, ":")+1:]
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		writeError(w, http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return
	}
	q, ok := s.fns[name]
	if !ok {
		writeError(w, http.StatusNotFound, "ResourceNotFoundException", "Function not found: "+name)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxAsyncPayload+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidRequestContentException", "Could not read the request body")
		return
	}
	if len(body) > MaxAsyncPayload {
		writeError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException", "Request must be smaller than 262144 bytes for the InvokeAsync operation")
		return
	}
	if t := r.Header.Get("X-Amz-Invocation-Type"); t != "Event" {
		// Only asynchronous invokes are stood in for: a nudge never waits for the pusher.
		writeError(w, http.StatusBadRequest, "InvalidParameterValueException", "this stand-in takes InvocationType Event only, not "+t)
		return
	}
	select {
	case q.events <- body:
	default:
		writeError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Rate Exceeded.")
		return
	}
	s.accepted.Add(1)
	w.Header().Set("X-Amzn-Requestid", "00000000-0000-0000-0000-000000000000")
	w.WriteHeader(http.StatusAccepted)
}

func writeError(w http.ResponseWriter, status int, errType, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", errType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"Type": "User", "message": message})
}
