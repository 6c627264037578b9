package billing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
)

// A live delivery's save held for its record (one PL/pgSQL call) leaves the projection, the
// registers, the inbox and the webhook health counts exactly as the separate calls it replaces
// left them: the same changes go to two tenants of the same history, one saved the way a live
// delivery saves (saveAccount with held, then finish), the other through
// private.save_billing_subscription, save_billing_account or save_billing_invoice_facets and
// private.record_stripe_event, and every column of both tenants' rows is compared after each
// change. The steps cover each way saveAccount can go: a register inserted and updated, an
// absent status, a second subscription, a register the account does not show, an ended one,
// an invoice, and a subscription change that also carries an email.
func TestHeldSavesWriteWhatTheSeparateCallsWrote(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	const customer = "cus_held"
	var held, separate uuid.UUID
	for _, id := range []*uuid.UUID{&held, &separate} {
		require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('t') returning id`).Scan(id))
		_, err := pool.Exec(ctx, `insert into private.billing_accounts (tenant_id) values ($1)`, *id)
		require.NoError(t, err)
	}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(s int) Stamp {
		return Stamp{Created: t0.Add(time.Duration(s) * time.Second), EventID: fmt.Sprintf("evt_%02d", s)}
	}
	sub := func(st Stamp, id, price string, status *string, cancel bool) Change {
		return Change{Stamp: st, CustomerID: ptr(customer), SubscriptionID: id, Status: status,
			Subscription: &SubscriptionFacet{PriceID: price, Plan: price + "_plan", CurrentPeriodEnd: t0.Add(720 * time.Hour), CancelAtPeriodEnd: cancel}}
	}
	withEmail := sub(at(80), "sub_c", "price_c2", ptr("active"), false)
	withEmail.Email = ptr("payer@example.com")
	const (
		narrow = "private.record_stripe_event_with_subscription"
		facets = "private.record_stripe_event_with_facets"
		whole  = "" // the account saved whole, the record on its own
	)
	for _, step := range []struct {
		name   string
		change Change
		via    string
	}{
		{"a first subscription event inserts its register", sub(at(10), "sub_a", "price_a", ptr("incomplete"), false), narrow},
		{"a newer one updates it", sub(at(20), "sub_a", "price_b", ptr(StatusActive), true), narrow},
		{"one without a status keeps the register's", sub(at(30), "sub_a", "price_b", nil, false), narrow},
		{"a second subscription, newer, is shown", sub(at(40), "sub_b", "price_c", ptr("trialing"), false), narrow},
		{"an older event of the first changes a register the account does not show", sub(at(35), "sub_a", "price_d", ptr(StatusPastDue), false), facets},
		{"the shown one ends: the other is shown again", sub(at(50), "sub_b", "price_c", ptr(StatusCanceled), false), whole},
		{"a register without any status, newest", sub(at(60), "sub_c", "price_c", nil, false), narrow},
		{"an invoice", Change{Stamp: at(70), CustomerID: ptr(customer), Email: ptr("billing@example.com"),
			Payment: &PaymentFacet{At: t0, Amount: 900, Currency: "usd", InvoiceID: "in_1"}}, facets},
		{"a subscription change with an email", withEmail, whole},
	} {
		for _, tenant := range []uuid.UUID{held, separate} {
			err := db.PipeTx(ctx, pool, nil, func(tx *db.Pipe) error {
				before, err := lockAccount(ctx, tx, tenant)
				require.NoError(t, err)
				after, changed := before.Apply(step.change)
				require.True(t, changed, step.name)
				crm := !after.CRMView().Equal(before.CRMView())
				save, record := (*heldSave)(nil), &heldSave{}
				if tenant == held {
					save = record
				}
				if err := saveAccount(ctx, tx, before, after, step.change.SubscriptionID, crm, save); err != nil {
					return err
				}
				if tenant == held {
					require.Equal(t, step.via, record.fn, step.name)
				}
				ev := Event{ID: step.change.Stamp.EventID + "_" + tenant.String(), Type: TypeSubscriptionUpdated,
					APIVersion: APIVersion, Created: step.change.Stamp.Created, Payload: []byte(`{"step":"` + step.name + `"}`)}
				return finish(ctx, tx, ev, customer, Result{Outcome: OutcomeProcessed, TenantID: tenant, CRMSync: crm}, record)
			})
			require.NoError(t, err, step.name)
		}
		var rows [2]string
		for i, tenant := range []uuid.UUID{held, separate} {
			require.NoError(t, pool.QueryRow(ctx, `
				select (to_jsonb(a) - 'tenant_id' - 'created_at' - 'updated_at' - 'delivery_bucket' - 'bucket_deliveries'
					- 'rolled_bucket' - 'rolled_deliveries')::text
				|| coalesce((select jsonb_agg(to_jsonb(s) - 'tenant_id' order by subscription_id)::text
					from private.billing_subscriptions s where s.tenant_id = $1), '')
				|| (select jsonb_agg(to_jsonb(e) - 'id' - 'tenant_id' - 'received_at' - 'applied_at' order by e.created)::text
					from private.stripe_events e where e.tenant_id = $1)
				|| (select sum(d.received) || '/' || sum(d.processed) from private.webhook_delivery_buckets d where d.tenant_id = $1)
				from private.billing_accounts a where a.tenant_id = $1`, tenant).Scan(&rows[i]))
		}
		require.Equal(t, rows[1], rows[0], "after %q", step.name)
	}
}
