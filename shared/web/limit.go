package web

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// Limiter bounds how many requests run at once, in front of the database pool: past the
// bound a request is answered 503 with Retry-After instead of queueing for a connection. A
// queue that grows faster than it drains makes every request late, clients give up on answers
// the server still computes, and throughput collapses; a refusal costs microseconds, and
// Stripe (like any client honouring 503) sends the delivery again later.
//
// By default the refusal is immediate. A view made with Waiting lets a request wait a few
// milliseconds for a slot first, in arrival order: for interactive routes, where the caller
// is a person whose browser does not retry, so a burst of a few milliseconds (a GC pause, a
// slow commit) is better absorbed than answered 503; the wait is bounded, so the queue drains
// or the request is refused, and never grows. Views share their slots, so one bound still
// covers every function on a pool (Options.Limit). This is the shape of a long-running host
// (the dev server); a Lambda instance serves one request at a time and never waits here.
type Limiter struct {
	slots      chan struct{}
	retryAfter string
	wait       time.Duration
	// waiting counts the requests waiting for a slot, across views.
	waiting *atomic.Int32
}

// waitersPerSlot bounds the requests waiting at once, per slot: past it a request is refused
// at once, since it could not get a slot within the wait anyway.
const waitersPerSlot = 4

// NewLimiter admits at most n requests at once (n < 1 admits one), and asks the refused to
// retry after retryAfterSeconds (at least 1).
func NewLimiter(n, retryAfterSeconds int) *Limiter {
	return &Limiter{slots: make(chan struct{}, max(n, 1)), retryAfter: strconv.Itoa(max(retryAfterSeconds, 1)),
		waiting: &atomic.Int32{}}
}

// Waiting is a view of l, sharing its slots, whose requests wait up to d for a slot before
// they are refused (d <= 0: refused at once, as with l). At most 4 requests per slot wait at
// once; the next is refused at once.
func (l *Limiter) Waiting(d time.Duration) *Limiter {
	return &Limiter{slots: l.slots, retryAfter: l.retryAfter, wait: max(d, 0), waiting: l.waiting}
}

// Capacity is how many requests the limiter admits at once.
func (l *Limiter) Capacity() int { return cap(l.slots) }

// admit takes a slot, waiting up to the view's wait for one; false when none came free.
func (l *Limiter) admit() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	if l.wait <= 0 {
		return false
	}
	if l.waiting.Add(1) > int32(waitersPerSlot*cap(l.slots)) {
		l.waiting.Add(-1)
		return false
	}
	defer l.waiting.Add(-1)
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func (l *Limiter) release() { <-l.slots }

// shed answers a request the limiter refused.
func (l *Limiter) shed(w http.ResponseWriter, r *http.Request) {
	p := problem.Unavailable("the service is at capacity; retry shortly")
	p.Header.Set("Retry-After", l.retryAfter)
	problem.Write(w, p, RequestID(r.Context()))
}
