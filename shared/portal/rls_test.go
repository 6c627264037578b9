package portal

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
)

// RLS is the second wall: even a query that forgets the tenant filter (here: asks for B's
// tenant explicitly) sees nothing of B when it runs as A's user.
func TestReadsAsTheUserSeeNothingOfAnotherTenant(t *testing.T) {
	t.Parallel()
	env := tickettest.New(t)
	a, b := env.Seed(t, "A", "owner"), env.Seed(t, "B", "owner")
	theirs := env.Create(t, b, "B only")
	ctx := context.Background()
	id, err := env.Issuer.Verifier(t).Verify(ctx, a.Token)
	require.NoError(t, err)
	scope := tenant.Scope{TenantID: a.TenantID, UserID: a.UserID, Role: tenant.Owner, Identity: id}

	err = tenant.ReadAsUser(ctx, env.Pool, scope, func(tx pgx.Tx) error {
		_, found, err := readTicket(ctx, tx, b.TenantID, theirs.ID)
		require.NoError(t, err)
		require.False(t, found)
		page, err := readTickets(ctx, tx, b.TenantID, nil, 10)
		require.NoError(t, err)
		require.Empty(t, page.Tickets)
		_, _, err = readAccount(ctx, tx, b.TenantID)
		require.ErrorIs(t, err, pgx.ErrNoRows)
		syncs, err := readSyncs(ctx, tx, b.TenantID)
		require.NoError(t, err)
		require.Equal(t, "idle", syncs[1].State, "B's pending ticket is invisible")
		return nil
	})
	require.NoError(t, err)
}
