package billing

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
)

// The claim returns the account and its subscriptions as row values, whose fields are the
// tables' columns in the tables' order, and the Go side reads them by position: a migration
// that adds, drops or reorders a column of either table must change accountColumns or
// subscriptionColumns with it, or this fails (instead of a field landing in the wrong place).
func TestClaimReadsTheTablesColumnsInOrder(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	for _, tc := range []struct {
		table, columns string
	}{
		{"private.billing_accounts", accountColumns},
		{"private.billing_subscriptions", subscriptionColumns},
	} {
		var got []string
		err := pool.QueryRow(context.Background(), `
			select array_agg(attname order by attnum) from pg_attribute
			where attrelid = $1::regclass and attnum > 0 and not attisdropped`, tc.table).Scan(&got)
		require.NoError(t, err)
		require.Equal(t, strings.Fields(strings.ReplaceAll(tc.columns, ",", " ")), got, tc.table)
	}
}

// Code deployed before the account row kept the webhook health's current bucket (migration
// 20261206100000) reads private.webhook_claim_rows' account by position as its 33 columns of
// then: that function still answers them, in that order, so a delivery served by the old code
// during a deploy reads the same projection (the new code calls webhook_claim_account_rows).
func TestTheOldClaimAnswersTheAccountAsDeployedCodeReadsIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	var tenant uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `insert into public.tenants (name) values ('t') returning id`).Scan(&tenant))
	_, err := pool.Exec(ctx, `
		insert into private.billing_accounts (tenant_id, customer_id, crm_version, delivery_bucket, bucket_deliveries)
		values ($1, 'cus_old', 7, now(), 3)`, tenant)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `insert into private.stripe_customers (customer_id, tenant_id) values ('cus_old', $1)`, tenant)
	require.NoError(t, err)
	oldColumns := strings.Fields(strings.ReplaceAll(strings.SplitAfter(accountColumns, "crm_version")[0], ",", " "))
	require.Len(t, oldColumns, 33)

	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	var (
		seen    bool
		rule    *bool
		contact *string
		account pgtype.UndecodedBytes
		subs    pgtype.UndecodedBytes
	)
	require.NoError(t, conn.QueryRow(ctx, `select private.webhook_claim_rows('evt_old_code', 'cus_old', true, true)`).
		Scan(pgtype.CompositeFields{&seen, &rule, &contact, &account, &subs}))
	require.NotNil(t, account)
	fields := make([]any, len(oldColumns))
	dests := make(pgtype.CompositeFields, len(oldColumns))
	for i := range fields {
		dests[i] = &fields[i]
	}
	require.NoError(t, conn.Conn().TypeMap().Scan(pgtype.RecordOID, pgtype.BinaryFormatCode, account, dests),
		"the old claim's account is the 33 columns code deployed before reads")
	require.Equal(t, [16]byte(tenant), fields[0])
	require.Equal(t, "cus_old", fields[1])
	require.Equal(t, int64(7), fields[32])
}

// keepsSubscription decides that a save may leave columns as the row has them: it must compare
// every field of Account that private.save_billing_invoice_facets does not write, including
// any field added to Account later (a new facet), or that facet's change would be lost.
func TestKeepsSubscriptionComparesEveryOtherField(t *testing.T) {
	t.Parallel()
	written := map[string]bool{ // by private.save_billing_invoice_facets
		"CustomerID": true, "CustomerStamp": true, "CustomerEmail": true, "EmailStamp": true,
		"LastPaymentAt": true, "LastPaymentAmount": true, "LastPaymentCurrency": true, "LastInvoiceID": true,
		"PaymentStamp": true, "LastFailureAt": true, "LastFailureReason": true, "LastFailureInvoiceID": true,
		"FailureStamp": true, "SavedSource": true,
	}
	notColumns := map[string]bool{"TenantID": true, "Subscriptions": true, "CRMVersion": true}
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	before := Account{TenantID: uuid.New(), SubscriptionID: "sub_1", PriceID: "price_1", Plan: "pro",
		CurrentPeriodEnd: at, Status: "active", StatusStamp: Stamp{Created: at, EventID: "evt_1"},
		SubscriptionStamp: Stamp{Created: at, EventID: "evt_1"}}
	require.True(t, keepsSubscription(before, before))
	forEachColumnField(t, before, notColumns, func(name string, after Account) {
		require.Equal(t, written[name], keepsSubscription(before, after), "Account.%s changed", name)
	})
	// The same instant in another location is the same register.
	after := before
	after.CurrentPeriodEnd = at.In(time.FixedZone("x", 3600))
	require.True(t, keepsSubscription(before, after))
}

