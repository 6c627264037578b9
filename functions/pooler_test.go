package functions_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/db/pgbouncer"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/problem"
)

// In Lambda the webhook reaches Postgres through Supabase's pooler in transaction mode, which
// lends a client a backend for one transaction at a time and keeps no prepared statement for
// it. Under the RIE, through PgBouncer in transaction mode with two backends lent in turn, every
// sample event, its redelivery and an unknown customer's event are answered and stored once,
// and the instance's transactions ran on both backends: nothing it does relies on a backend
// staying the same between transactions.
func TestTheWebhookWorksThroughATransactionPooler(t *testing.T) {
	t.Parallel()
	b, f, env := webhookSetup(t)
	direct := env["DATABASE_URL"]
	var pooler *pgbouncer.Pooler
	env["DATABASE_URL"], pooler = dbtest.Pooler(t, direct, pgbouncer.Options{PoolSize: 2, RoundRobin: true},
		"the webhook is not checked behind a transaction pooler")
	// PgBouncer opens its backends (min_pool_size) while a client is connected: wait for both
	// with one connected, so the deliveries below can be lent either.
	client, err := pgx.Connect(context.Background(), env["DATABASE_URL"])
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return count(t, direct, `select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`) == 2
	}, 10*time.Second, 50*time.Millisecond, "PgBouncer opens its two backends\n%s", pooler.Output())
	require.NoError(t, client.Close(context.Background()))
	em := startUnderRIE(t, b, f, env)
	signer := demo.Signer{WebhookSecret: env["STRIPE_WEBHOOK_SECRET"], TokenTTL: time.Minute}

	samples := sampleEvents(t, b, f)
	for i, sample := range samples {
		id := func(ev map[string]any) { ev["id"] = "evt_pooler_" + strconv.Itoa(i) }
		require.Equal(t, 200, invokeEdited(t, em, signer, sample, id, true), "%s\n%s", filepath.Base(sample), pooler.Output())
		require.Equal(t, 200, invokeEdited(t, em, signer, sample, id, true), "redelivery of %s", filepath.Base(sample))
	}
	unknown := func(ev map[string]any) {
		ev["id"] = "evt_pooler_unknown"
		ev["data"].(map[string]any)["object"].(map[string]any)["customer"] = "cus_nobody_knows"
	}
	require.Equal(t, 200, invokeEdited(t, em, signer, filepath.Join(b.Root, "events", "payment-webhook.json"), unknown, true),
		"an unknown customer's event is recorded as unmatched")

	stored := count(t, direct, `select count(*) from private.stripe_events where id like 'evt_pooler_%'`)
	require.Equal(t, len(samples)+1, stored, "every new event is stored once, the unknown customer's included")
	// PgBouncer sets each backend's application_name to that of the client it serves.
	backends := count(t, direct, `select count(*) from pg_stat_activity
		where datname = current_database() and application_name = $1`, "payment-webhook")
	require.Equal(t, 2, backends, "the instance's transactions ran on both of the pooler's backends")
}

// A statement that runs away (here a trigger that sleeps 30 s on the webhook's inbox insert)
// behind Supabase's transaction pooler must not hold the delivery, its Lambda instance and a
// pooled backend until Lambda kills the function: DB_STATEMENT_TIMEOUT travels inside each
// transaction, so through PgBouncer in transaction mode (left at its defaults, which refuse a
// statement_timeout startup parameter) the server cancels the statement at the bound, the
// webhook answers 503 problem+json (Stripe retries) that names no SQL, nothing keeps running
// on the server, and once the cause is gone Stripe's retry is applied.
func TestARunawayStatementIsAnswered503AtTheTimeoutThroughATransactionPooler(t *testing.T) {
	t.Parallel()
	b, f, env := webhookSetup(t)
	direct := env["DATABASE_URL"]
	env["DATABASE_URL"], _ = dbtest.Pooler(t, direct, pgbouncer.Options{PoolSize: 1}, "the statement timeout is not checked behind a transaction pooler")
	env["DB_STATEMENT_TIMEOUT"] = "1s"
	exec(t, direct, `
		create function public.runaway() returns trigger language plpgsql as $$ begin perform pg_sleep(30); return new; end $$;
		create trigger runaway before insert on private.stripe_events for each row execute function public.runaway()`)

	em := startUnderRIE(t, b, f, env)
	signer := demo.Signer{WebhookSecret: env["STRIPE_WEBHOOK_SECRET"], TokenTTL: time.Minute}
	paid := filepath.Join(b.Root, "events", "payment-webhook.json")
	id := func(ev map[string]any) { ev["id"] = "evt_runaway" }

	answered := make(chan events.APIGatewayV2HTTPResponse, 1)
	go func() { answered <- invokeEditedResponse(t, em, signer, paid, id, true) }()
	const runningSleep = `select count(*) from pg_stat_activity
		where datname = current_database() and wait_event = 'PgSleep' and pid = $1`
	var backend int
	require.Eventually(t, func() bool {
		backend = count(t, direct, `select coalesce(max(pid), 0) from pg_stat_activity
			where datname = current_database() and wait_event = 'PgSleep'`)
		return backend != 0
	}, 10*time.Second, 10*time.Millisecond, "the delivery's statement runs away\n%s", em.Output())
	res := <-answered
	require.Equal(t, 503, res.StatusCode, "%s\n%s", res.Body, em.Output())
	require.Equal(t, problem.ContentType, res.Headers["Content-Type"])
	for _, internal := range []string{"pg_sleep", "select", "stripe_events", "SQLSTATE", "57014", "statement"} {
		require.NotContains(t, res.Body, internal, "a 5xx body never carries internals")
	}
	require.Zero(t, count(t, direct, runningSleep, backend), "the runaway statement was cancelled on the server")
	// The function's own deadline would have ended it too, by closing its connection: the
	// pooler then drops the backend it lent (a new one to start). The timeout keeps it.
	require.Equal(t, 1, count(t, direct, `select count(*) from pg_stat_activity where pid = $1`, backend),
		"the pooler's backend outlived the runaway statement")

	exec(t, direct, `drop trigger runaway on private.stripe_events`)
	require.Equal(t, 200, invokeEdited(t, em, signer, paid, id, true), "Stripe's retry is applied")
	require.Equal(t, 1, count(t, direct, `select count(*) from private.stripe_events where id = 'evt_runaway'`))
	require.Equal(t, 1, count(t, direct, `select count(*) from pg_stat_activity where pid = $1`, backend),
		"the retry ran on the same backend: the pooler never had to start another")
}

// exec runs sql on the database at url.
func exec(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, sql)
	require.NoError(t, err)
}
