package billing_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
)

// A live delivery counts itself for the owner's webhook health in its record's own statement,
// with no row trigger on the inbox (issue 12: a trigger call is a queued event, the row fetched
// again and a PL/pgSQL call per delivery), and every other writer of the inbox still counts
// through the trigger. Counted by Postgres's own function statistics on the test's database: a
// change that puts the trigger back on the delivery's path fails here as a count, and one that
// stops counting other writers fails on the counters.
func TestADeliveryCountsItselfWithoutTheInboxTrigger(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var dbName string
	require.NoError(t, b.pool.QueryRow(ctx, `select current_database()`).Scan(&dbName))
	_, err := b.pool.Exec(ctx, `alter database "`+dbName+`" set track_functions = 'pl'`)
	require.NoError(t, err)
	b.pool.Reset() // the pool's next connections count function calls

	calls := func(fn string) int {
		return b.count(t, `select coalesce(sum(calls), 0)::int from pg_stat_user_functions where schemaname = 'private' and funcname = $1`, fn)
	}
	// A backend reports its counts within about a second of going idle.
	waitForCalls := func(fn string, want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for calls(fn) < want && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		require.Equal(t, want, calls(fn), "calls of private.%s", fn)
	}
	counted := func() (received, processed int) {
		require.NoError(t, b.pool.QueryRow(ctx, `
			select coalesce(sum(received), 0)::int, coalesce(sum(processed), 0)::int
			from private.webhook_delivery_buckets where tenant_id = $1`, b.tenantID).Scan(&received, &processed))
		return received, processed
	}

	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	paid := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, at,
		b.invoice(t, invoiceSpec{id: "in_" + randomID(14), customer: b.customer, subscription: "sub_1", amount: 4900, paid: true}, at))
	rec := b.deliver(t, paid, time.Now(), testSecret)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	// An invoice event's record saves the projection's invoice facets in the same call.
	waitForCalls("record_stripe_event_with_facets", 1)
	require.Equal(t, 0, calls("webhook_delivery_counts_track"), "the delivery's record ran the inbox's row trigger")
	received, processed := counted()
	require.Equal(t, [2]int{1, 1}, [2]int{received, processed}, "the delivery counted once, as processed")

	// A subscription event of the subscription the account shows saves its register, the
	// account and its record in one call too: none of the three it replaces runs.
	updated := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionUpdated, at,
		b.subscription(t, subSpec{id: "sub_1", customer: b.customer, status: billing.StatusActive, price: "price_pro",
			periodEnd: at.Add(720 * time.Hour)}))
	rec = b.deliver(t, updated, time.Now(), testSecret)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	waitForCalls("record_stripe_event_with_subscription", 1)
	for _, fn := range []string{"save_billing_subscription", "save_billing_account", "record_stripe_event", "webhook_delivery_counts_track"} {
		require.Zero(t, calls(fn), "the subscription delivery called private.%s", fn)
	}
	received, processed = counted()
	require.Equal(t, [2]int{2, 2}, [2]int{received, processed}, "the second delivery counted once, as processed")
	require.Zero(t, b.count(t, `select count(*)::int from private.webhook_delivery_counts where tenant_id = $1`, b.tenantID),
		"both counted on the account, in its current bucket")

	// Another writer (ops, a script) inserts into the inbox directly: the trigger counts it.
	b.exec(t, `
		insert into private.stripe_events (id, type, created, outcome, tenant_id, raw_payload)
		values ($1, 'invoice.paid', now(), 'ignored', $2, '{}')`, "evt_"+randomID(24), b.tenantID)
	waitForCalls("webhook_delivery_counts_track", 1)
	received, processed = counted()
	require.Equal(t, [2]int{3, 2}, [2]int{received, processed}, "the direct insert counted through the trigger")
}

// The inbox's outcome and the projection's status take only the values shared/billing writes:
// their writer functions refuse any other with check_violation (23514), as the CHECK
// constraints they replace did (issue 12: Postgres read and compiled a CHECK again for every
// statement writing those tables), and nothing is written.
func TestTheWritersRefuseAnUnknownOutcomeOrStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	refused := func(sql string, args ...any) {
		t.Helper()
		_, err := b.pool.Exec(ctx, sql, args...)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "23514", pgErr.Code, pgErr.Message)
	}
	id := "evt_" + randomID(24)
	refused(`select private.record_stripe_event($1, 'invoice.paid', '2023-10-16', now(), false, $2, '{}', 'applied', $3, false)`,
		id, b.customer, b.tenantID)
	require.Equal(t, 0, b.count(t, `select count(*)::int from private.stripe_events where id = $1`, id))
	// The record that saves the invoice facets records a processed event and nothing else.
	withFacets := make([]any, 30)
	withFacets[0], withFacets[1], withFacets[3], withFacets[4], withFacets[6] = id, "invoice.paid", time.Now(), false, []byte("{}")
	withFacets[7], withFacets[8], withFacets[9], withFacets[29] = "ignored", b.tenantID, false, false
	refused(`select private.record_stripe_event_with_facets(`+placeholders(30)+`)`, withFacets...)
	require.Equal(t, 0, b.count(t, `select count(*)::int from private.stripe_events where id = $1`, id))

	// So does the record that saves a subscription, which refuses a status Stripe does not send.
	withSub := make([]any, 26)
	copy(withSub, withFacets[:10])
	withSub[13], withSub[17], withSub[25] = "sub_1", false, false
	refused(`select private.record_stripe_event_with_subscription(`+placeholders(26)+`)`, withSub...)
	withSub[7], withSub[20] = "processed", "in_grace"
	refused(`select private.record_stripe_event_with_subscription(`+placeholders(26)+`)`, withSub...)
	require.Equal(t, 0, b.count(t, `select count(*)::int from private.stripe_events where id = $1`, id))

	b.exec(t, `insert into private.billing_accounts (tenant_id) values ($1) on conflict do nothing`, b.tenantID)
	args := make([]any, 31)
	args[0], args[11], args[14], args[30] = b.tenantID, false, "in_grace", false // a status Stripe does not send
	refused(`select private.save_billing_account(`+placeholders(31)+`)`, args...)
	require.Equal(t, 0, b.count(t, `select count(*)::int from private.billing_accounts where tenant_id = $1 and status = 'in_grace'`, b.tenantID))

	// The values shared/billing writes pass.
	b.exec(t, `select private.record_stripe_event($1, 'invoice.paid', '2023-10-16', now(), false, $2, '{}', 'processed', $3, false)`,
		id, b.customer, b.tenantID)
	args[14] = billing.StatusPastDue
	b.exec(t, `select private.save_billing_account(`+placeholders(31)+`)`, args...)
	require.Equal(t, 1, b.count(t, `select count(*)::int from private.billing_accounts where tenant_id = $1 and status = 'past_due'`, b.tenantID))
}

// placeholders is "$1, $2, ..., $n".
func placeholders(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = "$" + strconv.Itoa(i+1)
	}
	return strings.Join(s, ", ")
}
