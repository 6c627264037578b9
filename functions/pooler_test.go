package functions_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/pgbouncer"
	"github.com/portal-functions/portal-functions/shared/demo"
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
	pooler, err := pgbouncer.Start(context.Background(), pgbouncer.Options{Upstream: direct, PoolSize: 2, RoundRobin: true})
	if errors.Is(err, pgbouncer.ErrNotInstalled) && os.Getenv("CI") == "" {
		t.Skip("pgbouncer is not installed on this machine (apt-get install -y pgbouncer; .ci/run installs it): the webhook is not checked behind a transaction pooler")
	}
	require.NoError(t, err)
	t.Cleanup(pooler.Stop)
	env["DATABASE_URL"], err = pooler.Via(direct)
	require.NoError(t, err)
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
