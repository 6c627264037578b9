package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
)

// holdAccount locks the tenant's projection row from a connection of its own, so deliveries of
// that tenant stay inside their transaction until release is called: a way to keep requests
// in flight without sleeping.
func (b *bundle) holdAccount(t *testing.T) (release func()) {
	t.Helper()
	ctx := context.Background()
	b.exec(t, `insert into private.billing_accounts (tenant_id) values ($1) on conflict do nothing`, b.tenantID)
	conn, err := pgx.Connect(ctx, b.pool.Config().ConnString())
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `select 1 from private.billing_accounts where tenant_id = $1 for update`, b.tenantID)
	require.NoError(t, err)
	done := false
	release = func() {
		if !done {
			done = true
			_ = tx.Rollback(ctx)
			_ = conn.Close(ctx)
		}
	}
	t.Cleanup(release)
	return release
}

// waitingOnLock waits until n backends of the test database wait on a lock, and returns their
// process ids.
func (b *bundle) waitingOnLock(t *testing.T, n int) []int32 {
	t.Helper()
	var pids []int32
	require.Eventually(t, func() bool {
		rows, err := b.pool.Query(context.Background(), `select pid from pg_stat_activity
			where datname = current_database() and wait_event_type = 'Lock'`)
		require.NoError(t, err)
		pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
		require.NoError(t, err)
		return len(pids) == n
	}, 30*time.Second, 10*time.Millisecond, "deliveries waiting on the tenant's lock")
	return pids
}

// post sends one signed delivery over real HTTP.
func post(ctx context.Context, t *testing.T, url string, payload []byte) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/webhooks/stripe", bytes.NewReader(payload))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(billing.SignatureHeader, billing.SignedTestEvent(testSecret, payload, time.Now()))
	return http.DefaultClient.Do(req)
}

// goPost sends one signed delivery in the background; its status (0 if it failed to send)
// arrives on out.
func goPost(t *testing.T, url string, payload []byte, out chan<- int) {
	go func() {
		res, err := post(context.Background(), t, url, payload)
		if err != nil {
			out <- 0
			return
		}
		res.Body.Close()
		out <- res.StatusCode
	}()
}

func (b *bundle) paidEvent(t *testing.T, id string, at time.Time) []byte {
	t.Helper()
	return b.stripeEvent(t, id, billing.TypeInvoicePaid, at,
		b.invoice(t, invoiceSpec{id: "in_" + randomID(14), customer: b.customer, subscription: "sub_1", amount: 4900, paid: true}, at))
}

// Past the bound on requests at once, a delivery is answered 503 once it has waited its
// bounded wait for a slot (and at once after that refusal, while the limiter is overloaded),
// as problem+json with Retry-After, while the admitted ones are still running; nothing of a refused delivery
// is written, and once Stripe sends it again it is applied. Every delivery answered 200 is
// stored: overload loses no acknowledged event.
func TestOverloadIsShedAndNoAcknowledgedDeliveryIsLost(t *testing.T) {
	t.Parallel()
	const capacity, excess = 2, 5
	b := setup(t, limited(web.NewLimiter(capacity, 1)))
	srv := httptest.NewServer(b.handler)
	t.Cleanup(srv.Close)
	release := b.holdAccount(t)
	now := time.Now().Add(-time.Hour)

	admitted := make(chan int, capacity)
	for i := range capacity {
		goPost(t, srv.URL, b.paidEvent(t, "evt_admitted_"+randomID(12), now.Add(time.Duration(i)*time.Second)), admitted)
	}
	b.waitingOnLock(t, capacity)

	var refused [][]byte
	for i := range excess {
		id := "evt_excess_" + randomID(12)
		payload := b.paidEvent(t, id, now.Add(time.Duration(capacity+i)*time.Second))
		res, err := post(context.Background(), t, srv.URL, payload)
		require.NoError(t, err)
		var p problem.Problem
		require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
		res.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, res.StatusCode, "excess delivery %d", i)
		require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
		require.Equal(t, "1", res.Header.Get("Retry-After"), "Stripe and other clients are told to come back")
		require.NotEmpty(t, p.RequestID)
		require.Zero(t, b.count(t, `select count(*) from private.stripe_events where id = $1`, id), "a refused delivery writes nothing")
		refused = append(refused, payload)
	}
	require.Zero(t, b.count(t, `select count(*) from private.stripe_events`), "the admitted deliveries are still waiting")

	release()
	for range capacity {
		require.Equal(t, http.StatusOK, <-admitted)
	}
	for _, payload := range refused { // Stripe's retries
		res, err := post(context.Background(), t, srv.URL, payload)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
	}
	require.Equal(t, capacity+excess, b.count(t, `select count(*) from private.stripe_events where applied_at is not null`),
		"every acknowledged delivery is stored and applied")
}

