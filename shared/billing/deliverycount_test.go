package billing_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/health"
)

// requireCountsEqualInbox compares the owner's webhook health as kept (the counter table plus
// the accounts' current buckets: private.webhook_delivery_buckets) with a recount of the
// inbox, per tenant and 5-minute bucket over the counters' 8 days, and health.Check's two
// reads of tenantID.
func (b *bundle) requireCountsEqualInbox(t *testing.T, tenantID uuid.UUID, why string) {
	t.Helper()
	recount := b.strings(t, `
		select tenant_id || '/' || date_bin('5 minutes', received_at, '2000-01-01') || ': ' ||
		       count(*) || ' ' || count(*) filter (where outcome = 'processed') || ' ' ||
		       count(*) filter (where outcome = 'ignored') || ' ' || count(*) filter (where outcome = 'unmatched') || ' ' ||
		       count(*) filter (where outcome = 'refused') || ' ' ||
		       count(*) filter (where outcome = 'processed' and applied_at is null)
		from private.stripe_events where tenant_id is not null and received_at >= now() - interval '8 days'
		group by tenant_id, date_bin('5 minutes', received_at, '2000-01-01') order by 1`)
	kept := b.strings(t, `
		select tenant_id || '/' || bucket || ': ' || sum(received) || ' ' || sum(processed) || ' ' || sum(ignored) || ' ' ||
		       sum(unmatched) || ' ' || sum(refused) || ' ' || sum(unapplied)
		from private.webhook_delivery_buckets group by tenant_id, bucket
		having sum(received) <> 0 or sum(processed) <> 0 or sum(ignored) <> 0 or sum(unmatched) <> 0
		    or sum(refused) <> 0 or sum(unapplied) <> 0
		order by 1`)
	require.Equal(t, recount, kept, "per tenant and bucket: %s", why)
	k, r, err := health.Check(context.Background(), b.pool, tenantID)
	require.NoError(t, err)
	require.True(t, health.Agree(k, r), "%s: kept %+v, recount %+v", why, k.Webhook, r.Webhook)
}

// deliverPaid sends a new invoice.paid of the bundle's customer, created at, and requires it
// processed.
func (b *bundle) deliverPaid(t *testing.T, at time.Time) string {
	t.Helper()
	id := "evt_" + randomID(24)
	paid := b.stripeEvent(t, id, billing.TypeInvoicePaid, at,
		b.invoice(t, invoiceSpec{id: "in_" + randomID(14), customer: b.customer, subscription: "sub_1", amount: 4900, paid: true}, at))
	rec := b.deliver(t, paid, time.Now(), testSecret)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	return id
}

