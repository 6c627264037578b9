package web

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// Limiter bounds how many requests run at once, in front of the database pool, and tells a
// stall from an overload by how the queue for its slots behaves.
//
//   - A request that finds a free slot runs.
//   - Otherwise it waits for one, in arrival order, up to Queue.Wait. A stall of tens of
//     milliseconds (a slow WAL fsync holds every commit behind it; issue 12 caught 45 ms ones
//     on this machine's disk) fills every slot at once without the server being short of
//     capacity: the queue drains once the stall ends, and nobody is refused for it.
//   - A request that waited Wait, or found Queue.PerSlot requests per slot already waiting,
//     is refused: 503 with Retry-After. A refusal means the server is not keeping up, so
//     for Queue.Cooldown after the latest one, a request that finds no free slot is refused
//     at once instead of queueing (a view's OverloadWait lets it wait a little). Past the
//     knee the queue therefore stays short, and the server answers at its full rate rather
//     than computing answers its clients gave up on; a refusal costs microseconds, and Stripe
//     (like any client honouring 503) sends the delivery again later.
//
// This is the controlled-delay queue of Facebook's "Fail at Scale" (ACM Queue, 2015), keyed on
// refusals rather than on how long the queue has stood: here the wait bound itself is the
// sign of overload. Views (OverloadWait) share their slots and queue, so one bound still
// covers every function on a pool (Options.Limit). This is the shape of a long-running host
// (the dev server); a Lambda instance serves one request at a time and never waits here.
type Limiter struct {
	slots      chan struct{}
	retryAfter string
	// overloadWait bounds this view's wait for a slot while the limiter is overloaded.
	overloadWait time.Duration
	q            *queue
}

// Queue says how requests wait for a limiter's slots.
type Queue struct {
	// Wait bounds how long a request waits for a slot while the server keeps up.
	Wait time.Duration
	// Cooldown is how long after a refusal the limiter counts as overloaded.
	Cooldown time.Duration
	// PerSlot bounds the requests waiting at once, per slot (at least 1).
	PerSlot int
}

// DefaultQueue absorbs a stall of about 50 ms at 1,600 deliveries/s on 16 slots (the stalled
// arrivals and their drain stay within the wait) and keeps a request's wait under the
// webhook's 100 ms latency objective. Under a sustained overload every arrival that finds the
// slots full refreshes the refusal, so the cooldown only sets how soon after the last one
// requests queue again: a quarter second, so that a stall soon after a refusal is waited out
// (issue 12's knee sweeps, 10 s a rate: 2,000/s with a second's cooldown, 2,200 and 2,600/s
// with this).
var DefaultQueue = Queue{Wait: 100 * time.Millisecond, Cooldown: 250 * time.Millisecond, PerSlot: 16}

// queue is the state a limiter's views share.
type queue struct {
	Queue
	// epoch is the monotonic clock's origin for lastRefusal.
	epoch time.Time
	// lastRefusal is when the latest refusal happened, in nanoseconds since epoch plus one
	// (0: never).
	lastRefusal atomic.Int64
	// waiting counts the requests waiting for a slot, across views.
	waiting atomic.Int32
}

// NewLimiter admits at most n requests at once (n < 1 admits one), queues the rest as
// DefaultQueue says, and asks the refused to retry after retryAfterSeconds (at least 1).
func NewLimiter(n, retryAfterSeconds int) *Limiter {
	return NewQueuedLimiter(n, retryAfterSeconds, DefaultQueue)
}

// NewQueuedLimiter is NewLimiter with a queue of its own shape.
func NewQueuedLimiter(n, retryAfterSeconds int, q Queue) *Limiter {
	q.PerSlot = max(q.PerSlot, 1)
	return &Limiter{slots: make(chan struct{}, max(n, 1)), retryAfter: strconv.Itoa(max(retryAfterSeconds, 1)),
		q: &queue{Queue: q, epoch: time.Now()}}
}

// OverloadWait is a view of l, sharing its slots and queue, whose requests still wait up to d
// for a slot while l is overloaded (l itself refuses them at once then). For interactive
// routes: the caller is a person whose browser does not retry, and a freed slot goes to a
// waiting request before a new arrival.
func (l *Limiter) OverloadWait(d time.Duration) *Limiter {
	return &Limiter{slots: l.slots, retryAfter: l.retryAfter, overloadWait: max(d, 0), q: l.q}
}

// Capacity is how many requests the limiter admits at once.
func (l *Limiter) Capacity() int { return cap(l.slots) }

// admit takes a slot, waiting for one as the queue allows; false when none came free or the
// client went away while it waited (not a refusal: the limiter did not decide it).
func (l *Limiter) admit(ctx context.Context) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	wait := l.q.Wait
	if l.q.overloaded() {
		wait = l.overloadWait
	}
	if wait > 0 && l.q.join(cap(l.slots)) {
		got, gone := l.waitFor(ctx, wait)
		l.q.waiting.Add(-1)
		if got || gone {
			return got
		}
	}
	l.q.lastRefusal.Store(int64(time.Since(l.q.epoch)) + 1)
	return false
}

// join counts a request in as waiting for one of slots slots; false (and not counted) when
// PerSlot per slot already wait.
func (q *queue) join(slots int) bool {
	if q.waiting.Add(1) > int32(q.PerSlot*slots) {
		q.waiting.Add(-1)
		return false
	}
	return true
}

// waitFor waits up to d for a slot, or until ctx is done (gone).
func (l *Limiter) waitFor(ctx context.Context, d time.Duration) (got, gone bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return true, false
	case <-t.C:
		return false, false
	case <-ctx.Done():
		return false, true
	}
}

// overloaded says whether a request was refused within the last Cooldown.
func (q *queue) overloaded() bool {
	last := q.lastRefusal.Load()
	return last != 0 && time.Since(q.epoch)-time.Duration(last-1) < q.Cooldown
}

func (l *Limiter) release() { <-l.slots }

// shed answers a request the limiter refused.
func (l *Limiter) shed(w http.ResponseWriter, r *http.Request) {
	p := problem.Unavailable("the service is at capacity; retry shortly")
	p.Header.Set("Retry-After", l.retryAfter)
	problem.Write(w, p, RequestID(r.Context()))
}