// A stall that takes every slot (here the tenant's projection held by another transaction, as
// a slow WAL fsync holds every commit behind it) refuses no delivery: one arriving meanwhile
// waits for a slot instead of being answered 503, and once the stall ends every delivery is
// applied. The wait is a minute here so that the test does not depend on how fast it runs.
func TestAStallIsWaitedOutWithoutRefusingADelivery(t *testing.T) {
	t.Parallel()
	const capacity = 2
	b := setup(t, limited(web.NewQueuedLimiter(capacity, 1, web.Queue{Wait: time.Minute, Cooldown: time.Second, PerSlot: 4})))
	srv := httptest.NewServer(b.handler)
	t.Cleanup(srv.Close)
	release := b.holdAccount(t)
	now := time.Now().Add(-time.Hour)

	answered := make(chan int, capacity+1)
	for i := range capacity {
		goPost(t, srv.URL, b.paidEvent(t, "evt_stalled_"+randomID(12), now.Add(time.Duration(i)*time.Second)), answered)
	}
	b.waitingOnLock(t, capacity)
	goPost(t, srv.URL, b.paidEvent(t, "evt_waiting_"+randomID(12), now.Add(capacity*time.Second)), answered)
	select {
	case status := <-answered:
		t.Fatalf("a delivery was answered %d during the stall", status)
	case <-time.After(200 * time.Millisecond): // a refusal would have come at once
	}

	release()
	for range capacity + 1 {
		require.Equal(t, http.StatusOK, <-answered)
	}
	require.Equal(t, capacity+1, b.count(t, `select count(*) from private.stripe_events where applied_at is not null`),
		"every delivery of the stall is stored and applied")
}

// A client that hangs up while its delivery waits on the database costs neither the delivery
// nor the pooled connection it runs on: the work finishes (Stripe's retry of it is a
// duplicate) and the connection's backend lives on, so overload, where clients give up, does
// not turn into reconnect churn.
func TestClientGoingAwayKeepsTheDeliveryAndItsConnection(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := httptest.NewServer(b.handler)
	t.Cleanup(srv.Close)
	release := b.holdAccount(t)
	payload := b.paidEvent(t, "evt_gone_"+randomID(12), time.Now().Add(-time.Hour))

	ctx, hangUp := context.WithCancel(context.Background())
	sent := make(chan error, 1)
	go func() {
		res, err := post(ctx, t, srv.URL, payload)
		if err == nil {
			res.Body.Close()
		}
		sent <- err
	}()
	backend := b.waitingOnLock(t, 1)[0]
	hangUp()
	require.ErrorIs(t, <-sent, context.Canceled, "the client gave up before the answer")
	release()

	// The delivery records its event with its commit: once it is there, the delivery the
	// client gave up on was applied (nothing else sent it), and Stripe's retry is a duplicate.
	var id string
	require.NoError(t, json.Unmarshal(payload, &struct{ ID *string }{&id}))
	require.Eventually(t, func() bool {
		return b.count(t, `select count(*) from private.stripe_events where id = $1 and applied_at is not null`, id) == 1
	}, 10*time.Second, 10*time.Millisecond, "the delivery the client gave up on was applied")
	require.Equal(t, "duplicate", b.outcome(t, payload))
	require.Equal(t, 1, b.count(t, `select count(*) from pg_stat_activity where pid = $1`, backend),
		"the connection the abandoned delivery ran on is still open")
}
