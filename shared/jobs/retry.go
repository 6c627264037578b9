package jobs

import (
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// MaxAttempts is how many times a push is tried before it is dead-lettered. With
// DefaultBackoff the retries wait 15 s, 30 s, 1 m, 2 m, 4 m, 8 m, 16 m, 32 m (about an hour in
// all), then an hour each: 32 attempts span about 24 hours, long enough to ride out any HubSpot
// or Zendesk incident, short enough that ops hear of a stuck record the same day.
const MaxAttempts = 32

// Backoff is an integration's retry schedule: exponential from First, doubling per attempt,
// capped at Cap, each wait randomised by ±Jitter so a burst of failures does not come back as
// one burst.
type Backoff struct {
	First  time.Duration
	Cap    time.Duration
	Jitter float64
}

// DefaultBackoff is the schedule of both integrations: the first retries come within a
// minute (most provider errors are blips), then minutes, then hourly.
func DefaultBackoff() Backoff {
	return Backoff{First: 15 * time.Second, Cap: time.Hour, Jitter: 0.2}
}

// Delay is the wait after failed attempt number attempt (1-based), before jitter.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.First
	for i := 1; i < attempt && d < b.Cap; i++ {
		d *= 2
	}
	return min(d, b.Cap)
}

// Schedule is the wait before each retry of a job that always fails (MaxAttempts-1 of them),
// before jitter: what a test or a reader checks the policy against.
func (b Backoff) Schedule() []time.Duration {
	out := make([]time.Duration, MaxAttempts-1)
	for i := range out {
		out[i] = b.Delay(i + 1)
	}
	return out
}

// RetryPolicy is the River retry policy: the job's queue picks its Backoff.
type RetryPolicy struct {
	// Backoffs by queue; DefaultBackoff for a queue not listed.
	Backoffs map[string]Backoff
	// Now is the clock (River's time generator when tests drive time); time.Now when nil.
	Now func() time.Time
}

var _ river.ClientRetryPolicy = (*RetryPolicy)(nil)

// NextRetry implements river.ClientRetryPolicy.
func (p *RetryPolicy) NextRetry(job *rivertype.JobRow) time.Time {
	b, ok := p.Backoffs[job.Queue]
	if !ok {
		b = DefaultBackoff()
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	d := b.Delay(max(job.Attempt, 1))
	if b.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + b.Jitter*(2*rand.Float64()-1)))
	}
	return now().Add(d)
}
