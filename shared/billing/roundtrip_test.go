package billing_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
)

// Round trip budgets of one delivery on a warm connection (issue 12): every round trip is a
// wait for Postgres that a delivery pays in latency and a busy database pays in CPU.
const (
	maxRoundTripsNewEvent   = 3
	maxRoundTripsRedelivery = 2
	// The first event of a customer not mapped yet also reads the mapping and whether the tenant
	// it names exists, binds the customer and looks for its stored unmatched events (issue 10),
	// and cannot lock the projection in the claim's round trip.
	maxRoundTripsNewCustomer = 7
)

// A delivery's database work is held to a budget of round trips, counted by a pgx tracer on
// the pool through the real handler: a new event of a known tenant, its redelivery, and a
// new event whose tenant comes from its metadata. A change that adds a round trip fails here
// as a count, whatever the machine's load; so does one that adds a statement.
//
// It holds for both of the pool's shapes: statements sent unnamed (behind Supavisor's
// transaction mode, the default) and prepared once per connection (a connection that keeps
// its backend: db.Options.PreparedStatements). Prepared, a warm connection sends no statement
// to be parsed again: the claim is prepared once, whatever the number of deliveries.
func TestDeliveryRoundTrips(t *testing.T) {
	t.Parallel()
	t.Run("unnamed statements", func(t *testing.T) {
		t.Parallel()
		deliveryRoundTrips(t, "")
	})
	t.Run("prepared statements", func(t *testing.T) {
		t.Parallel()
		// A pool of one, as the webhook's Lambda instances have: the deliveries and the
		// check of what is prepared all run on the same backend.
		b := deliveryRoundTrips(t, ", prepared", dbtest.Prepared, func(o *db.Options) { o.MaxConns = 1 })
		require.Equal(t, 1, b.count(t, `select count(*)::int from pg_prepared_statements where statement like 'select private.webhook_claim%'`),
			"the claim is prepared once on the connection and reused by every delivery")
	})
}

// deliveryRoundTrips runs the deliveries on a pool opened with opts; shape follows each
// delivery's name in the log (cmd/benchreport tabulates the lines).
func deliveryRoundTrips(t *testing.T, shape string, opts ...dbtest.Option) *bundle {
	var counter *dbtest.Counter
	b := setup(t, counted(&counter), pooled(opts...))
	now := time.Now().Add(-time.Minute)
	at := func(s int) time.Time { return now.Add(time.Duration(s) * time.Second) }
	sub := func(s int, price string) []byte {
		return b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionUpdated, at(s),
			b.subscription(t, subSpec{id: "sub_1", customer: b.customer, status: "active", price: price, periodEnd: at(s).Add(30 * 24 * time.Hour)}))
	}
	paid := func(s int) []byte {
		return b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, at(s),
			b.invoice(t, invoiceSpec{id: "in_" + randomID(14), customer: b.customer, subscription: "sub_1", amount: 4900, paid: true}, at(s)))
	}
	deliver := func(payload []byte) dbtest.Counts {
		t.Helper()
		counter.Reset()
		rec := b.deliver(t, payload, time.Now(), testSecret)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		return counter.Reset()
	}
	// Warm the connection: each statement is described once per connection.
	for _, p := range [][]byte{sub(0, "price_basic"), paid(1)} {
		deliver(p)
		deliver(p)
	}

	otherTenant := b.newTenant(t, false)
	byMetadata := b.stripeEvent(t, "evt_"+randomID(24), billing.TypeSubscriptionUpdated, at(5),
		b.subscription(t, subSpec{id: "sub_other", customer: "cus_" + randomID(14), status: "active", price: "price_basic",
			periodEnd: at(5).Add(time.Hour), metadataTenant: otherTenant.String()}))
	redelivered := paid(4)
	for _, tc := range []struct {
		name          string
		payload       []byte
		max, maxStmts int
	}{
		// begin and the statement timeout (set local, in the begin's round trip: db.Options),
		// claim (private.webhook_claim_account_rows), the writes in one statement (db.Pipe.DeferCall:
		// subscription, projection, CRM job, the event's record), commit.
		{"new subscription change", sub(2, "price_pro"), maxRoundTripsNewEvent, 5},
		// Of the same second, saying another price: the refresh from Stripe is queued in the
		// same statement as the other writes (private.river_insert_unique), not by River's
		// client in statements of its own.
		{"a tie, with its refresh", sub(2, "price_team"), maxRoundTripsNewEvent, 5},
		{"new payment", paid(3), maxRoundTripsNewEvent, 5},
		{"first delivery", redelivered, maxRoundTripsNewEvent, 5},
		// begin and the statement timeout, claim (it finds the event and locks nothing), commit.
		{"redelivery", redelivered, maxRoundTripsRedelivery, 4},
		{"new customer found by metadata", byMetadata, maxRoundTripsNewCustomer, 12},
	} {
		got := deliver(tc.payload)
		t.Logf("%s%s: %d round trips, %d statements, %d describes:\n  %s", tc.name, shape, got.RoundTrips, got.Statements, got.Describes,
			strings.Join(got.SQL, "\n  "))
		require.LessOrEqual(t, got.RoundTrips, tc.max, "%s: round trips", tc.name)
		require.LessOrEqual(t, got.Statements, tc.maxStmts, "%s: statements (begin and commit included)", tc.name)
		if tc.max < maxRoundTripsNewCustomer {
			require.Zero(t, got.Describes, "%s: a warm connection describes or prepares nothing again", tc.name)
		}
	}
	require.Equal(t, 1, b.count(t, `select count(*)::int from private.river_job where kind = 'billing_refresh'`),
		"the tie queued its refresh")
	return b
}

// A delivery stores its event once, as Stripe signed it, compressed in the row (issue 12): a
// full Stripe invoice event takes the inbox well under its length and nothing in the TOAST
// table. The jsonb copy the inbox also kept doubled the row, and with the row kept out of
// compression each event took a page of its own (a relation extension and 8 KB of WAL per
// delivery). A change that stores a second copy, or keeps the row from being compressed,
// fails here as a size.
func TestDeliveryStoresTheEventOnceCompressedInTheRow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	id := "evt_" + randomID(24)
	payload := b.stripeEvent(t, id, billing.TypeInvoicePaid, at,
		b.invoice(t, invoiceSpec{id: "in_" + randomID(14), customer: b.customer, subscription: "sub_1", amount: 4900, paid: true}, at))
	require.Greater(t, len(payload), 2500, "a full Stripe event, as the load driver's and Stripe's are")
	toast := `select pg_relation_size(reltoastrelid) from pg_class where oid = 'private.stripe_events'::regclass`
	toastBefore := b.count(t, toast)
	require.Equal(t, "processed", b.outcome(t, payload))

	var (
		row, stored int
		jsonbCopy   bool
		customer    string
	)
	require.NoError(t, b.pool.QueryRow(t.Context(), `
		select pg_column_size(e.*), pg_column_size(e.raw_payload), e.payload is not null, e.customer_id
		from private.stripe_events e where e.id = $1`, id).Scan(&row, &stored, &jsonbCopy, &customer))
	t.Logf("event of %d bytes: row %d bytes, raw_payload %d bytes in the row", len(payload), row, stored)
	require.False(t, jsonbCopy, "one copy of the event")
	require.Equal(t, b.customer, customer)
	require.Less(t, stored, len(payload)*3/4, "the event is compressed")
	require.Less(t, row, len(payload), "the row holds one compressed copy")
	require.Equal(t, toastBefore, b.count(t, toast), "kept in the row, not in the TOAST table")
}
