package hubspot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Errors returned before any request is sent: they are caller bugs, so retrying cannot help.
var (
	// ErrBatchTooLarge means more inputs than HubSpot accepts in one batch (MaxBatchSize).
	ErrBatchTooLarge = errors.New("hubspot: batch has more inputs than HubSpot accepts")
	// ErrEmptyID means an input has no email (contacts) or no tenant id (companies).
	ErrEmptyID = errors.New("hubspot: input has an empty id value")
	// ErrDuplicateID means two inputs of one batch name the same record; HubSpot rejects the
	// whole batch for it, so it is caught here with the offending value.
	ErrDuplicateID = errors.New("hubspot: batch names the same record twice")
	// ErrNoAccessToken means the client was built without HUBSPOT_ACCESS_TOKEN.
	ErrNoAccessToken = errors.New("hubspot: no access token configured")
)

// Waits used when a 429 carries no Retry-After header.
const (
	// DailyLimitWait is the wait after the daily quota is spent. HubSpot resets it at midnight
	// in the portal's time zone, which this client cannot know; an hour keeps retries rare.
	DailyLimitWait = time.Hour
	// DefaultRateLimitWait is HubSpot's rolling burst window, used when no interval header came.
	DefaultRateLimitWait = 10 * time.Second
)

// Error is every failure HubSpot reports, and every failure to reach it, so a worker has one
// type to inspect (errors.As) and one question to ask: Retryable. Message is HubSpot's own
// text, the part ops will read. The access token never appears in it.
type Error struct {
	// Op names the call that failed, e.g. "upsert contacts".
	Op string
	// ID is the input's id value (email or tenant id) when HubSpot failed one record of a batch
	// that otherwise went through; empty for a failure of the whole request.
	ID string
	// StatusCode is the HTTP status of the response; 0 when no response arrived (network error,
	// timeout). For a per-record error it is the batch response's status (207).
	StatusCode int
	// Category is HubSpot's category (VALIDATION_ERROR, INVALID_AUTHENTICATION, CONFLICT, ...)
	// or, for rate limits, its errorType (RATE_LIMIT).
	Category string
	// SubCategory is HubSpot's subCategory when it sends one.
	SubCategory string
	// Message is HubSpot's human-readable message (or the start of a non-JSON body).
	Message string
	// CorrelationID identifies the request in HubSpot's logs and support tickets.
	CorrelationID string
	// PolicyName tells which rate limit was hit (DAILY, TEN_SECONDLY_ROLLING) on a 429.
	PolicyName string
	// Details holds HubSpot's errors[] entries (which field, which code).
	Details []ErrorDetail
	// RetryAfter is how long to wait before trying again: Retry-After when sent, else derived
	// from the rate-limit headers on a 429; 0 when HubSpot gave no hint.
	RetryAfter time.Duration
	// RateLimit is what the response's X-HubSpot-RateLimit-* headers said.
	RateLimit RateLimit
	// Err is the transport error when no response arrived.
	Err error

	// unknownOutcome marks a record HubSpot neither confirmed nor rejected; upserts are
	// idempotent, so sending it again is safe.
	unknownOutcome bool
}

// ErrorDetail is one entry of HubSpot's errors[] array.
type ErrorDetail struct {
	Message     string `json:"message"`
	Code        string `json:"code,omitempty"`
	In          string `json:"in,omitempty"`
	SubCategory string `json:"subCategory,omitempty"`
}

// Error formats the failure for logs: operation, record, status, category, HubSpot's message
// and the correlation id.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("hubspot: ")
	b.WriteString(e.Op)
	if e.ID != "" {
		b.WriteString(": ")
		b.WriteString(e.ID)
	}
	if e.StatusCode == 0 && e.Err != nil {
		b.WriteString(": request failed: ")
		b.WriteString(e.Err.Error())
		return b.String()
	}
	b.WriteString(": ")
	if e.ID == "" {
		b.WriteString(strconv.Itoa(e.StatusCode))
		b.WriteString(" ")
	}
	if e.Category != "" {
		b.WriteString(e.Category)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	var extra []string
	if e.PolicyName != "" {
		extra = append(extra, "policy "+e.PolicyName)
	}
	if e.CorrelationID != "" {
		extra = append(extra, "correlation id "+e.CorrelationID)
	}
	if e.RetryAfter > 0 {
		extra = append(extra, "retry after "+e.RetryAfter.String())
	}
	if len(extra) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(extra, ", "))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the transport error, so errors.Is(err, context.DeadlineExceeded) works.
func (e *Error) Unwrap() error { return e.Err }

