package portal_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/helpdesk"
	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/web"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

// The sample events of ticket-create, portal-read and support-push decode into their
// functions' input types and succeed against the demo world, after the same re-signing
// `make events` does, so the `make invoke` samples cannot go stale.
func TestSampleEventsRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	require.NoError(t, demo.Seed(ctx, pool))
	files := storagefake.NewTest(t, storagefake.DefaultServiceKey)
	desk := zendeskfake.NewTest(t, zendeskfake.DefaultEmail, zendeskfake.DefaultAPIToken)
	vars := map[string]string{
		"SUPABASE_URL": files.URL(), "SUPABASE_JWT_SECRET": demo.JWTSecret,
		"SUPABASE_SERVICE_ROLE_KEY": storagefake.DefaultServiceKey,
		"ZENDESK_BASE_URL":          desk.URL(), "ZENDESK_EMAIL": zendeskfake.DefaultEmail, "ZENDESK_API_TOKEN": zendeskfake.DefaultAPIToken,
	}
	deps := function.Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler), Metrics: telemetry.NewMetrics(io.Discard, "test"),
		HTTPClient: &http.Client{Timeout: 5 * time.Second}, Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
	create, err := ticket.CreateFunction.Handler(ctx, deps)
	require.NoError(t, err)
	read, err := portal.ReadFunction.Handler(ctx, deps)
	require.NoError(t, err)
	signer := demo.Signer{JWTSecret: demo.JWTSecret, SupabaseURL: files.URL(), TokenTTL: time.Hour}

	for _, tc := range []struct {
		glob    string
		handler http.Handler
		status  int
	}{
		{glob: "ticket-create*.json", handler: create, status: http.StatusCreated},
		{glob: "portal-read*.json", handler: read, status: http.StatusOK},
	} {
		paths, err := filepath.Glob(filepath.Join("..", "..", "events", tc.glob))
		require.NoError(t, err)
		require.NotEmpty(t, paths, tc.glob)
		sort.Strings(paths)
		for _, p := range paths {
			raw, err := os.ReadFile(p)
			require.NoError(t, err)
			raw, ch, err := signer.Refresh(raw)
			require.NoError(t, err, p)
			require.True(t, ch.Token, "%s carries a bearer token to refresh", p)
			var ev events.APIGatewayV2HTTPRequest
			require.NoError(t, json.Unmarshal(raw, &ev), p)
			resp, err := web.Lambda(tc.handler)(ctx, ev)
			require.NoError(t, err)
			require.Equal(t, tc.status, resp.StatusCode, "%s: %s", p, resp.Body)
			require.True(t, strings.HasPrefix(resp.Headers["Content-Type"], "application/json"), p)
		}
	}

	raw, err := os.ReadFile(filepath.Join("..", "..", "events", "support-push.json"))
	require.NoError(t, err)
	var ev events.EventBridgeEvent
	require.NoError(t, json.Unmarshal(raw, &ev))
	var cfg helpdesk.Config
	require.NoError(t, config.LoadFrom(deps.Lookup, &cfg))
	run, err := helpdesk.PushFunction.Build(ctx, deps, cfg)
	require.NoError(t, err)
	runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	sum, err := run(runCtx, ev)
	require.NoError(t, err)
	require.Equal(t, 1, sum.Succeeded, "the sample ticket reaches the helpdesk: %+v", sum)
	require.Len(t, desk.Tickets(), 1)
}
