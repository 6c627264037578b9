// Package providerfake holds what every local provider stand-in (hubspotfake, zendeskfake,
// storagefake, and the dev server's Stripe front) shares, so that each is switched the same
// way and `make dev` drives them all through one control endpoint: the health switch (up, down,
// rate-limited), an injected latency, and a count of the requests that arrived.
//
// What a provider answers when it is down or rate limiting (its status line, headers and body)
// stays in its own fake: only the switch is shared.
package providerfake

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrUnknownMode is returned by ParseMode for a name that is not a mode.
var ErrUnknownMode = errors.New("providerfake: unknown mode (want up, down or rate-limited)")

// Mode is how a stand-in answers every request.
type Mode int

// The modes a test or the dev server can switch a stand-in to.
const (
	// ModeUp serves requests normally.
	ModeUp Mode = iota
	// ModeDown answers as the provider's edge does when the service is unavailable (503).
	ModeDown
	// ModeRateLimited answers as the provider does when it throttles the caller (429).
	ModeRateLimited
)

// String names the mode as ParseMode reads it.
func (m Mode) String() string {
	switch m {
	case ModeUp:
		return "up"
	case ModeDown:
		return "down"
	case ModeRateLimited:
		return "rate-limited"
	default:
		return "Mode(" + strconv.Itoa(int(m)) + ")"
	}
}

// ParseMode reads "up", "down" or "rate-limited" (any case, surrounding space ignored), so a
// mode can come from a URL, a flag or a request body.
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModeUp, ModeDown, ModeRateLimited} {
		if strings.EqualFold(strings.TrimSpace(s), m.String()) {
			return m, nil
		}
	}
	return ModeUp, fmt.Errorf("parse mode %q: %w", s, ErrUnknownMode)
}

// Switch is a stand-in's health switch, latency and call count. A fake embeds it (the zero
// value is up, without latency) and calls Enter first in its ServeHTTP. Safe for concurrent
// use.
type Switch struct {
	mu      sync.Mutex
	mode    Mode
	latency time.Duration
	calls   int
	closed  chan struct{}
}

// Mode is the current mode.
func (s *Switch) Mode() Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetMode switches how every following request is answered.
func (s *Switch) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// SetLatency makes every following request wait d before it is answered (0: no wait), to
// exercise a caller's timeout. The wait ends early when the client gives up.
func (s *Switch) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Calls is how many requests arrived, whatever they were answered.
func (s *Switch) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Enter counts one request, waits out the latency and returns the mode to answer it in. It
// returns false, and the fake answers nothing, when the client gave up or Close was called
// during the wait.
func (s *Switch) Enter(r *http.Request) (Mode, bool) {
	s.mu.Lock()
	s.calls++
	latency := s.latency
	s.mu.Unlock()
	if latency > 0 {
		timer := time.NewTimer(latency)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return s.Mode(), false
		case <-s.Done():
			return s.Mode(), false
		}
	}
	return s.Mode(), true
}

// Done is closed by Close: a fake that holds a request back (latency, a withheld answer)
// lets it go then.
func (s *Switch) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed == nil {
		s.closed = make(chan struct{})
	}
	return s.closed
}

// Close releases every request held back, so an http.Server in front of the fake can shut
// down promptly. Calling it again does nothing.
func (s *Switch) Close() {
	done := s.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-done:
	default:
		close(s.closed)
	}
}
