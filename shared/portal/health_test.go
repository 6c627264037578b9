package portal_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth/authtest"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/portal"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
)

// join adds a user of role to m's tenant and mints their token.
func join(t *testing.T, b bundle, m tickettest.Member, role string) tickettest.Member {
	t.Helper()
	u := tickettest.Member{TenantID: m.TenantID, UserID: uuid.New()}
	exec(t, b, `insert into public.memberships (tenant_id, user_id, role) values ($1, $2, $3)`, u.TenantID, u.UserID, role)
	u.Token = b.env.Issuer.Token(t, u.UserID, authtest.WithEmail(role+"@example.com"))
	return u
}

// seedDeliveries gives tenant A a quiet, healthy day (one applied payment event, one CRM push
// that succeeded, one ticket waiting for the helpdesk) and tenant B a bad one (events stored
// but unapplied, CRM pushes that failed and died, a failing helpdesk subject).
func seedDeliveries(t *testing.T, b bundle) {
	t.Helper()
	ctx := context.Background()
	ev := func(id string, tenant uuid.UUID, outcome string, applied bool) {
		exec(t, b, `insert into private.stripe_events (id, type, created, payload, tenant_id, outcome, received_at, applied_at)
			values ($1, 'invoice.paid', now(), '{}', $2, $3, now() - interval '1 hour', case when $4 then now() end)`,
			id, tenant, outcome, applied)
	}
	ev("evt_a1", b.a.TenantID, "processed", true)
	ev("evt_b1", b.b.TenantID, "processed", false)
	ev("evt_b2", b.b.TenantID, "processed", false)
	ev("evt_b3", b.b.TenantID, "ignored", false)

	ins, err := jobs.NewInserter(b.env.Pool)
	require.NoError(t, err)
	require.NoError(t, db.Tx(ctx, b.env.Pool, func(tx pgx.Tx) error {
		for tenant, events := range map[uuid.UUID][]string{b.a.TenantID: {"evt_a1"}, b.b.TenantID: {"evt_b1", "evt_b2"}} {
			for _, e := range events {
				if err := ins.EnqueueCRMSync(ctx, tx, tenant, e, 0); err != nil {
					return err
				}
			}
		}
		return nil
	}))
	exec(t, b, `update private.river_job set state = 'completed', attempt = 1, finalized_at = now() - interval '10 minutes'
		where args->>'source_event' = 'evt_a1'`)
	exec(t, b, `update private.river_job set state = 'discarded', attempt = 2, finalized_at = now(),
		errors = array[jsonb_build_object('at', now() - interval '5 minutes', 'attempt', 1, 'error', 'HubSpot 500: secret of B'),
		               jsonb_build_object('at', now() - interval '1 minute', 'attempt', 2, 'error', 'HubSpot 500: secret of B')]
		where args->>'source_event' in ('evt_b1', 'evt_b2')`)
	exec(t, b, `update private.sync_status set state = 'synced', last_success_at = now() - interval '10 minutes' where subject = $1`,
		jobs.CRMSubject(b.a.TenantID))
	exec(t, b, `update private.sync_status set state = 'failed', last_error = 'HubSpot 500: secret of B' where subject = $1`,
		jobs.CRMSubject(b.b.TenantID))
	exec(t, b, `insert into private.sync_status (integration, subject, tenant_id, state, last_error)
		values ('helpdesk', 'ticket:b-broken', $1, 'failed', 'Zendesk 422: secret of B')`, b.b.TenantID)
	b.env.Create(t, b.a, "Waiting for the helpdesk")
}

// Issue 7: an owner reads their own tenant's delivery health in /v1/account, and nothing of
// another tenant's; B's owner sees B's failures, so the seed is one that would show.
func TestAccountHealthShowsTheOwnerTheirOwnTenantOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seedDeliveries(t, b)

	w := b.get(t, b.a, "/v1/account")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.NotContains(t, w.Body.String(), "secret of B")
	acc := decode[portal.Account](t, w)
	require.NotNil(t, acc.Health, w.Body.String())
	require.InDelta(t, 86400, acc.Health.WindowSeconds, 0.001, "24 hours unless told otherwise")
	require.Equal(t, portal.HealthWebhook{Received: 1, Processed: 1, SuccessRate: 1}, acc.Health.Webhook)
	require.Len(t, acc.Health.Integrations, 2)
	crm, desk := acc.Health.Integrations[0], acc.Health.Integrations[1]
	require.Equal(t, "crm", crm.Integration)
	require.NotNil(t, crm.LastSuccessAt)
	crm.LastSuccessAt = nil
	require.Equal(t, portal.HealthIntegration{Integration: "crm", Attempts: 1}, crm, "none of B's failures or dead letters")
	require.Equal(t, "helpdesk", desk.Integration)
	require.Equal(t, 1, desk.Pending, "A's own ticket waits")
	require.Zero(t, desk.FailingSubjects, "B's failing ticket is not A's")
	require.Zero(t, desk.DeadLetters)

	w = b.get(t, b.b, "/v1/account")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.NotContains(t, w.Body.String(), "secret of B", "counts and times, never upstream error texts")
	theirs := decode[portal.Account](t, w).Health
	require.NotNil(t, theirs)
	require.Equal(t, portal.HealthWebhook{Received: 3, Processed: 2, Ignored: 1, Unapplied: 2, SuccessRate: 1}, theirs.Webhook)
	require.Equal(t, portal.HealthIntegration{Integration: "crm", Attempts: 4, Failures: 4, DeadLetters: 2, FailingSubjects: 1},
		theirs.Integrations[0])
	require.Equal(t, 1, theirs.Integrations[1].FailingSubjects)
	require.Zero(t, theirs.Integrations[1].Pending, "A's waiting ticket is not B's")
}

// Admins and members get their account as before, without the health section: not a 403.
func TestAccountHealthIsForOwnersOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seedDeliveries(t, b)
	for _, role := range []string{"admin", "member"} {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			w := b.get(t, join(t, b, b.a, role), "/v1/account")
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			raw := decode[map[string]any](t, w)
			require.NotContains(t, raw, "health")
			require.Equal(t, role, raw["role"])
			require.Len(t, raw["syncs"], 2, "the rest of the account is theirs")
		})
	}
}
