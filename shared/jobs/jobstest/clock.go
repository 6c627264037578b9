// Package jobstest drives the job queue's time in tests: River's scheduler, the retry policy
// and the sync timestamps all read one Clock, so "HubSpot was down for five minutes" is a few
// Advance calls instead of five minutes of sleeping.
package jobstest

import (
	"sync"
	"time"

	"github.com/riverqueue/river/rivertype"
)

// Clock is the wall clock plus an offset that only grows (Advance). It keeps flowing, so jobs
// inserted with the database's now() are always due on it, while a test jumps over retry
// delays of seconds to hours at once.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

var _ rivertype.TimeGenerator = (*Clock)(nil)

// NewClock returns a clock at the wall clock's time.
func NewClock() *Clock { return &Clock{} }

// Now is the simulated time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().UTC().Add(c.offset)
}

// NowOrNil is the simulated time (River passes it to its queries instead of the database's
// now()).
func (c *Clock) NowOrNil() *time.Time {
	t := c.Now()
	return &t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
