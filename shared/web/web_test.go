package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
	"github.com/portal-functions/portal-functions/shared/web"
)

type webBundle struct {
	logs    *telemetrytest.Buffer
	handler http.Handler
}

// setupWeb serves a small API behind Wrap, as every function does.
func setupWeb(t *testing.T, maxBody int64) webBundle {
	t.Helper()
	logs := &telemetrytest.Buffer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/tickets/{id}", func(w http.ResponseWriter, r *http.Request) {
		web.AddLogAttrs(r.Context(), slog.String("tenant_id", "t-1"))
		web.JSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id"), "request_id": web.RequestID(r.Context())})
	})
	mux.HandleFunc("POST /v1/tickets", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			web.Error(w, r, fmt.Errorf("read ticket: %w", err))
			return
		}
		web.JSON(w, http.StatusCreated, map[string]int{"bytes": len(body)})
	})
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) {
		panic("secret-internal-state at db.go:42")
	})
	mux.HandleFunc("GET /fail/{kind}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("kind") {
		case "db":
			web.Error(w, r, fmt.Errorf("insert ticket: %w", db.ErrUnavailable))
		case "internal":
			web.Error(w, r, errors.New(`pq: relation "private.secret_table" does not exist`))
		case "notfound":
			web.Error(w, r, fmt.Errorf("load: %w", problem.NotFound("no such ticket")))
		case "timeout":
			web.Error(w, r, fmt.Errorf("query: %w", context.DeadlineExceeded))
		}
	})
	logger := telemetry.NewLogger(logs, "test-fn", slog.LevelInfo)
	return webBundle{logs: logs, handler: web.Wrap(web.Route(mux), web.Options{Logger: logger, MaxBody: maxBody})}
}

func (b webBundle) do(r *http.Request) *http.Response {
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, r)
	return rec.Result()
}

func decodeProblem(t *testing.T, res *http.Response) problem.Problem {
	t.Helper()
	require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
	var p problem.Problem
	require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
	return p
}

func TestWrapGivesEveryRequestAnIDAndEchoesIt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header string
		lambda string
		want   func(t *testing.T, id string)
	}{
		{"from X-Request-Id", "portal-req-123", "", func(t *testing.T, id string) { require.Equal(t, "portal-req-123", id) }},
		{"from the Lambda context", "", "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", func(t *testing.T, id string) {
			require.Equal(t, "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", id)
		}},
		{"header wins over Lambda", "portal-req-9", "lambda-id", func(t *testing.T, id string) { require.Equal(t, "portal-req-9", id) }},
		{"generated", "", "", func(t *testing.T, id string) { require.Regexp(t, `^[0-9a-f]{32}$`, id) }},
		{"unsafe header replaced", "bad id\nwith newline", "", func(t *testing.T, id string) { require.Regexp(t, `^[0-9a-f]{32}$`, id) }},
		{"oversized header replaced", strings.Repeat("a", 200), "", func(t *testing.T, id string) { require.Regexp(t, `^[0-9a-f]{32}$`, id) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupWeb(t, 0)
			r := httptest.NewRequest(http.MethodGet, "/v1/tickets/42", nil)
			if tc.header != "" {
				r.Header.Set(web.HeaderRequestID, tc.header)
			}
			if tc.lambda != "" {
				r = r.WithContext(lambdacontext.NewContext(r.Context(), &lambdacontext.LambdaContext{AwsRequestID: tc.lambda}))
			}
			res := b.do(r)
			require.Equal(t, http.StatusOK, res.StatusCode)
			id := res.Header.Get(web.HeaderRequestID)
			tc.want(t, id)
			var body map[string]string
			require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
			require.Equal(t, id, body["request_id"], "the handler sees the id it echoes")
			lines := b.logs.Lines(t)
			require.Len(t, lines, 1)
			require.Equal(t, id, lines[0]["request_id"])
		})
	}
}

func TestWrapLogsOneLinePerRequest(t *testing.T) {
	t.Parallel()
	b := setupWeb(t, 0)
	r := httptest.NewRequest(http.MethodGet, "/v1/tickets/42", nil)
	r.Header.Set(web.HeaderRequestID, "req-log-1")
	r.Header.Set("Authorization", "Bearer eyJ.secret.token")
	res := b.do(r)
	require.Equal(t, http.StatusOK, res.StatusCode)

	lines := b.logs.Lines(t)
	require.Len(t, lines, 1)
	line := lines[0]
	require.Equal(t, "request", line["msg"])
	require.Equal(t, "INFO", line["level"])
	require.Equal(t, "test-fn", line["function"])
	require.Equal(t, "req-log-1", line["request_id"])
	require.Equal(t, "GET /v1/tickets/{id}", line["route"], "the route pattern, not the raw path, groups requests")
	require.Equal(t, "/v1/tickets/42", line["path"])
	require.Equal(t, "GET", line["method"])
	require.EqualValues(t, 200, line["status"])
	require.Contains(t, line, "duration_ms")
	require.Equal(t, "t-1", line["tenant_id"], "attributes handlers add land on the same line")
	require.NotContains(t, b.logs.String(), "eyJ.secret.token")
}

