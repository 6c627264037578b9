package problem_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/problem"
)

func write(t *testing.T, p *problem.Problem, requestID string) (*http.Response, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	problem.Write(rec, p, requestID)
	res := rec.Result()
	var body map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
	return res, body
}

func TestConstructorsCarryTheStatusesOfTheContract(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		p      *problem.Problem
		status int
		typ    string
	}{
		{"bad request", problem.BadRequest("bad signature"), 400, problem.TypeMalformed},
		{"unauthorized", problem.Unauthorized("invalid token"), 401, problem.TypeUnauthorized},
		{"forbidden", problem.Forbidden("owners only"), 403, problem.TypeForbidden},
		{"not found", problem.NotFound("no such ticket"), 404, problem.TypeNotFound},
		{"too large", problem.TooLarge(65536), 413, problem.TypeTooLarge},
		{"media type", problem.UnsupportedMediaType(), 415, problem.TypeMediaType},
		{"validation", problem.Validation("check the fields"), 422, problem.TypeValidation},
		{"unavailable", problem.Unavailable("database down"), 503, problem.TypeUnavailable},
		{"internal", problem.Internal(errors.New("boom")), 500, problem.TypeInternal},
		{"custom", problem.New(409, problem.TypeIdempotencyBusy, "", "in progress"), 409, problem.TypeIdempotencyBusy},
		{"blank type", problem.New(418, "", "", ""), 418, "about:blank"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, body := write(t, tc.p, "req-1")
			require.Equal(t, tc.status, res.StatusCode)
			require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
			require.EqualValues(t, tc.status, body["status"])
			require.Equal(t, tc.typ, body["type"])
			require.NotEmpty(t, body["title"])
			require.Equal(t, "req-1", body["request_id"])
		})
	}
}

func TestValidationListsFieldErrorsByJSONName(t *testing.T) {
	t.Parallel()
	p := problem.Validation("check the highlighted fields",
		problem.FieldError{Field: "subject", Message: "is required"},
		problem.FieldError{Field: "attachments[0].size", Message: "must be at most 10485760"})
	_, body := write(t, p, "req-2")
	require.Equal(t, []any{
		map[string]any{"field": "subject", "message": "is required"},
		map[string]any{"field": "attachments[0].size", "message": "must be at most 10485760"},
	}, body["errors"])
}

func TestServerErrorsNeverCarryInternals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		p      *problem.Problem
		detail string
	}{
		{"internal with a cause", problem.Internal(errors.New(`pq: password authentication failed for "admin"`)), "internal error"},
		{"5xx with a careless detail", problem.New(502, "", "", "upstream said: token sk_live_123 invalid"), "Bad Gateway"},
		{"503 with fields", func() *problem.Problem {
			p := problem.Unavailable("db at 10.0.0.5 down")
			p.Errors = []problem.FieldError{{Field: "x", Message: "y"}}
			return p
		}(), "Service Unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			problem.Write(rec, tc.p, "req-3")
			raw := rec.Body.String()
			var body map[string]any
			require.NoError(t, json.Unmarshal([]byte(raw), &body))
			require.Equal(t, tc.detail, body["detail"])
			require.NotContains(t, body, "errors")
			for _, leak := range []string{"password", "sk_live", "10.0.0.5"} {
				require.NotContains(t, raw, leak)
			}
		})
	}
}

func TestWriteSendsTheProblemsHeaders(t *testing.T) {
	t.Parallel()
	res, _ := write(t, problem.Unauthorized("invalid token"), "req-4")
	require.Equal(t, `Bearer error="invalid_token"`, res.Header.Get("WWW-Authenticate"))
	res, _ = write(t, problem.Unavailable("retry"), "req-5")
	require.Equal(t, "5", res.Header.Get("Retry-After"))
}

func TestProblemIsAnErrorThatKeepsItsCause(t *testing.T) {
	t.Parallel()
	cause := errors.New("connection refused")
	p := problem.Unavailable("the database is unavailable").WithCause(cause)
	wrapped := fmt.Errorf("load account: %w", p)

	var got *problem.Problem
	require.ErrorAs(t, wrapped, &got)
	require.Equal(t, 503, got.Status)
	require.ErrorIs(t, wrapped, cause)
	require.Contains(t, p.Error(), "503")
	require.Contains(t, p.Error(), "connection refused", "the cause is in the log text")
}
