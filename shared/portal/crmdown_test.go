package portal_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/crm"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/helpdesk"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/storage/storagefake"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

// R11: the CRM being down does not touch the support path. The tenant's CRM push is queued and
// crm-push really tries it against a HubSpot answering 503 to everything; meanwhile a ticket is
// created, support-push delivers it to Zendesk, and the portal reads it as delivered, while the
// account tells the truth about both: the CRM is being retried, support tickets went through.
func TestSupportPathWorksWhileTheCRMIsDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	hub := hubspotfake.NewTest(t)
	hub.SetMode(hubspotfake.ModeDown)
	desk := zendeskfake.NewTest(t, zendeskfake.DefaultEmail, zendeskfake.DefaultAPIToken)
	vars := map[string]string{
		"HUBSPOT_ACCESS_TOKEN": hub.AccessToken(), "HUBSPOT_BASE_URL": hub.URL(),
		"ZENDESK_BASE_URL": desk.URL(), "ZENDESK_EMAIL": zendeskfake.DefaultEmail, "ZENDESK_API_TOKEN": zendeskfake.DefaultAPIToken,
		"SUPABASE_URL": b.env.Storage.URL(), "SUPABASE_SERVICE_ROLE_KEY": storagefake.DefaultServiceKey,
	}
	deps := function.Deps{Pool: b.env.Pool, Logger: slog.New(slog.DiscardHandler), Metrics: telemetry.NewMetrics(io.Discard, "test"),
		HTTPClient: &http.Client{Timeout: 5 * time.Second}, Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}

	ins, err := jobs.NewInserter(b.env.Pool)
	require.NoError(t, err)
	require.NoError(t, db.Tx(ctx, b.env.Pool, func(tx pgx.Tx) error {
		return ins.EnqueueCRMSync(ctx, tx, b.a.TenantID, "evt_crm_down", 0)
	}))
	var crmCfg crm.PushConfig
	require.NoError(t, config.LoadFrom(deps.Lookup, &crmCfg))
	crmRun, err := crm.Push.RunConfig(deps, crmCfg)
	require.NoError(t, err)
	sum, err := jobs.Run(ctx, b.env.Pool, crmRun)
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 1, Failed: 1}, sum, "the CRM push was tried and failed")
	require.NotZero(t, hub.Calls())

	created := b.env.Create(t, b.a, "CRM is down, support is not",
		ticket.AttachmentRequest{Name: "a.txt", Size: 1, ContentType: "text/plain"})
	var deskCfg helpdesk.Config
	require.NoError(t, config.LoadFrom(deps.Lookup, &deskCfg))
	push, err := helpdesk.PushFunction.Build(ctx, deps, deskCfg)
	require.NoError(t, err)
	sum, err = push(ctx, events.EventBridgeEvent{})
	require.NoError(t, err)
	require.Equal(t, jobs.Summary{Worked: 1, Succeeded: 1}, sum)
	_, ok := desk.Ticket(created.ID.String())
	require.True(t, ok, "the ticket reached Zendesk")

	w := b.get(t, b.a, "/v1/tickets/"+created.ID.String())
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "synced", decode[portal.Ticket](t, w).Status)

	w = b.get(t, b.a, "/v1/account")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	syncs := map[string]string{}
	for _, s := range decode[portal.Account](t, w).Syncs {
		syncs[s.Integration] = s.Message
	}
	require.Equal(t, map[string]string{
		"crm":      "CRM update failed, we are retrying",
		"helpdesk": "support tickets delivered",
	}, syncs)
}