// A live processed delivery (an invoice's or a subscription's) counts itself on its tenant's
// billing account (the current 5-minute bucket, in the account's own update) and moves the
// finished bucket into private.webhook_delivery_counts when it lands in a new one; every other
// writer writes the table. Whatever the writer, the kept counts stay the inbox's, bucket by bucket: deliveries
// across a roll-over, another writer's insert, an event deleted or moved to another tenant
// while its count is on the account, reconcile applying an unmatched event, the account row
// deleted, ops' rebuild, and the tenant deleted.
func TestWebhookHealthCountsStayTheInboxsWhateverWritesThem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	created := time.Now().Add(-time.Hour).Truncate(time.Second)
	paid := func() string { // each a second newer than the last, so each saves the payment facet
		created = created.Add(time.Second)
		return b.deliverPaid(t, created)
	}
	updated := func() string { // a subscription update, saved and counted by its own record
		created = created.Add(time.Second)
		id := "evt_" + randomID(24)
		rec := b.deliver(t, b.stripeEvent(t, id, billing.TypeSubscriptionUpdated, created,
			b.subscription(t, subSpec{id: "sub_1", customer: b.customer, status: billing.StatusActive, price: "price_pro",
				periodEnd: created.Add(720 * time.Hour)})), time.Now(), testSecret)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		return id
	}
	held := func() (bucket time.Time, n int) {
		t.Helper()
		require.NoError(t, b.pool.QueryRow(ctx, `select delivery_bucket, bucket_deliveries from private.billing_accounts
			where tenant_id = $1`, b.tenantID).Scan(&bucket, &n))
		return bucket, n
	}

	var ids []string
	ids = append(ids, paid(), updated(), paid())
	_, n := held()
	require.Positive(t, n, "the account holds the current bucket's deliveries")
	require.Equal(t, 3, n+b.count(t, `select coalesce(sum(received), 0)::int from private.webhook_delivery_counts
		where tenant_id = $1`, b.tenantID), "each delivery counted once, on the account or in the table")
	b.requireCountsEqualInbox(t, b.tenantID, "three deliveries")

	// The deliveries so far were received a bucket earlier (moved with the triggers off, as
	// if the clock had passed): the next delivery moves the account's bucket into the table.
	err := db.Tx(ctx, b.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			set local session_replication_role = replica;
			update private.stripe_events set received_at = received_at - interval '5 minutes' where tenant_id = '`+b.tenantID.String()+`';
			update private.webhook_delivery_counts set bucket = bucket - interval '5 minutes' where tenant_id = '`+b.tenantID.String()+`';
			update private.billing_accounts set delivery_bucket = delivery_bucket - interval '5 minutes' where tenant_id = '`+b.tenantID.String()+`'`)
		return err
	})
	require.NoError(t, err)
	earlier, moved := held()
	b.requireCountsEqualInbox(t, b.tenantID, "moved a bucket back")
	ids = append(ids, updated(), paid()) // the subscription's record rolls the bucket over
	now, n := held()
	require.True(t, now.After(earlier), "the account moved to the new bucket")
	require.Equal(t, moved, b.count(t, `select received from private.webhook_delivery_counts where tenant_id = $1 and bucket = $2`,
		b.tenantID, earlier), "the finished bucket went into the table")
	require.Positive(t, n)
	b.requireCountsEqualInbox(t, b.tenantID, "a delivery in a new bucket")

	// Another writer inserts into the inbox (the row trigger counts it into the table).
	b.exec(t, `insert into private.stripe_events (id, type, created, outcome, tenant_id, raw_payload)
		values ($1, 'invoice.paid', now(), 'ignored', $2, '{}')`, "evt_"+randomID(24), b.tenantID)
	b.requireCountsEqualInbox(t, b.tenantID, "another writer's insert")

	// The newest delivery, counted on the account, deleted; another moved to a second tenant.
	b.exec(t, `delete from private.stripe_events where id = $1`, ids[len(ids)-1])
	b.requireCountsEqualInbox(t, b.tenantID, "a delivery counted on the account deleted")
	other := b.newTenant(t, false)
	b.exec(t, `update private.stripe_events set tenant_id = $2 where id = $1`, ids[len(ids)-2], other)
	b.requireCountsEqualInbox(t, b.tenantID, "a delivery moved to another tenant")
	b.requireCountsEqualInbox(t, other, "a delivery moved in from another tenant")

	// Reconcile applies an event that arrived unmatched: it moves to the tenant as processed.
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	stored := "evt_" + randomID(24)
	b.store(t, stored, billing.TypeInvoicePaid, at, b.stripeEvent(t, stored, billing.TypeInvoicePaid, at,
		b.invoice(t, invoiceSpec{id: "in_" + randomID(14), customer: b.customer, subscription: "sub_1", amount: 4900, paid: true}, at)),
		"unmatched", nil)
	res, err := b.processor(t).ApplyStored(ctx, stored)
	require.NoError(t, err)
	require.Equal(t, billing.OutcomeProcessed, res.Outcome)
	b.requireCountsEqualInbox(t, b.tenantID, "reconcile applied an unmatched event")

	// A delivery after all that, then the account row deleted with the tenant kept: the
	// account's bucket goes into the table.
	paid()
	b.requireCountsEqualInbox(t, b.tenantID, "a delivery after the other writers")
	b.exec(t, `delete from private.billing_accounts where tenant_id = $1`, b.tenantID)
	b.requireCountsEqualInbox(t, b.tenantID, "the account row deleted")
	paid() // creates the account again
	b.requireCountsEqualInbox(t, b.tenantID, "a delivery to a new account row")

	// Ops' rebuild writes the table so that table and account together are the inbox's.
	b.exec(t, `delete from private.webhook_delivery_counts`)
	require.NoError(t, health.Rebuild(ctx, b.pool, b.tenantID))
	require.NoError(t, health.Rebuild(ctx, b.pool, other))
	b.requireCountsEqualInbox(t, b.tenantID, "rebuilt for the tenant")
	paid()
	require.NoError(t, health.Rebuild(ctx, b.pool, uuid.Nil))
	b.requireCountsEqualInbox(t, b.tenantID, "rebuilt for all")

	// The tenant deleted: its counts leave with it and the cascade does not fail.
	b.exec(t, `delete from public.tenants where id = $1`, b.tenantID)
	b.requireCountsEqualInbox(t, other, "the tenant deleted")
	require.Zero(t, b.count(t, `select count(*) from private.webhook_delivery_buckets where tenant_id = $1`, b.tenantID))
}