// Retryable says whether the same request may succeed later: network failures and timeouts,
// 429, 423 (record locked), 477 (migration in progress) and 5xx are retryable; other 4xx
// (400, 401, 403, 404, 409, ...) are permanent. A per-record error is retryable only when
// HubSpot put that record under a rate limit or left its outcome unknown.
func (e *Error) Retryable() bool {
	switch {
	case e.unknownOutcome:
		return true
	case e.StatusCode == 0:
		return e.Err != nil
	case e.StatusCode >= 200 && e.StatusCode < 300:
		return e.Category == "RATE_LIMIT" || e.Category == "RATE_LIMITS"
	case e.StatusCode == http.StatusTooManyRequests, e.StatusCode == http.StatusLocked, e.StatusCode == 477:
		return true
	default:
		return e.StatusCode >= 500
	}
}

// Timeout says whether the request ran out of time (our deadline or the network's).
func (e *Error) Timeout() bool {
	if e.Err == nil {
		return false
	}
	if errors.Is(e.Err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// IsRetryable reports whether err is (or wraps) a HubSpot error that may succeed later.
func IsRetryable(err error) bool {
	var he *Error
	return errors.As(err, &he) && he.Retryable()
}

// RetryAfter returns how long to wait before retrying err, when err is a retryable HubSpot
// error that carried a wait (a 429, or Retry-After on a 5xx); a job queue can snooze by it.
func RetryAfter(err error) (time.Duration, bool) {
	var he *Error
	if !errors.As(err, &he) || !he.Retryable() || he.RetryAfter <= 0 {
		return 0, false
	}
	return he.RetryAfter, true
}

// RateLimit is what HubSpot's X-HubSpot-RateLimit-* headers said. A field is -1 when its
// header was absent, so "0 remaining" and "not told" stay apart.
type RateLimit struct {
	// Max and Remaining are the burst budget for the current interval window.
	Max, Remaining int
	// Interval is the burst window (X-HubSpot-RateLimit-Interval-Milliseconds); 0 if absent.
	Interval time.Duration
	// Daily and DailyRemaining are the portal's daily quota.
	Daily, DailyRemaining int
	// Secondly and SecondlyRemaining are the per-second budget, where HubSpot still sends it.
	Secondly, SecondlyRemaining int
}

func parseRateLimit(h http.Header) RateLimit {
	num := func(name string) int {
		v, err := strconv.Atoi(strings.TrimSpace(h.Get(name)))
		if err != nil || v < 0 {
			return -1
		}
		return v
	}
	rl := RateLimit{
		Max:               num("X-HubSpot-RateLimit-Max"),
		Remaining:         num("X-HubSpot-RateLimit-Remaining"),
		Daily:             num("X-HubSpot-RateLimit-Daily"),
		DailyRemaining:    num("X-HubSpot-RateLimit-Daily-Remaining"),
		Secondly:          num("X-HubSpot-RateLimit-Secondly"),
		SecondlyRemaining: num("X-HubSpot-RateLimit-Secondly-Remaining"),
	}
	if ms := num("X-HubSpot-RateLimit-Interval-Milliseconds"); ms > 0 {
		rl.Interval = time.Duration(ms) * time.Millisecond
	}
	return rl
}

// retryWait derives the wait for a failed response: Retry-After wins (seconds or an HTTP
// date); on a 429 without it, a spent daily quota waits DailyLimitWait, otherwise the burst
// interval window, otherwise a second for a spent per-second budget, otherwise
// DefaultRateLimitWait.
func retryWait(status int, h http.Header, policy string, rl RateLimit, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
			return time.Duration(secs) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(t.Sub(now), 0)
		}
	}
	if status != http.StatusTooManyRequests {
		return 0
	}
	switch {
	case policy == "DAILY" || rl.DailyRemaining == 0:
		return DailyLimitWait
	case rl.Interval > 0:
		return rl.Interval
	case rl.SecondlyRemaining == 0:
		return time.Second
	default:
		return DefaultRateLimitWait
	}
}

// errorBody is HubSpot's error response; every field is optional, as its docs warn.
type errorBody struct {
	Status        string        `json:"status"`
	Message       string        `json:"message"`
	Category      string        `json:"category"`
	ErrorType     string        `json:"errorType"`
	SubCategory   any           `json:"subCategory"`
	CorrelationID string        `json:"correlationId"`
	PolicyName    string        `json:"policyName"`
	Errors        []ErrorDetail `json:"errors"`
}

func (b errorBody) category() string {
	if b.Category != "" {
		return b.Category
	}
	return b.ErrorType
}

func (b errorBody) subCategory() string {
	if s, ok := b.SubCategory.(string); ok {
		return s
	}
	if b.SubCategory != nil {
		return fmt.Sprint(b.SubCategory)
	}
	return ""
}
