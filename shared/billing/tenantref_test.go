package billing_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// The inbox's tenant has no foreign key (issue 12: its check ran on every delivery), yet no
// event names a tenant that does not exist: a writer other than the webhook's record is
// refused as the foreign key refused it (foreign_key_violation, nothing written), and a
// tenant deleted while a delivery holds its billing account waits for the delivery and then
// takes the tenant off its event, as on delete set null did.
func TestTheInboxNamesOnlyTenantsThatExist(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	refused := func(sql string, args ...any) {
		t.Helper()
		_, err := b.pool.Exec(ctx, sql, args...)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "%v", err)
		require.Equal(t, "23503", pgErr.Code, pgErr.Message)
	}
	missing := "00000000-0000-4000-8000-000000000001"
	refused(`insert into private.stripe_events (id, type, created, outcome, tenant_id, raw_payload)
		values ('evt_nobody', 'invoice.paid', now(), 'processed', $1, '{}')`, missing)
	refused(`insert into private.stripe_events (id, type, created, outcome, tenant_id, raw_payload, received_at)
		values ('evt_nobody_old', 'invoice.paid', now(), 'processed', $1, '{}', now() - interval '9 days')`, missing)
	b.exec(t, `insert into private.stripe_events (id, type, created, outcome, raw_payload)
		values ('evt_unmatched', 'invoice.paid', now(), 'unmatched', '{}')`)
	refused(`update private.stripe_events set tenant_id = $1 where id = 'evt_unmatched'`, missing)
	require.Zero(t, b.count(t, `select count(*) from private.stripe_events where tenant_id is not null`))

	// A delivery holds the tenant's account and records its event; the tenant's deletion waits.
	b.exec(t, `insert into private.billing_accounts (tenant_id) values ($1)`, b.tenantID)
	conn, err := pgx.ConnectConfig(ctx, b.pool.Config().ConnConfig.Copy())
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `select from private.billing_accounts where tenant_id = $1 for update`, b.tenantID)
	require.NoError(t, err)
	// The live delivery's record (its count goes on the account: no write that references
	// the tenant).
	_, err = tx.Exec(ctx, `select private.record_stripe_event_with_facets('evt_held', 'invoice.paid', null, now(), false,
		null, '{}'::bytea, 'processed', $1, false, null, null, null, null, null, null, null, null, null, null, null, null,
		null, null, null, null, null, null, null, false)`, b.tenantID)
	require.NoError(t, err)
	deleted := make(chan error, 1)
	go func() {
		_, err := b.pool.Exec(ctx, `delete from public.tenants where id = $1`, b.tenantID)
		deleted <- err
	}()
	select {
	case err := <-deleted:
		t.Fatalf("the tenant's deletion did not wait for the delivery holding its account: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-deleted)
	require.Equal(t, 1, b.count(t, `select count(*) from private.stripe_events where id = 'evt_held' and tenant_id is null`),
		"the deleted tenant's event stays, without a tenant")
	require.Zero(t, b.count(t, `select count(*) from private.stripe_events e
		where e.tenant_id is not null and not exists (select from public.tenants t where t.id = e.tenant_id)`))
}
