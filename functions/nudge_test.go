package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
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
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

// Provider and AWS latencies of the deployed-shape runs: the HubSpot and Zendesk
// answer in 50 ms; Lambda answers an asynchronous Invoke (202) in tens of milliseconds.
const (
	providerLatency = 50 * time.Millisecond
	invokeLatency   = 20 * time.Millisecond
	// benchInstances is how many instances of the front function a benchmark runs: enough
	// for 50 requests a second to arrive on time (Lambda would start them).
	benchInstances = 3
)

// shape is a request function and its pusher as Lambda runs them: each built bootstrap under
// the Lambda RIE, on one database, the request function's nudge going through aws-sdk-go-v2
// (endpoint override) to a local stand-in of Lambda's Invoke API that invokes the pusher's
// emulators (two: its reserved concurrency).
type shape struct {
	front  *rie.Emulator      // the first instance (whose output a failing test shows)
	free   chan *rie.Emulator // instances not serving a request
	plain  chan *rie.Emulator // the same, of the baseline instances (without the nudge)
	lambda *lambdafake.Server
	env    map[string]string
	dbURL  string
}

// shapeOptions say which pair to run and how.
type shapeOptions struct {
	front, pusher string // logical ids in template.yaml
	pusherName    string // the name the nudge invokes
	nudgeVar      string // CRM_PUSH_FUNCTION or SUPPORT_PUSH_FUNCTION
	window        string // NUDGE_WINDOW ("" for the default)
	instances     int    // of the front function (1 when zero); each coalesces its own nudges
	// baseline is how many instances of the front function without its nudge run beside the
	// nudged ones, on the same database and pushers (which the nudged ones start): the two
	// then differ only in the nudge itself.
	baseline int
	// provider points the pusher's environment at its provider's stand-in.
	provider func(env map[string]string)
	// frontEnv adjusts the front function's environment (its own stand-ins).
	frontEnv func(env map[string]string)
}

func startShape(t testing.TB, b *sam.Project, o shapeOptions) *shape {
	t.Helper()
	bin := binaries(t, b)
	ff, err := b.Template.Function(o.front)
	require.NoError(t, err)
	pf, err := b.Template.Function(o.pusher)
	require.NoError(t, err)
	s := &shape{dbURL: seededDatabase(t)}

	pusherEnv := b.Env.For(pf)
	pusherEnv["DATABASE_URL"] = s.dbURL
	o.provider(pusherEnv)
	var pushers []*rie.Emulator
	for range 2 {
		em, err := rie.Start(context.Background(), rie.Options{
			RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: filepath.Join(bin, filepath.Base(pf.Folder())), Env: pusherEnv,
			FunctionName: o.pusherName, Timeout: time.Duration(pf.Timeout) * time.Second, MemoryMB: pf.MemorySize,
		})
		require.NoError(t, err)
		t.Cleanup(em.Stop)
		pushers = append(pushers, em)
	}
	free := make(chan *rie.Emulator, len(pushers))
	for _, em := range pushers {
		free <- em
	}
	s.lambda = lambdafake.New(lambdafake.Function{Name: o.pusherName, Concurrency: len(pushers), Run: func(ctx context.Context, payload []byte) {
		em := <-free
		defer func() { free <- em }()
		_, _ = em.Invoke(ctx, payload)
	}})
	s.lambda.SetLatency(invokeLatency)
	lambdaSrv := httptest.NewServer(s.lambda)
	t.Cleanup(lambdaSrv.Close)
	t.Cleanup(s.lambda.Close)

	s.env = b.Env.For(ff)
	s.env["DATABASE_URL"] = s.dbURL
	if o.frontEnv != nil {
		o.frontEnv(s.env)
	}
	plainEnv := maps.Clone(s.env)
	s.env[o.nudgeVar] = "arn:aws:lambda:eu-west-1:123456789012:function:" + o.pusherName
	s.env["AWS_ENDPOINT_URL_LAMBDA"] = lambdaSrv.URL
	s.env["AWS_REGION"] = "eu-west-1"
	s.env["AWS_ACCESS_KEY_ID"], s.env["AWS_SECRET_ACCESS_KEY"], s.env["AWS_SESSION_TOKEN"] = "AKIDLOCAL", "local", "local"
	if o.window != "" {
		s.env["NUDGE_WINDOW"] = o.window
	}
	start := func(env map[string]string, n int) chan *rie.Emulator {
		free := make(chan *rie.Emulator, n)
		for range n {
			em, err := rie.Start(context.Background(), rie.Options{
				RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: filepath.Join(bin, filepath.Base(ff.Folder())), Env: env,
				FunctionName: ff.LogicalID, Timeout: time.Duration(ff.Timeout) * time.Second, MemoryMB: ff.MemorySize,
			})
			require.NoError(t, err)
			t.Cleanup(em.Stop)
			if s.front == nil {
				s.front = em
			}
			free <- em
		}
		return free
	}
	s.free = start(s.env, max(o.instances, 1))
	s.plain = start(plainEnv, o.baseline)
	return s
}

