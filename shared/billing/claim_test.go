package billing

import (
	"context"
	"strings"
	"testing"

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
