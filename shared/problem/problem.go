// Package problem is the one error type every function answers with: RFC 9457
// `application/problem+json`, carrying a status, a title a person can read, an optional detail,
// field errors a portal can show next to its inputs, and the request id support will ask for.
//
// A Problem is built where the cause is known (a validator, an auth check) and written at the
// edge. Anything that is not a Problem becomes a 500 whose body says only "internal error":
// internals (SQL, stack traces, secrets) stay in the log.
package problem

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ContentType is the media type of every error body.
const ContentType = "application/problem+json"

// Problem is an RFC 9457 problem detail. Its zero Type means "about:blank": the status says it all.
type Problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail,omitempty"`
	Instance  string       `json:"instance,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
	Errors    []FieldError `json:"errors,omitempty"`

	// Header is sent with the response (WWW-Authenticate, Retry-After, ...).
	Header http.Header `json:"-"`
	// cause is logged, never sent.
	cause error
}

// FieldError points at one input field by its JSON name.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error reports the status and title (and the cause, for logs).
func (p *Problem) Error() string {
	s := fmt.Sprintf("%d %s", p.Status, p.Title)
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	if p.cause != nil {
		s += ": " + p.cause.Error()
	}
	return s
}

// Unwrap exposes the cause to errors.Is/As.
func (p *Problem) Unwrap() error { return p.cause }

// WithCause records why (for the log only) and returns p.
func (p *Problem) WithCause(err error) *Problem {
	p.cause = err
	return p
}

// WithHeader adds a response header and returns p.
func (p *Problem) WithHeader(key, value string) *Problem {
	if p.Header == nil {
		p.Header = http.Header{}
	}
	p.Header.Add(key, value)
	return p
}

// New builds a problem of a given status; the title is the status text unless given.
func New(status int, typ, title, detail string) *Problem {
	if title == "" {
		title = http.StatusText(status)
	}
	if typ == "" {
		typ = "about:blank"
	}
	return &Problem{Type: typ, Title: title, Status: status, Detail: detail}
}

// Type URIs of the problems a client may want to tell apart. Relative references, as RFC 9457
// allows; documented in openapi.yaml.
const (
	TypeValidation        = "/problems/validation-failed"
	TypeMalformed         = "/problems/malformed-request"
	TypeUnauthorized      = "/problems/unauthorized"
	TypeForbidden         = "/problems/forbidden"
	TypeNotFound          = "/problems/not-found"
	TypeIdempotencyBusy   = "/problems/idempotency-key-in-progress"
	TypeIdempotencyReused = "/problems/idempotency-key-reused"
	TypeIdempotencyKey    = "/problems/idempotency-key-required"
	TypeTooLarge          = "/problems/payload-too-large"
	TypeMediaType         = "/problems/unsupported-media-type"
	TypeUnavailable       = "/problems/service-unavailable"
	TypeInternal          = "/problems/internal-error"
)

// BadRequest is a malformed request (bad JSON, bad signature, missing header).
func BadRequest(detail string) *Problem {
	return New(http.StatusBadRequest, TypeMalformed, "Malformed request", detail)
}

// Unauthorized is a missing or invalid credential. The detail is generic on purpose: the
// reason goes to the log, not to the caller.
func Unauthorized(detail string) *Problem {
	return New(http.StatusUnauthorized, TypeUnauthorized, "Unauthorized", detail).
		WithHeader("WWW-Authenticate", `Bearer error="invalid_token"`)
}

// Forbidden is a valid identity without the membership or role the action needs.
func Forbidden(detail string) *Problem {
	return New(http.StatusForbidden, TypeForbidden, "Forbidden", detail)
}

// NotFound is an unknown id, or one of another tenant (the two are indistinguishable).
func NotFound(detail string) *Problem {
	return New(http.StatusNotFound, TypeNotFound, "Not found", detail)
}

// Validation is a well-formed request whose fields break the rules.
func Validation(detail string, fields ...FieldError) *Problem {
	p := New(http.StatusUnprocessableEntity, TypeValidation, "Validation failed", detail)
	p.Errors = fields
	return p
}

// TooLarge is a body over the limit.
func TooLarge(limit int64) *Problem {
	return New(http.StatusRequestEntityTooLarge, TypeTooLarge, "Payload too large",
		fmt.Sprintf("the request body must be at most %d bytes", limit))
}

// UnsupportedMediaType is a body that is not JSON.
func UnsupportedMediaType() *Problem {
	return New(http.StatusUnsupportedMediaType, TypeMediaType, "Unsupported media type",
		"send the body as application/json")
}

// Unavailable is a dependency we cannot do without being down: the caller should retry.
func Unavailable(detail string) *Problem {
	return New(http.StatusServiceUnavailable, TypeUnavailable, "Service unavailable", detail).
		WithHeader("Retry-After", "5")
}

// Internal is anything unexpected; the body says only "internal error".
func Internal(cause error) *Problem {
	return New(http.StatusInternalServerError, TypeInternal, "Internal error", "internal error").WithCause(cause)
}

// Write sends p as problem+json with the request id filled in.
func Write(w http.ResponseWriter, p *Problem, requestID string) {
	for k, vs := range p.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	out := *p
	out.RequestID = requestID
	if out.Status >= 500 {
		// 5xx never carries internals, whatever a caller put in Detail.
		out.Detail = http.StatusText(out.Status)
		if out.Status == http.StatusInternalServerError {
			out.Detail = "internal error"
		}
		out.Errors = nil
	}
	body, _ := json.Marshal(out)
	w.Header().Set("Content-Type", ContentType)
	w.Header().Del("Content-Length")
	w.WriteHeader(out.Status)
	_, _ = w.Write(body)
}
