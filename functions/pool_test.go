package functions_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/rie"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// A webhook instance serves one delivery at a time and each delivery needs one connection at
// a time, so the template gives the webhook a pool of one (DB_MAX_CONNS): every kind of
// delivery (each sample event, a redelivery, an unknown customer's event, a refused
// signature that is noted for delivery health) is answered under the RIE with that pool, none
// waiting for a second connection that cannot come, and the instance holds one backend. So it
// is with DB_PREPARED_STATEMENTS=true, for a DATABASE_URL that keeps its backend.
func TestTheWebhookInstanceWorksOnAPoolOfOne(t *testing.T) {
	t.Parallel()
	t.Run("unnamed statements", func(t *testing.T) {
		t.Parallel()
		webhookOnAPoolOfOne(t, nil)
	})
	t.Run("prepared statements", func(t *testing.T) {
		t.Parallel()
		webhookOnAPoolOfOne(t, map[string]string{"DB_PREPARED_STATEMENTS": "true"})
	})
}

func webhookOnAPoolOfOne(t *testing.T, extra map[string]string) {
	b, f, env := webhookSetup(t)
	require.Equal(t, "1", env["DB_MAX_CONNS"], "template.yaml (and env.json) give the webhook a pool of one")
	require.Equal(t, "false", env["DB_PREPARED_STATEMENTS"], "env.json keeps the template's default, which suits Supavisor's transaction mode")
	for k, v := range extra {
		env[k] = v
	}
	em := startUnderRIE(t, b, f, env)
	signer := demo.Signer{WebhookSecret: env["STRIPE_WEBHOOK_SECRET"], TokenTTL: time.Minute}

	send := func(sample string, edit func(ev map[string]any), signed bool) int {
		t.Helper()
		return invokeEdited(t, em, signer, sample, edit, signed)
	}
	samples := sampleEvents(t, b, f)
	require.GreaterOrEqual(t, len(samples), 4, "the webhook's samples: payment, failure, subscription, checkout")
	for i, sample := range samples {
		id := "evt_pool_" + strconv.Itoa(i)
		require.Equal(t, 200, send(sample, func(ev map[string]any) { ev["id"] = id }, true), filepath.Base(sample))
		require.Equal(t, 200, send(sample, func(ev map[string]any) { ev["id"] = id }, true), "redelivery of %s", filepath.Base(sample))
	}
	unknown := func(ev map[string]any) {
		ev["id"] = "evt_pool_unknown"
		ev["data"].(map[string]any)["object"].(map[string]any)["customer"] = "cus_nobody_knows"
	}
	paid := filepath.Join(b.Root, "events", "payment-webhook.json")
	require.Equal(t, 200, send(paid, unknown, true), "an unknown customer's event is recorded as unmatched")
	require.Equal(t, 400, send(paid, func(ev map[string]any) { ev["id"] = "evt_pool_forged" }, false), "a forged signature is refused")

	stored := count(t, env["DATABASE_URL"], `select count(*) from private.stripe_events where id like 'evt_pool_%'`)
	require.Equal(t, len(samples)+1, stored, "every new event is stored once, the unknown customer's included")
	backends := count(t, env["DATABASE_URL"], `select count(*) from pg_stat_activity
		where datname = current_database() and application_name = $1`, "payment-webhook")
	require.Equal(t, 1, backends, "the instance holds one connection")
}

// invokeEdited re-signs a sample with its Stripe event changed by edit (or signs it wrongly
// when signed is false), invokes it on em, and returns the status the function answered.
func invokeEdited(t *testing.T, em *rie.Emulator, signer demo.Signer, sample string, edit func(ev map[string]any), signed bool) int {
	t.Helper()
	return invokeEditedResponse(t, em, signer, sample, edit, signed).StatusCode
}

// invokeEditedResponse is invokeEdited that returns the function's whole answer.
func invokeEditedResponse(t *testing.T, em *rie.Emulator, signer demo.Signer, sample string, edit func(ev map[string]any), signed bool) events.APIGatewayV2HTTPResponse {
	t.Helper()
	raw, err := os.ReadFile(sample)
	require.NoError(t, err)
	var req events.APIGatewayV2HTTPRequest
	require.NoError(t, json.Unmarshal(raw, &req))
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(req.Body), &ev))
	edit(ev)
	body, err := json.Marshal(ev)
	require.NoError(t, err)
	req.Body = string(body)
	raw, err = json.Marshal(req)
	require.NoError(t, err)
	payload, _, err := signer.Refresh(raw)
	require.NoError(t, err)
	if !signed {
		req.Headers["stripe-signature"] = "t=" + strconv.FormatInt(time.Now().Unix(), 10) + ",v1=00"
		payload, err = json.Marshal(req)
		require.NoError(t, err)
	}
	res, err := em.Invoke(context.Background(), payload)
	require.NoError(t, err, em.Output())
	require.Equal(t, 200, res.StatusCode, em.Output())
	var out events.APIGatewayV2HTTPResponse
	require.NoError(t, json.Unmarshal(res.Body, &out), string(res.Body))
	return out
}

// startUnderRIE starts f's bootstrap under the Lambda RIE with env; it stops with the test.
func startUnderRIE(t *testing.T, b *sam.Project, f sam.Function, env map[string]string) *rie.Emulator {
	t.Helper()
	bin := binaries(t, b)
	em, err := rie.Start(context.Background(), rie.Options{
		RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: filepath.Join(bin, filepath.Base(f.Folder())), Env: env,
		FunctionName: f.LogicalID, Timeout: time.Duration(f.Timeout) * time.Second, MemoryMB: f.MemorySize,
	})
	require.NoError(t, err)
	t.Cleanup(em.Stop)
	return em
}

// count runs a count(*) query on the database at url.
func count(t *testing.T, url, query string, args ...any) int {
	t.Helper()
	return dbtest.Count(t, url, query, args...)
}

// webhookSetup is the project, the webhook's function and its environment on a throwaway
// database of the test's own.
func webhookSetup(t *testing.T) (*sam.Project, sam.Function, map[string]string) {
	t.Helper()
	b := setup(t)
	f, err := b.Template.Function("PaymentWebhookFunction")
	require.NoError(t, err)
	return b, f, localEnv(t, b, f)
}
