package crm_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/crm"
	"github.com/portal-functions/portal-functions/shared/nudge/lambdafake"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
)

// nudgeEnv points the webhook's nudge at a Lambda Invoke stand-in (the SDK's endpoint
// override), as Lambda's environment would name crm-push.
func nudgeEnv(url string) map[string]string {
	return map[string]string{
		"CRM_PUSH_FUNCTION":       "arn:aws:lambda:eu-west-1:123456789012:function:crm-push",
		"AWS_ENDPOINT_URL_LAMBDA": url,
		"AWS_REGION":              "eu-west-1",
		"AWS_ACCESS_KEY_ID":       "AKIDLOCAL",
		"AWS_SECRET_ACCESS_KEY":   "local-secret",
		"AWS_SESSION_TOKEN":       "local-session",
		// Lambda's Runtime API is set: the nudge is sent before the response, as in Lambda.
		"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
	}
}

// A payment's webhook commits, then nudges crm-push (an asynchronous invoke through the real
// SDK to the Lambda stand-in, which runs the real crm-push function): HubSpot has the new
// state without any scheduled run. A replay queues nothing, so it nudges nothing.
func TestNudgeAfterCommitPushesWithoutTheSchedule(t *testing.T) {
	t.Parallel()
	var e e2e
	lambda := lambdafake.New(lambdafake.Function{Name: "crm-push", Concurrency: 2, Run: func(ctx context.Context, payload []byte) {
		var ev events.EventBridgeEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			t.Errorf("nudge payload: %v", err)
			return
		}
		if _, err := e.push(ctx, ev); err != nil && ctx.Err() == nil {
			t.Errorf("nudged crm-push: %v", err)
		}
	}})
	srv := httptest.NewServer(lambda)
	t.Cleanup(srv.Close)
	e = setupE2EWith(t, nudgeEnv(srv.URL), &telemetrytest.Buffer{})
	t.Cleanup(lambda.Close) // before the database closes

	tenantID, customer := e.customer(t, "nudged@acme.test")
	payload := e.subscriptionUpdated(t, customer, "active", "pro", time.Now().AddDate(0, 1, 0))
	code, outcome := e.deliver(payload)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "processed", outcome)
	require.EqualValues(t, 1, lambda.Accepted(), "one nudge, sent before the webhook answered")
	require.Eventually(t, func() bool {
		c, ok := e.fake.Company(tenantID.String())
		return ok && c.Properties[crm.PropPlan] == "pro"
	}, 10*time.Second, 10*time.Millisecond, "the nudged crm-push pushed the change")

	code, outcome = e.deliver(payload)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "duplicate", outcome)
	require.EqualValues(t, 1, lambda.Accepted(), "a replay queues nothing and nudges nothing")
}

// A nudge that cannot be sent (Lambda unreachable) does not fail the delivery: the webhook
// answers 200, logs one warning, and the job waits for the schedule, which delivers it.
func TestFailedNudgeNeverFailsTheWebhook(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens: every invoke fails to connect
	logs := &telemetrytest.Buffer{}
	e := setupE2EWith(t, nudgeEnv(srv.URL), logs)

	tenantID, customer := e.customer(t, "unnudged@acme.test")
	code, outcome := e.deliver(e.subscriptionUpdated(t, customer, "active", "pro", time.Now().AddDate(0, 1, 0)))
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "processed", outcome)
	require.Equal(t, 1, strings.Count(logs.String(), "nudge failed"), "logged once: %s", logs)

	sum, err := e.push(context.Background(), scheduledEvent(t))
	require.NoError(t, err)
	require.Equal(t, 1, sum.Succeeded, "the schedule pushes what the nudge could not")
	_, ok := e.fake.Company(tenantID.String())
	require.True(t, ok)
}