// The claim reads the tenant's subscriptions only when asked (an event that names one): an
// invoice event's claim skips their aggregate, and its save still derives the row's source
// from them through the saved source.
func TestClaimReadsSubscriptionsOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()
	tenant := uuid.New()
	for _, sql := range []string{
		`insert into public.tenants (id) values ($1)`,
		`insert into private.stripe_customers (customer_id, tenant_id) values ('cus_claim', $1)`,
		`insert into private.billing_accounts (tenant_id, source_event_created, source_event_id)
			values ($1, '2026-11-30 12:00:00+00', 'evt_sub')`,
		`insert into private.billing_subscriptions (tenant_id, subscription_id, plan_event_created, plan_event_id)
			values ($1, 'sub_1', '2026-11-30 12:00:00+00', 'evt_sub')`,
	} {
		_, err := pool.Exec(ctx, sql, tenant)
		require.NoError(t, err)
	}
	for _, subs := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		var pre prefetch
		var seen bool
		b := &pgx.Batch{}
		pre.queue(b, "evt_new", "cus_claim", false, subs, &seen)
		require.NoError(t, tx.SendBatch(ctx, b).Close())
		require.NoError(t, tx.Rollback(ctx))
		require.True(t, pre.locked)
		require.Equal(t, tenant, pre.account.TenantID)
		require.Equal(t, subs, pre.subsRead)
		if subs {
			require.Contains(t, pre.account.Subscriptions, "sub_1")
		} else {
			require.Empty(t, pre.account.Subscriptions)
		}
		require.Equal(t, Stamp{Created: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), EventID: "evt_sub"},
			pre.account.Source(), "the saved source counts what the unread subscriptions said")
	}
}

// keepsInvoiceFacets decides that a subscription event's save may leave the email, payment and
// failure columns as the row has them: it must compare every field of Account that
// private.record_stripe_event_with_subscription does not write, including any field added to
// Account later, or that field's change would be lost.
func TestKeepsInvoiceFacetsComparesEveryOtherField(t *testing.T) {
	t.Parallel()
	written := map[string]bool{ // by private.record_stripe_event_with_subscription
		"CustomerID": true, "CustomerStamp": true,
		"SubscriptionID": true, "PriceID": true, "Plan": true, "CurrentPeriodEnd": true, "CancelAtPeriodEnd": true,
		"SubscriptionStamp": true, "Status": true, "StatusStamp": true, "SavedSource": true,
	}
	notColumns := map[string]bool{"TenantID": true, "Subscriptions": true, "CRMVersion": true}
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	before := Account{TenantID: uuid.New(), CustomerEmail: "a@example.com", EmailStamp: Stamp{Created: at, EventID: "evt_1"},
		LastPaymentAt: at, LastPaymentAmount: 100, LastPaymentCurrency: "usd", LastInvoiceID: "in_1",
		PaymentStamp: Stamp{Created: at, EventID: "evt_2"}, LastFailureAt: at, LastFailureReason: "declined",
		LastFailureInvoiceID: "in_0", FailureStamp: Stamp{Created: at, EventID: "evt_3"}}
	require.True(t, keepsInvoiceFacets(before, before))
	forEachColumnField(t, before, notColumns, func(name string, after Account) {
		require.Equal(t, written[name], keepsInvoiceFacets(before, after), "Account.%s changed", name)
	})
	after := before
	after.LastPaymentAt = at.In(time.FixedZone("x", 3600))
	require.True(t, keepsInvoiceFacets(before, after), "the same instant in another location")
}

// private.record_stripe_event_with_subscription writes the account's subscription facet and
// status from the register it saves: showsSubscription must compare every register of
// SubscriptionState with the account's (a register added later must be shown or compared).
func TestShowsSubscriptionComparesEveryRegister(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s := SubscriptionState{ID: "sub_1", PriceID: "price_1", Plan: "pro", CurrentPeriodEnd: at, CancelAtPeriodEnd: true,
		PlanStamp: Stamp{Created: at, EventID: "evt_1"}, Status: "active", StatusStamp: Stamp{Created: at, EventID: "evt_2"}}
	a := Account{Subscriptions: map[string]SubscriptionState{s.ID: s}}.showCurrent()
	require.True(t, showsSubscription(a, s))
	typ := reflect.TypeOf(s)
	for i := range typ.NumField() {
		other := s
		perturb(t, reflect.ValueOf(&other).Elem().Field(i), "SubscriptionState."+typ.Field(i).Name)
		require.False(t, showsSubscription(a, other), "SubscriptionState.%s changed", typ.Field(i).Name)
		require.False(t, showsSubscription(Account{Subscriptions: map[string]SubscriptionState{s.ID: other}}.showCurrent(), s),
			"the account shows another SubscriptionState.%s", typ.Field(i).Name)
	}
}

// forEachColumnField calls f with before changed in one field at a time, for every field of
// Account but skip.
func forEachColumnField(t *testing.T, before Account, skip map[string]bool, f func(name string, after Account)) {
	t.Helper()
	typ := reflect.TypeOf(before)
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if skip[name] {
			continue
		}
		after := before
		perturb(t, reflect.ValueOf(&after).Elem().Field(i), "Account."+name)
		f(name, after)
	}
}

// perturb changes the field f (of a kind the projection uses) to another value.
func perturb(t *testing.T, f reflect.Value, name string) {
	t.Helper()
	switch v := f.Addr().Interface().(type) {
	case *string:
		*v += "_other"
	case *bool:
		*v = !*v
	case *int64:
		*v++
	case *time.Time:
		*v = v.Add(time.Second)
	case *Stamp:
		*v = Stamp{Created: v.Created.Add(time.Second), EventID: v.EventID + "_other"}
	default:
		t.Fatalf("%s is a %s: teach this test (and the comparison it tests) about it", name, f.Type())
	}
}
