package zendesk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Error is every failure of a call that reached the network: Zendesk's own error answers and
// transport failures alike. It keeps Zendesk's message for ops and says what to do next:
// Retryable (try again later, after RetryAfter if set) and Ambiguous (Zendesk may have acted, so
// look the ticket up by external_id before creating it again).
type Error struct {
	// Op is the call that failed, e.g. "create ticket".
	Op string
	// StatusCode is Zendesk's HTTP status; 0 when no response arrived.
	StatusCode int
	// Title is Zendesk's error name: the "error" string (e.g. "RecordInvalid") or, in the
	// object form Zendesk uses for some 403s, error.title.
	Title string
	// Description is Zendesk's human-readable message ("description", or error.message), or
	// the start of a non-JSON body.
	Description string
	// Details are Zendesk's field errors from a 422, keyed by field (e.g. "requester").
	Details map[string][]FieldError
	// RetryAfter is how long Zendesk asked us to wait (Retry-After on 429 and some 503s).
	RetryAfter time.Duration
	// Err is the underlying transport or decoding error, if any.
	Err error

	ambiguous bool
}

// FieldError is one entry of Zendesk's "details" map.
type FieldError struct {
	Description string `json:"description"`
	Error       string `json:"error"`
}

// Error renders status, Zendesk's name, message and field errors; never credentials.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("zendesk: ")
	b.WriteString(e.Op)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Title != "" {
		b.WriteString(" ")
		b.WriteString(e.Title)
	}
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	if len(e.Details) > 0 {
		fields := make([]string, 0, len(e.Details))
		for f := range e.Details {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		var parts []string
		for _, f := range fields {
			for _, d := range e.Details[f] {
				parts = append(parts, fmt.Sprintf("%s: %s (%s)", f, d.Description, d.Error))
			}
		}
		b.WriteString(" [")
		b.WriteString(strings.Join(parts, "; "))
		b.WriteString("]")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes the transport error, so errors.Is(err, context.DeadlineExceeded) works.
func (e *Error) Unwrap() error { return e.Err }

// Is lets errors.Is(err, ErrIdempotencyKeyReused) recognise Zendesk's IdempotentRequestError.
func (e *Error) Is(target error) bool {
	return target == ErrIdempotencyKeyReused && e.Title == "IdempotentRequestError"
}

// Retryable says whether the same call may succeed later: network failures and timeouts, 409
// (a concurrent update), 429 and 5xx. 4xx answers such as 400, 401, 403, 404 and 422 are
// permanent: repeating them cannot help until someone fixes the data or the credentials.
func (e *Error) Retryable() bool {
	switch {
	case e.StatusCode == 0:
		// No answer (refused, reset, timed out): the same request may well get through later.
		return true
	case e.StatusCode == http.StatusConflict, e.StatusCode == http.StatusTooManyRequests:
		return true
	case e.StatusCode >= 500:
		return true
	case e.StatusCode >= 200 && e.StatusCode < 300:
		// A 2xx we could not read: Zendesk acted; a keyed retry replays the answer.
		return true
	default:
		return false
	}
}

// Ambiguous says the request may have reached Zendesk and been acted on even though we got no
// usable answer: a timeout or dropped connection after sending, a 5xx, or an unreadable 2xx.
// Before creating again after the idempotency window, look the ticket up by external_id. A
// refused connection, a 429 or a 4xx is clear: nothing was created.
func (e *Error) Ambiguous() bool {
	return e.ambiguous || e.StatusCode >= 500
}

// IsRetryable reports whether err is (or wraps) a Zendesk failure that may succeed later. Any
// other error, such as a bad Config, is permanent.
func IsRetryable(err error) bool {
	var zerr *Error
	return errors.As(err, &zerr) && zerr.Retryable()
}

// IsAmbiguous reports whether err is (or wraps) a failure after which Zendesk may have acted, so
// the worker should look the ticket up by external_id before creating it again.
func IsAmbiguous(err error) bool {
	var zerr *Error
	return errors.As(err, &zerr) && zerr.Ambiguous()
}

// RetryAfter returns the wait Zendesk asked for, if err is a retryable failure that carried one.
func RetryAfter(err error) (time.Duration, bool) {
	var zerr *Error
	if !errors.As(err, &zerr) || !zerr.Retryable() || zerr.RetryAfter <= 0 {
		return 0, false
	}
	return zerr.RetryAfter, true
}

// transportError classifies a failure of http.Client.Do: no status line arrived.
func transportError(op string, err error) *Error {
	e := &Error{Op: op, Err: err, ambiguous: true}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		// The connection was never made, so the request was never sent.
		e.ambiguous = false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		e.ambiguous = false
	}
	if errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// The caller gave up (shutdown). Still ambiguous: the request may have been sent.
		e.Description = "canceled by the caller"
	}
	return e
}

// responseError turns a non-2xx answer into *Error, reading Zendesk's JSON error body in
// either documented form ({"error":"Name","description":…,"details":…} or
// {"error":{"title":…,"message":…}}) and falling back to the raw text.
func responseError(op string, resp *http.Response, raw []byte) *Error {
	e := &Error{Op: op, StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var body struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"description"`
		Details     json.RawMessage `json:"details"`
	}
	if json.Unmarshal(raw, &body) != nil {
		e.Description = snippet(raw)
		if e.Description == "" {
			e.Description = http.StatusText(resp.StatusCode)
		}
		return e
	}
	e.Description = body.Description
	var name string
	var obj struct {
		Title   string `json:"title"`
		Message string `json:"message"`
	}
	switch {
	case json.Unmarshal(body.Error, &name) == nil:
		e.Title = name
	case json.Unmarshal(body.Error, &obj) == nil:
		e.Title = obj.Title
		if e.Description == "" {
			e.Description = obj.Message
		}
	}
	if len(body.Details) > 0 {
		var details map[string][]FieldError
		if json.Unmarshal(body.Details, &details) == nil {
			e.Details = details
		} else if e.Description == "" {
			e.Description = snippet(body.Details)
		}
	}
	if e.Title == "" && e.Description == "" {
		e.Description = http.StatusText(resp.StatusCode)
	}
	return e
}

// parseRetryAfter reads Retry-After as delay-seconds (what Zendesk sends) or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil && at.After(now) {
		return at.Sub(now).Round(time.Second)
	}
	return 0
}

// snippet keeps the start of a non-JSON body as a one-line message for ops.
func snippet(raw []byte) string {
	s := strings.Join(strings.Fields(string(raw)), " ")
	const limit = 300
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}
