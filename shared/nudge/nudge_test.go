package nudge_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
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
		"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", // as under Lambda: the nudge is on the request's time
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
	sent, failed, _ := n.Counts()
	require.Equal(t, [2]int64{0, 1}, [2]int64{sent, failed})

	none, err := nudge.FromEnv(func(string) (string, bool) { return "", false }, "CRM_PUSH_FUNCTION", nil, nil)
	require.NoError(t, err)
	require.Nil(t, none)
}

// A request whose nudge fails still gets its answer, and the failure is logged once; a failed
// nudge opens no window, so the next request tries again (and is logged once again).
func TestFailedNudgeNeverFailsTheRequest(t *testing.T) {
	t.Parallel()
	_, n, logs := setup(t, "no-such-function")
	h := nudge.Middleware(n, "crm")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nudge.Mark(r.Context(), "crm")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"received":true}`))
	}))
	for i := 1; i <= 2; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		require.JSONEq(t, `{"received":true}`, rec.Body.String())
		require.Equal(t, i, strings.Count(logs.String(), "nudge failed"), logs.String())
		sent, failed, skipped := n.Counts()
		require.Equal(t, [3]int64{0, int64(i), 0}, [3]int64{sent, failed, skipped})
	}
}

// An instance sends at most one nudge per window: requests inside it skip theirs (their jobs
// are covered by the pusher the first one started, which polls for the nudge's cover), and the
// first request after it nudges again. The cover the event carries is the window plus the
// nudge's timeout, and the pusher lingers a few polls longer.
func TestRequestsInsideTheWindowSkipTheirNudge(t *testing.T) {
	t.Parallel()
	fake := lambdafake.New(lambdafake.Function{Name: "crm-push", Run: func(context.Context, []byte) {}})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	env := map[string]string{"AWS_ENDPOINT_URL_LAMBDA": srv.URL, "AWS_REGION": "eu-west-1",
		"AWS_ACCESS_KEY_ID": "AKIDLOCAL", "AWS_SECRET_ACCESS_KEY": "local"}
	clock := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	n, err := nudge.New(nudge.NewLambdaClient(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil),
		nudge.Options{Function: "crm-push", Window: time.Second, Now: func() time.Time { return clock }})
	require.NoError(t, err)
	h := nudge.Middleware(n, "crm")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nudge.Mark(r.Context(), "crm")
	}))
	for _, step := range []struct {
		after          time.Duration
		accepted, skip int64
	}{
		{0, 1, 0},
		{10 * time.Millisecond, 1, 1},
		{980 * time.Millisecond, 1, 2}, // 990 ms after the nudge: still inside the window
		{10 * time.Millisecond, 2, 2},  // 1 s after it: the window is over
		{500 * time.Millisecond, 2, 3},
	} {
		clock = clock.Add(step.after)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe", nil))
		_, _, skipped := n.Counts()
		require.Equal(t, [2]int64{step.accepted, step.skip}, [2]int64{fake.Accepted(), skipped}, "at %s", clock.Format(time.StampMilli))
	}

	var ev events.EventBridgeEvent
	require.NoError(t, json.Unmarshal(n.Payload(), &ev))
	require.Equal(t, nudge.DetailType, ev.DetailType)
	require.Equal(t, time.Second+nudge.DefaultTimeout+250*time.Millisecond, nudge.Linger(ev.DetailType, ev.Detail))
	require.Zero(t, nudge.Linger("Scheduled Event", json.RawMessage(`{}`)), "a scheduled run stops once nothing is due")
}

// Outside Lambda (a net/http server, no AWS_LAMBDA_RUNTIME_API) the nudge is sent after the
// response: the request is answered while Lambda has not answered the nudge yet.
func TestDetachedNudgeIsNotOnTheRequestsTime(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	inv := invokerFunc(func(context.Context, string, []byte) error {
		<-release
		return nil
	})
	n, err := nudge.New(inv, nudge.Options{Function: "crm-push", Detach: true, Timeout: time.Minute})
	require.NoError(t, err)
	h := nudge.Middleware(n, "crm")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nudge.Mark(r.Context(), "crm")
		w.WriteHeader(http.StatusOK)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	sent, _, _ := n.Counts()
	require.Zero(t, sent, "answered before the nudge was")
	close(release)
	require.Eventually(t, func() bool { s, _, _ := n.Counts(); return s == 1 }, 10*time.Second, 5*time.Millisecond)
}

// invokerFunc is a hand-written Invoker.
type invokerFunc func(ctx context.Context, function string, payload []byte) error

func (f invokerFunc) InvokeEvent(ctx context.Context, function string, payload []byte) error {
	return f(ctx, function, payload)
}
