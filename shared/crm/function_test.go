package crm_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/crm"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/jobs"
)

func TestPushFunctionWorksTheQueueOnItsSampleEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := newTenant(t, b, "sample@acme.test", "pro", "active")
	enqueue(t, b, id, "evt_sample")

	raw, err := os.ReadFile(filepath.Join("..", "..", "events", "crm-push.json"))
	require.NoError(t, err)
	var ev events.EventBridgeEvent
	require.NoError(t, json.Unmarshal(raw, &ev))
	require.Equal(t, "Scheduled Event", ev.DetailType)

	env := map[string]string{"HUBSPOT_ACCESS_TOKEN": hubspotfake.DefaultAccessToken, "HUBSPOT_BASE_URL": b.fake.URL()}
	var cfg crm.PushConfig
	require.NoError(t, config.LoadFrom(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &cfg))
	deps := function.Deps{Name: "crm-push", Pool: b.pool, Logger: function.NewLogger("crm-push", "error"), HTTPClient: &http.Client{Timeout: 5 * time.Second}}
	handler, err := crm.PushFunction.Build(context.Background(), deps, cfg)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // Lambda's deadline
	defer cancel()
	sum, err := handler(ctx, ev)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, sum)
	_, ok := b.fake.Contact("sample@acme.test")
	require.True(t, ok)
}

func TestPushConfigNamesAMissingToken(t *testing.T) {
	t.Parallel()
	var cfg crm.PushConfig
	err := config.LoadFrom(func(string) (string, bool) { return "", false }, &cfg)
	var ce *config.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, []string{"HUBSPOT_ACCESS_TOKEN"}, ce.Missing)
}

func TestRunContinuouslyPushesWhatArrives(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := b.cfg
	cfg.Time = nil
	go func() { done <- jobs.RunContinuously(ctx, b.pool, cfg) }()

	id := newTenant(t, b, "live@acme.test", "pro", "active")
	enqueue(t, b, id, "evt_live")
	require.Eventually(t, func() bool {
		_, ok := b.fake.Contact("live@acme.test")
		return ok
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