func TestWrapSetsSecurityAndCacheHeadersOnEveryAnswer(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/v1/tickets/42", "/fail/notfound", "/panic", "/nowhere"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			b := setupWeb(t, 0)
			res := b.do(httptest.NewRequest(http.MethodGet, path, nil))
			require.Equal(t, "private, no-store", res.Header.Get("Cache-Control"))
			require.Contains(t, res.Header.Values("Vary"), "Authorization")
			require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
			require.Equal(t, "DENY", res.Header.Get("X-Frame-Options"))
			require.NotEmpty(t, res.Header.Get("Strict-Transport-Security"))
			require.NotEmpty(t, res.Header.Get("Content-Security-Policy"))
		})
	}
}

func TestWrapRefusesBodiesOverTheLimit(t *testing.T) {
	t.Parallel()
	const limit = 1024
	tests := []struct {
		name    string
		size    int
		chunked bool
		want    int
	}{
		{"at the limit", limit, false, http.StatusCreated},
		{"declared over the limit", limit + 1, false, http.StatusRequestEntityTooLarge},
		{"streamed over the limit", limit * 4, true, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupWeb(t, limit)
			var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("a"), tc.size))
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: no Content-Length
			}
			r := httptest.NewRequest(http.MethodPost, "/v1/tickets", body)
			if tc.chunked {
				r.ContentLength = -1
			}
			res := b.do(r)
			require.Equal(t, tc.want, res.StatusCode)
			if tc.want == http.StatusRequestEntityTooLarge {
				p := decodeProblem(t, res)
				require.Equal(t, problem.TypeTooLarge, p.Type)
				require.Contains(t, p.Detail, "1024 bytes")
				require.Equal(t, res.Header.Get(web.HeaderRequestID), p.RequestID)
			}
		})
	}
}

func TestWrapTurnsAPanicIntoA500WithoutInternals(t *testing.T) {
	t.Parallel()
	b := setupWeb(t, 0)
	r := httptest.NewRequest(http.MethodGet, "/panic", nil)
	r.Header.Set(web.HeaderRequestID, "req-panic")
	res := b.do(r)
	require.Equal(t, http.StatusInternalServerError, res.StatusCode)
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.NotContains(t, string(raw), "secret-internal-state")
	require.NotContains(t, string(raw), "goroutine")
	var p problem.Problem
	require.NoError(t, json.Unmarshal(raw, &p))
	require.Equal(t, "internal error", p.Detail)
	require.Equal(t, "req-panic", p.RequestID)

	logs := b.logs.String()
	require.Contains(t, logs, "secret-internal-state", "the cause goes to the log")
	require.Contains(t, logs, "goroutine", "with the stack")
	lines := b.logs.Lines(t)
	last := lines[len(lines)-1]
	require.Equal(t, "request", last["msg"])
	require.EqualValues(t, 500, last["status"])
	require.Equal(t, "ERROR", last["level"])
}

func TestErrorMapsCausesToStatusesInOnePlace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind       string
		status     int
		detail     string
		logsReason bool
	}{
		{"notfound", http.StatusNotFound, "no such ticket", false},
		{"db", http.StatusServiceUnavailable, "Service Unavailable", true},
		{"timeout", http.StatusServiceUnavailable, "Service Unavailable", true},
		{"internal", http.StatusInternalServerError, "internal error", true},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			b := setupWeb(t, 0)
			res := b.do(httptest.NewRequest(http.MethodGet, "/fail/"+tc.kind, nil))
			require.Equal(t, tc.status, res.StatusCode)
			p := decodeProblem(t, res)
			require.Equal(t, tc.status, p.Status)
			require.Equal(t, tc.detail, p.Detail)
			require.NotEmpty(t, p.RequestID)
			if tc.status == http.StatusServiceUnavailable {
				require.NotEmpty(t, res.Header.Get("Retry-After"), "a client is told to retry")
			}
			if tc.logsReason {
				require.Contains(t, b.logs.String(), "request failed")
			}
			if tc.kind == "internal" {
				require.Contains(t, b.logs.String(), "private.secret_table", "the log keeps the cause the body hides")
			}
		})
	}
}
