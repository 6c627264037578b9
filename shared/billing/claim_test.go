package billing

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
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

// keepsSubscription decides that a save may leave columns as the row has them: it must compare
// every field of Account that private.save_billing_invoice_facets does not write, including
// any field added to Account later (a new facet), or that facet's change would be lost.
func TestKeepsSubscriptionComparesEveryOtherField(t *testing.T) {
	t.Parallel()
	written := map[string]bool{ // by private.save_billing_invoice_facets
		"CustomerID": true, "CustomerStamp": true, "CustomerEmail": true, "EmailStamp": true,
		"LastPaymentAt": true, "LastPaymentAmount": true, "LastPaymentCurrency": true, "LastInvoiceID": true,
		"PaymentStamp": true, "LastFailureAt": true, "LastFailureReason": true, "LastFailureInvoiceID": true,
		"FailureStamp": true,
	}
	notColumns := map[string]bool{"TenantID": true, "Subscriptions": true, "CRMVersion": true}
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	before := Account{TenantID: uuid.New(), SubscriptionID: "sub_1", PriceID: "price_1", Plan: "pro",
		CurrentPeriodEnd: at, Status: "active", StatusStamp: Stamp{Created: at, EventID: "evt_1"},
		SubscriptionStamp: Stamp{Created: at, EventID: "evt_1"}}
	require.True(t, keepsSubscription(before, before))
	typ := reflect.TypeOf(before)
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if notColumns[name] {
			continue
		}
		after := before
		f := reflect.ValueOf(&after).Elem().Field(i)
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
			t.Fatalf("Account.%s is a %s: teach this test (and keepsSubscription) about it", name, f.Type())
		}
		require.Equal(t, written[name], keepsSubscription(before, after), "Account.%s changed", name)
	}
	// The same instant in another location is the same register.
	after := before
	after.CurrentPeriodEnd = at.In(time.FixedZone("x", 3600))
	require.True(t, keepsSubscription(before, after))
}
