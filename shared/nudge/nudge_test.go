package nudge_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/nudge"
	"github.com/portal-functions/portal-functions/shared/nudge/lambdafake"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
)

// setup is a Lambda Invoke stand-in knowing "crm-push" (whose runs are counted) and a Nudger
// of fn built from the environment as a function builds it, logging to logs.
func setup(t *testing.T, fn string) (*lambdafake.Server, *nudge.Nudger, *telemetrytest.Buffer) {
	t.Helper()
	fake := lambdafake.New(lambdafake.Function{Name: "crm-push", Run: func(context.Context, []byte) {}})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	env := map[string]string{
		"CRM_PUSH_FUNCTION": fn, "AWS_ENDPOINT_URL_LAMBDA": srv.URL, "AWS_REGION": "eu-west-1",
		"AWS_ACCESS_KEY_ID": "AKIDLOCAL", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local",
	}
	logs := &telemetrytest.Buffer{}
	n, err := nudge.FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, "CRM_PUSH_FUNCTION",
		&http.Client{Timeout: time.Second}, telemetry.NewLogger(logs, "payment-webhook", slog.LevelInfo))
	require.NoError(t, err)
	return fake, n, logs
}

// The middleware nudges once after a request that queued a job of its queue and succeeded,
// and never after one that queued nothing, queued for another queue, or failed (rolled back).
func TestMiddlewareNudgesOnlyAfterASuccessfulRequestThatQueued(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		queue  string
		status int
		nudged bool
	}{
		{"queued and committed", "crm", http.StatusOK, true},
		{"queued twice, one nudge", "crm,crm", http.StatusOK, true},
		{"nothing queued", "", http.StatusOK, false},
		{"another queue", "helpdesk", http.StatusOK, false},
		{"failed after queueing", "crm", http.StatusServiceUnavailable, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake, n, _ := setup(t, "arn:aws:lambda:eu-west-1:123456789012:function:crm-push")
			h := nudge.Middleware(n, "crm")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for _, q := range strings.Split(tc.queue, ",") {
					nudge.Mark(r.Context(), q)
				}
				w.WriteHeader(tc.status)
			}))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe", nil))
			require.Equal(t, tc.status, rec.Code)
			want := int64(0)
			if tc.nudged {
				want = 1
			}
			require.Equal(t, want, fake.Accepted())
		})
	}
}

// A nudge Lambda refuses (unknown function: 404 ResourceNotFoundException) is an error for the
// caller's information, logged once; without CRM_PUSH_FUNCTION there is no Nudger at all.
func TestFailedNudgeIsLoggedOnce(t *testing.T) {
	t.Parallel()
	_, n, logs := setup(t, "no-such-function")
	err := n.Nudge(context.Background())
	require.ErrorContains(t, err, "ResourceNotFoundException")
	require.Equal(t, 1, strings.Count(logs.String(), "nudge failed"), logs.String())
	sent, failed := n.Counts()
	require.Equal(t, [2]int64{0, 1}, [2]int64{sent, failed})

	none, err := nudge.FromEnv(func(string) (string, bool) { return "", false }, "CRM_PUSH_FUNCTION", nil, nil)
	require.NoError(t, err)
	require.Nil(t, none)
}
