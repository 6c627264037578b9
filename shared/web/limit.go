package web

import (
	"net/http"
	"strconv"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// Limiter bounds how many requests run at once, in front of the database pool: past the
// bound a request is answered 503 at once, with Retry-After, instead of queueing for a
// connection. A queue that grows faster than it drains makes every request late, clients
// give up on answers the server still computes, and throughput collapses; a refusal costs
// microseconds, and Stripe (like any client honouring 503) sends the delivery again later.
// One Limiter is shared by every function on a pool (Options.Limit).
type Limiter struct {
	slots      chan struct{}
	retryAfter string
}

// NewLimiter admits at most n requests at once (n < 1 admits one), and asks the refused to
// retry after retryAfterSeconds (at least 1).
func NewLimiter(n, retryAfterSeconds int) *Limiter {
	return &Limiter{slots: make(chan struct{}, max(n, 1)), retryAfter: strconv.Itoa(max(retryAfterSeconds, 1))}
}

// Capacity is how many requests the limiter admits at once.
func (l *Limiter) Capacity() int { return cap(l.slots) }

// admit takes a slot without waiting; false when all are taken.
func (l *Limiter) admit() bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
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
