package portal_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/helpdesk"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/storage"
	"github.com/portal-functions/portal-functions/shared/zendesk"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

// R11: the CRM being down does not touch the support path. With the HubSpot fake answering
// 503 to everything, a ticket is created, pushed to the Zendesk fake and readable, and the
// CRM is never called on the way.
func TestSupportPathWorksWhileTheCRMIsDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	crm := hubspotfake.NewTest(t)
	crm.SetMode(hubspotfake.ModeDown)
	desk := zendeskfake.NewTest(t, "agent@example.com", "tok")
	pusher := helpdesk.NewPusher(b.env.Pool,
		zendesk.New(zendesk.Config{BaseURL: desk.URL(), Email: "agent@example.com", APIToken: "tok", Timeout: 5 * time.Second}),
		b.env.Signer, helpdesk.Options{IsMissing: func(err error) bool { return errors.Is(err, storage.ErrNotFound) }})

	created := b.env.Create(t, b.a, "CRM is down, support is not")
	require.NoError(t, pusher.Push(context.Background(), b.a.TenantID, created.ID, false))

	w := b.get(t, b.a, "/v1/tickets/"+created.ID.String())
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "synced", decode[map[string]any](t, w)["status"])
	_, ok := desk.Ticket(created.ID.String())
	require.True(t, ok)
	require.Equal(t, http.StatusOK, b.get(t, b.a, "/v1/account").Code)
	require.Zero(t, crm.Calls(), "no CRM call on the support path")
}
