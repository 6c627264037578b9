package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/nudge/lambdafake"
	"github.com/portal-functions/portal-functions/shared/rie"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// deployedShape is payment-webhook and crm-push as Lambda runs them: each built bootstrap under
// the Lambda RIE, on one database, the webhook's nudge going through aws-sdk-go-v2 (endpoint
// override) to a local stand-in of Lambda's Invoke API that invokes crm-push's emulators (two:
// its reserved concurrency), and crm-push talking to the HubSpot stand-in.
type deployedShape struct {
	webhook *rie.Emulator
	hub     *hubspotfake.Server
	lambda  *lambdafake.Server
	env     map[string]string
	signer  demo.Signer
	sample  events.APIGatewayV2HTTPRequest
	dbURL   string
}

func startDeployedShape(t testing.TB, b *sam.Project, nudged bool) *deployedShape {
	t.Helper()
	bin := binaries(t, b)
	wf, err := b.Template.Function("PaymentWebhookFunction")
	require.NoError(t, err)
	cf, err := b.Template.Function("CrmPushFunction")
	require.NoError(t, err)
	d := &deployedShape{dbURL: seededDatabase(t)}
	d.hub = hubspotfake.NewTest(t)
	d.hub.SetLatency(50 * time.Millisecond) // the HubSpot

	crmEnv := b.Env.For(cf)
	crmEnv["DATABASE_URL"] = d.dbURL
	crmEnv["HUBSPOT_BASE_URL"] = d.hub.URL()
	d.hub.SetAccessToken(crmEnv["HUBSPOT_ACCESS_TOKEN"])
	var pushers []*rie.Emulator
	for range 2 {
		em, err := rie.Start(context.Background(), rie.Options{
			RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: filepath.Join(bin, filepath.Base(cf.Folder())), Env: crmEnv,
			FunctionName: "crm-push", Timeout: time.Duration(cf.Timeout) * time.Second, MemoryMB: cf.MemorySize,
		})
		require.NoError(t, err)
		t.Cleanup(em.Stop)
		pushers = append(pushers, em)
	}
	free := make(chan *rie.Emulator, len(pushers))
	for _, em := range pushers {
		free <- em
	}
	d.lambda = lambdafake.New(lambdafake.Function{Name: "crm-push", Concurrency: len(pushers), Run: func(ctx context.Context, payload []byte) {
		em := <-free
		defer func() { free <- em }()
		_, _ = em.Invoke(ctx, payload)
	}})
	lambdaSrv := httptest.NewServer(d.lambda)
	t.Cleanup(lambdaSrv.Close)
	t.Cleanup(d.lambda.Close)

	d.env = b.Env.For(wf)
	d.env["DATABASE_URL"] = d.dbURL
	if nudged {
		d.env["CRM_PUSH_FUNCTION"] = "arn:aws:lambda:eu-west-1:123456789012:function:crm-push"
		d.env["AWS_ENDPOINT_URL_LAMBDA"] = lambdaSrv.URL
		d.env["AWS_REGION"] = "eu-west-1"
		d.env["AWS_ACCESS_KEY_ID"], d.env["AWS_SECRET_ACCESS_KEY"], d.env["AWS_SESSION_TOKEN"] = "AKIDLOCAL", "local", "local"
	}
	d.webhook, err = rie.Start(context.Background(), rie.Options{
		RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: filepath.Join(bin, filepath.Base(wf.Folder())), Env: d.env,
		FunctionName: wf.LogicalID, Timeout: time.Duration(wf.Timeout) * time.Second, MemoryMB: wf.MemorySize,
	})
	require.NoError(t, err)
	t.Cleanup(d.webhook.Stop)
	d.signer = demo.Signer{WebhookSecret: d.env["STRIPE_WEBHOOK_SECRET"]}
	raw, err := os.ReadFile(filepath.Join(b.Root, "events", "payment-webhook-subscription-updated.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &d.sample))
	return d
}

// seededDatabase is a throwaway migrated database with the demo seed.
func seededDatabase(t testing.TB) string {
	t.Helper()
	dbURL := dbtest.NewURL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	require.NoError(t, demo.Seed(ctx, conn))
	require.NoError(t, conn.Close(ctx))
	return dbURL
}

// tenantEvent makes tenant i (a new tenant with its own Stripe customer) and the signed API
// Gateway event of a subscription change of it, built from the sample event.
func (d *deployedShape) tenantEvent(t testing.TB, i int) (tenantID string, payload []byte) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	customer := fmt.Sprintf("cus_nudge_%d", i)
	require.NoError(t, conn.QueryRow(ctx, `insert into public.tenants (name, contact_email) values ($1, $2) returning id::text`,
		fmt.Sprintf("Nudge %d", i), fmt.Sprintf("nudge%d@acme.test", i)).Scan(&tenantID))
	_, err = conn.Exec(ctx, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2::uuid)`, customer, tenantID)
	require.NoError(t, err)

	var body map[string]any
	require.NoError(t, json.Unmarshal([]byte(d.sample.Body), &body))
	body["id"], body["created"] = fmt.Sprintf("evt_nudge_%d_%d", i, time.Now().UnixNano()), time.Now().Unix()
	obj := body["data"].(map[string]any)["object"].(map[string]any)
	obj["id"], obj["customer"] = fmt.Sprintf("sub_nudge_%d", i), customer
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	ev := d.sample
	ev.Body = string(raw)
	apigw, err := json.Marshal(ev)
	require.NoError(t, err)
	payload, _, err = d.signer.Refresh(apigw)
	require.NoError(t, err)
	return tenantID, payload
}

// deliver invokes the webhook and returns when it answered 200.
func (d *deployedShape) deliver(t testing.TB, payload []byte) time.Duration {
	t.Helper()
	start := time.Now()
	res, err := d.webhook.Invoke(context.Background(), payload)
	elapsed := time.Since(start)
	require.NoError(t, err, d.webhook.Output())
	var out events.APIGatewayV2HTTPResponse
	require.NoError(t, json.Unmarshal(res.Body, &out), string(res.Body))
	require.Equal(t, 200, out.StatusCode, "%s\n%s", out.Body, d.webhook.Output())
	return elapsed
}

// upsertedAt is when HubSpot received the tenant's company upsert (zero: not yet).
func (d *deployedShape) upsertedAt(tenantID string) time.Time {
	for _, u := range d.hub.Upserts() {
		if u.ObjectType == "companies" && u.ID == tenantID {
			return u.At
		}
	}
	return time.Time{}
}

// Under the RIE, a payment webhook's commit nudges crm-push (both the built bootstraps), which
// pushes the change to HubSpot without its schedule ever firing.
func TestNudgeStartsCrmPushUnderTheRIE(t *testing.T) {
	t.Parallel()
	d := startDeployedShape(t, setup(t), true)
	tenantID, payload := d.tenantEvent(t, 1)
	d.deliver(t, payload)
	require.EqualValues(t, 1, d.lambda.Accepted(), "the webhook nudged crm-push once")
	require.Eventually(t, func() bool { return !d.upsertedAt(tenantID).IsZero() }, 30*time.Second, 20*time.Millisecond,
		"the nudged crm-push pushed the change\nwebhook:\n%s", d.webhook.Output())
}

// BenchmarkCRMNudge measures the deployed shape under the RIE: 100 payments for distinct
// tenants at 50/s, HubSpot answering in 50 ms; the delay from each webhook's 200 (its commit)
// to HubSpot receiving the company upsert (p50, p95), and the webhook's own latency with the
// nudge against the same webhook without it (p95 of each, and the difference).
func BenchmarkCRMNudge(b *testing.B) {
	p, err := sam.Open(".")
	require.NoError(b, err)
	const n, rate = 100, 50
	plain := startDeployedShape(b, p, false)
	d := startDeployedShape(b, p, true)
	type item struct {
		tenant  string
		payload []byte
	}
	mk := func(sh *deployedShape, base int) []item {
		out := make([]item, n)
		for i := range out {
			out[i].tenant, out[i].payload = sh.tenantEvent(b, base+i)
		}
		return out
	}
	plainItems, items := mk(plain, 0), mk(d, 1000)
	for i := 0; i < b.N; i++ {
		var without, with []time.Duration
		tick := time.NewTicker(time.Second / rate)
		for _, it := range plainItems {
			<-tick.C
			without = append(without, plain.deliver(b, it.payload))
		}
		committed := map[string]time.Time{}
		for _, it := range items {
			<-tick.C
			with = append(with, d.deliver(b, it.payload))
			committed[it.tenant] = time.Now()
		}
		tick.Stop()
		var delays []time.Duration
		deadline := time.Now().Add(2 * time.Minute)
		for len(delays) < n && time.Now().Before(deadline) {
			delays = delays[:0]
			for tenant, at := range committed {
				if up := d.upsertedAt(tenant); !up.IsZero() {
					delays = append(delays, up.Sub(at))
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		require.Len(b, delays, n, "every payment reached HubSpot")
		pct := func(ds []time.Duration, q int) time.Duration {
			s := slices.Clone(ds)
			slices.Sort(s)
			return s[(len(s)-1)*q/100]
		}
		b.ReportMetric(float64(pct(delays, 50).Milliseconds()), "delay_p50_ms")
		b.ReportMetric(float64(pct(delays, 95).Milliseconds()), "delay_p95_ms")
		b.ReportMetric(float64(pct(without, 95).Microseconds())/1000, "webhook_p95_ms_without_nudge")
		b.ReportMetric(float64(pct(with, 95).Microseconds())/1000, "webhook_p95_ms_with_nudge")
		b.ReportMetric(float64(d.lambda.Accepted()), "nudges")
		b.Logf("commit -> HubSpot upsert: p50 %s p95 %s max %s; webhook p95 %s without nudge, %s with; %d nudges, %d crm-push runs",
			pct(delays, 50), pct(delays, 95), pct(delays, 100), pct(without, 95), pct(with, 95), d.lambda.Accepted(), d.lambda.Ran("crm-push"))
	}
}