// call invokes a free instance of the front function (of the baseline when plain) with an API
// Gateway event (waiting for one, as Lambda would start one) and returns its answer and how
// long the instance took (the RIE's answer: the function's response).
func (s *shape) call(t testing.TB, payload []byte, wantStatus int, plain bool) (events.APIGatewayV2HTTPResponse, time.Duration) {
	t.Helper()
	pool := s.free
	if plain {
		pool = s.plain
	}
	em := <-pool
	defer func() { pool <- em }()
	res, err := em.Invoke(context.Background(), payload)
	require.NoError(t, err, em.Output())
	var out events.APIGatewayV2HTTPResponse
	require.NoError(t, json.Unmarshal(res.Body, &out), string(res.Body))
	require.Equal(t, wantStatus, out.StatusCode, "%s\n%s", out.Body, em.Output())
	return out, res.Elapsed
}

// crmShape is payment-webhook nudging crm-push, crm-push talking to the HubSpot stand-in.
type crmShape struct {
	*shape
	hub    *hubspotfake.Server
	signer demo.Signer
	sample events.APIGatewayV2HTTPRequest
}

func startCRMShape(t testing.TB, b *sam.Project, window string, instances, baseline int) *crmShape {
	t.Helper()
	hub := hubspotfake.NewTest(t)
	hub.SetLatency(providerLatency)
	d := &crmShape{hub: hub}
	d.shape = startShape(t, b, shapeOptions{
		front: "PaymentWebhookFunction", pusher: "CrmPushFunction", pusherName: "crm-push", nudgeVar: "CRM_PUSH_FUNCTION",
		window: window, instances: instances, baseline: baseline,
		provider: func(env map[string]string) {
			env["HUBSPOT_BASE_URL"] = hub.URL()
			hub.SetAccessToken(env["HUBSPOT_ACCESS_TOKEN"])
		},
	})
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
func (d *crmShape) tenantEvent(t testing.TB, i int) (tenantID string, payload []byte) {
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

// deliver invokes the webhook (a baseline instance when plain) and returns how long it took
// to answer 200.
func (d *crmShape) deliver(t testing.TB, payload []byte, plain bool) time.Duration {
	t.Helper()
	_, took := d.call(t, payload, 200, plain)
	return took
}

// upsertedAt is when HubSpot received the tenant's company upsert (zero: not yet).
func (d *crmShape) upsertedAt(tenantID string) time.Time {
	for _, u := range d.hub.Upserts() {
		if u.ObjectType == "companies" && u.ID == tenantID {
			return u.At
		}
	}
	return time.Time{}
}

// supportShape is ticket-create nudging support-push, support-push talking to the Zendesk
// stand-in.
type supportShape struct {
	*shape
	desk   *zendeskfake.TestServer
	signer demo.Signer
	sample events.APIGatewayV2HTTPRequest
}

func startSupportShape(t testing.TB, b *sam.Project, instances, baseline int) *supportShape {
	t.Helper()
	sf, err := b.Template.Function("SupportPushFunction")
	require.NoError(t, err)
	pushEnv := b.Env.For(sf)
	desk := zendeskfake.NewTest(t, pushEnv["ZENDESK_EMAIL"], pushEnv["ZENDESK_API_TOKEN"])
	desk.SetLatency(providerLatency)
	supabase := httptest.NewServer(demo.NewSupabase(pushEnv["SUPABASE_SERVICE_ROLE_KEY"]))
	t.Cleanup(supabase.Close)
	d := &supportShape{desk: desk}
	d.shape = startShape(t, b, shapeOptions{
		front: "TicketCreateFunction", pusher: "SupportPushFunction", pusherName: "support-push", nudgeVar: "SUPPORT_PUSH_FUNCTION",
		instances: instances, baseline: baseline,
		provider: func(env map[string]string) {
			env["ZENDESK_BASE_URL"] = desk.URL()
			env["SUPABASE_URL"] = supabase.URL
		},
		frontEnv: func(env map[string]string) { env["SUPABASE_URL"] = supabase.URL },
	})
	d.signer = demo.Signer{JWTSecret: d.env["SUPABASE_JWT_SECRET"], SupabaseURL: d.env["SUPABASE_URL"], TokenTTL: 10 * time.Minute}
	raw, err := os.ReadFile(filepath.Join(b.Root, "events", "ticket-create.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &d.sample))
	return d
}

// ticketEvent is the demo owner's POST /v1/tickets number i (no attachments, its own
// Idempotency-Key), with a freshly minted token.
func (d *supportShape) ticketEvent(t testing.TB, i int) []byte {
	t.Helper()
	ev := d.sample
	ev.Headers = map[string]string{}
	for k, v := range d.sample.Headers {
		ev.Headers[k] = v
	}
	ev.Body = fmt.Sprintf(`{"subject":"Nudged ticket %d","body":"Please call us back about invoice %d.","category":"billing","priority":"normal"}`, i, i)
	ev.Headers["idempotency-key"] = fmt.Sprintf("nudge-ticket-%d-%d", i, time.Now().UnixNano())
	ev.Headers["content-length"] = strconv.Itoa(len(ev.Body))
	raw, err := json.Marshal(ev)
	require.NoError(t, err)
	payload, _, err := d.signer.Refresh(raw)
	require.NoError(t, err)
	return payload
}

// create invokes ticket-create (a baseline instance when plain) and returns the new ticket's
// id and how long the 201 took.
func (d *supportShape) create(t testing.TB, payload []byte, plain bool) (string, time.Duration) {
	t.Helper()
	out, took := d.call(t, payload, 201, plain)
	var created struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal([]byte(out.Body), &created), out.Body)
	return created.ID, took
}

// createdAt is when Zendesk created the ticket whose external_id is ours (zero: not yet).
func (d *supportShape) createdAt(ticketID string) time.Time {
	if tk, ok := d.desk.Ticket(ticketID); ok {
		return tk.ReceivedAt
	}
	return time.Time{}
}

// Under the RIE, a payment webhook's commit nudges crm-push (both the built bootstraps), which
// pushes the change to HubSpot without its schedule ever firing.
func TestNudgeStartsCrmPushUnderTheRIE(t *testing.T) {
	t.Parallel()
	d := startCRMShape(t, setup(t), "", 1, 0)
	tenantID, payload := d.tenantEvent(t, 1)
	d.deliver(t, payload, false)
	require.EqualValues(t, 1, d.lambda.Accepted(), "the webhook nudged crm-push once")
	require.Eventually(t, func() bool { return !d.upsertedAt(tenantID).IsZero() }, 30*time.Second, 20*time.Millisecond,
		"the nudged crm-push pushed the change\nwebhook:\n%s", d.front.Output())
}

// Under the RIE, a ticket's commit nudges support-push (both the built bootstraps), which
// creates it in Zendesk without its schedule ever firing.
func TestNudgeStartsSupportPushUnderTheRIE(t *testing.T) {
	t.Parallel()
	d := startSupportShape(t, setup(t), 1, 0)
	id, _ := d.create(t, d.ticketEvent(t, 1), false)
	require.EqualValues(t, 1, d.lambda.Accepted(), "ticket-create nudged support-push once")
	require.Eventually(t, func() bool { return !d.createdAt(id).IsZero() }, 30*time.Second, 20*time.Millisecond,
		"the nudged support-push created the ticket\nticket-create:\n%s", d.front.Output())
}

// A payment that commits inside the window of an earlier nudge sends none, and still reaches
// HubSpot without a schedule tick: the crm-push that nudge started keeps polling for the
// nudge's cover. The second payment is sent once the first has been pushed (so a crm-push
// that stopped as soon as its queue was empty would be gone); a long window keeps it inside
// the cover however slow this machine is.
func TestJobsInsideTheNudgeWindowReachHubSpotWithoutTheSchedule(t *testing.T) {
	t.Parallel()
	d := startCRMShape(t, setup(t), "30s", 1, 0)
	first, payload1 := d.tenantEvent(t, 1)
	second, payload2 := d.tenantEvent(t, 2)
	d.deliver(t, payload1, false)
	require.Eventually(t, func() bool { return !d.upsertedAt(first).IsZero() }, 15*time.Second, 20*time.Millisecond,
		"the nudged crm-push pushed the first payment\nwebhook:\n%s", d.front.Output())
	time.Sleep(time.Second) // several of crm-push's polls find its queue empty
	d.deliver(t, payload2, false)
	require.EqualValues(t, 1, d.lambda.Accepted(), "the second payment, inside the window, sent no nudge")
	require.Eventually(t, func() bool { return !d.upsertedAt(second).IsZero() }, 15*time.Second, 20*time.Millisecond,
		"the crm-push of the first nudge pushed the second payment\nwebhook:\n%s", d.front.Output())
}

// pct is the q-th percentile of ds (nearest rank).
func pct(ds []time.Duration, q int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*q/100]
}

// ms is d in milliseconds, for b.ReportMetric.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// paced sends 2n requests on a fixed schedule of rate a second (each in its own goroutine, an
// open model: a slow answer does not delay the next arrival), alternately to the baseline and
// to the nudged side (so both share the machine's state, the pushers' work included, while
// the total stays at rate), the i-th of each side calling its function with i; it returns the
// achieved rate.
func paced(n, rate int, baseline, nudged func(i int)) float64 {
	start := time.Now()
	var calls sync.WaitGroup
	for j := range 2 * n {
		time.Sleep(time.Until(start.Add(time.Duration(j) * time.Second / time.Duration(rate))))
		send, i := []func(int){baseline, nudged}[j%2], j/2
		calls.Go(func() { send(i) })
	}
	calls.Wait()
	return float64(2*n) / time.Since(start).Seconds()
}

// BenchmarkCRMNudge measures the deployed shape under the RIE: payments for distinct tenants
// at 50/s over three webhook instances, HubSpot answering in 50 ms and Lambda's Invoke in 20
// ms, alternating between three webhook instances with the nudge and three without it, on
// the same database and crm-push instances (200 payments each); the delay from each nudged webhook's 200 (its commit) to HubSpot
// receiving the company upsert (p50, p95), the webhook's own latency with and without the
// nudge (p50, p95), and how many requests sent a nudge.
func BenchmarkCRMNudge(b *testing.B) {
	p, err := sam.Open(".")
	require.NoError(b, err)
	const n, rate = 200, 50
	d := startCRMShape(b, p, "", benchInstances, benchInstances)
	type item struct {
		tenant  string
		payload []byte
	}
	mk := func(sh *crmShape, base int) []item {
		out := make([]item, n)
		for i := range out {
			out[i].tenant, out[i].payload = sh.tenantEvent(b, base+i)
		}
		return out
	}
	plainItems, items := mk(d, 0), mk(d, 1000)
	for i := 0; i < b.N; i++ {
		var without, with []time.Duration
		var mu sync.Mutex
		committed := map[string]time.Time{}
		achieved := paced(n, rate, func(i int) {
			t := d.deliver(b, plainItems[i].payload, true)
			mu.Lock()
			defer mu.Unlock()
			without = append(without, t)
		}, func(i int) {
			t := d.deliver(b, items[i].payload, false)
			mu.Lock()
			defer mu.Unlock()
			with = append(with, t)
			committed[items[i].tenant] = time.Now()
		})
		delays := waitFor(b, committed, d.upsertedAt)
		report(b, "commit -> HubSpot upsert", delays, without, with, d.shape, achieved)
	}
}

// BenchmarkSupportNudge is BenchmarkCRMNudge for tickets: POST /v1/tickets at 50/s (200 with
// the nudge, 200 without), Zendesk answering in 50 ms; the delay from each 201 (its commit) to
// Zendesk creating the ticket, and ticket-create's latency with and without the nudge.
func BenchmarkSupportNudge(b *testing.B) {
	p, err := sam.Open(".")
	require.NoError(b, err)
	const n, rate = 200, 50
	d := startSupportShape(b, p, benchInstances, benchInstances)
	for i := 0; i < b.N; i++ {
		var without, with []time.Duration
		committed := map[string]time.Time{}
		plainEvents, evs := make([][]byte, n), make([][]byte, n)
		for i := range n {
			plainEvents[i], evs[i] = d.ticketEvent(b, i), d.ticketEvent(b, n+i)
		}
		var mu sync.Mutex
		achieved := paced(n, rate, func(i int) {
			_, t := d.create(b, plainEvents[i], true)
			mu.Lock()
			defer mu.Unlock()
			without = append(without, t)
		}, func(i int) {
			id, t := d.create(b, evs[i], false)
			mu.Lock()
			defer mu.Unlock()
			with = append(with, t)
			committed[id] = time.Now()
		})
		delays := waitFor(b, committed, d.createdAt)
		report(b, "commit -> Zendesk ticket", delays, without, with, d.shape, achieved)
	}
}

// waitFor waits (at most two minutes) until at returns a time for every key of committed and
// returns each key's delay from its commit.
func waitFor(b *testing.B, committed map[string]time.Time, at func(string) time.Time) []time.Duration {
	var delays []time.Duration
	deadline := time.Now().Add(2 * time.Minute)
	for len(delays) < len(committed) && time.Now().Before(deadline) {
		delays = delays[:0]
		for key, c := range committed {
			if got := at(key); !got.IsZero() {
				delays = append(delays, got.Sub(c))
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.Len(b, delays, len(committed), "every commit reached the provider")
	return delays
}

// report prints one run's figures: the delays, both sides' answers, and the achieved rate.
func report(b *testing.B, what string, delays, without, with []time.Duration, s *shape, achieved float64) {
	b.ReportMetric(ms(pct(delays, 50)), "delay_p50_ms")
	b.ReportMetric(ms(pct(delays, 95)), "delay_p95_ms")
	b.ReportMetric(ms(pct(without, 50)), "p50_ms_without_nudge")
	b.ReportMetric(ms(pct(with, 50)), "p50_ms_with_nudge")
	b.ReportMetric(ms(pct(without, 95)), "p95_ms_without_nudge")
	b.ReportMetric(ms(pct(with, 95)), "p95_ms_with_nudge")
	b.ReportMetric(float64(s.lambda.Accepted()), "nudges")
	b.Logf("%s: p50 %s p95 %s max %s over %d (%.1f/s achieved); answer p50/p95 %s/%s without nudge, %s/%s with (p95 %+.1f ms); %d nudges for %d requests",
		what, pct(delays, 50).Round(time.Millisecond), pct(delays, 95).Round(time.Millisecond), pct(delays, 100).Round(time.Millisecond), len(delays), achieved,
		pct(without, 50).Round(100*time.Microsecond), pct(without, 95).Round(100*time.Microsecond),
		pct(with, 50).Round(100*time.Microsecond), pct(with, 95).Round(100*time.Microsecond), ms(pct(with, 95))-ms(pct(without, 95)),
		s.lambda.Accepted(), len(with))
}
