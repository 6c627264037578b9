package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/metrics"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
	"github.com/portal-functions/portal-functions/shared/web"
)

// BenchmarkWebhookDelivery is one delivery end to end, warm, in the deployed function's shape:
// an API Gateway HTTP API event as the Lambda runtime hands it over (JSON, decoded by
// aws-lambda-go as lambda.Start does) through web.Lambda, the function's middleware,
// signature check, parse, the transaction (claim, resolve, lock, apply, CRM job) on the real
// PostgreSQL, and the response event encoded for the runtime. Each iteration is a new
// invoice.paid for the same tenant, so each one writes. It reports the deliveries' p50 and p95
// and deliveries/s (one at a time, as one Lambda container serves them). Measured on the
// 2-core development machine while shared with other work (load 7-9):
// 3.7 ms/op, p50 2.8 ms, p95 8.6 ms, 270 deliveries/s
// (go test -run '^$' -bench WebhookDelivery -benchtime 2000x ./shared/billing/).
// It also reports figures that do not depend on the machine's load: the database work per
// delivery as the client sees it (statements and round trips, counted by a pgx tracer), the
// Go side's allocations (-benchmem's allocs/op and B/op), and cpu-us/op, this process's CPU
// time (user and system, from getrusage) per delivery: the function's own CPU, PostgreSQL's
// excluded, with the HTTP server's and the Lambda runtime's I/O left out.
func BenchmarkWebhookDelivery(b *testing.B) { benchmarkWebhookDelivery(b) }

// BenchmarkWebhookDeliveryPrepared is BenchmarkWebhookDelivery on a pool that prepares its
// statements (DB_PREPARED_STATEMENTS=true: a direct connection, or a pooler in session mode),
// for `BENCH=BenchmarkWebhookDeliveryPrepared make bench-pg`.
func BenchmarkWebhookDeliveryPrepared(b *testing.B) { benchmarkWebhookDelivery(b, dbtest.Prepared) }

func benchmarkWebhookDelivery(b *testing.B, opts ...dbtest.Option) {
	var counter *dbtest.Counter
	bb := setup(b, counted(&counter), pooled(opts...))
	now := time.Now()
	invocations := invoicePaidInvocations(b, bb, now, b.N)
	fn := lambda.NewHandler(web.Lambda(bb.handler))
	durations := make([]time.Duration, b.N)
	counter.Reset()
	cpu := processCPU(b)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		invokeOK(b, fn, invocations[i])
		durations[i] = time.Since(start)
	}
	b.StopTimer()
	cpu = processCPU(b) - cpu
	work := counter.Reset()
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
	b.ReportMetric(float64(work.Statements)/float64(b.N), "statements/op")
	b.ReportMetric(float64(work.RoundTrips+work.Describes)/float64(b.N), "roundtrips/op")
	slices.Sort(durations)
	b.ReportMetric(float64(durations[b.N/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(durations[b.N*95/100].Microseconds())/1000, "p95-ms")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// deliveryAllocBudget bounds the Go side's allocations per delivery
// (TestWebhookDeliveryAllocations). 350 when it was set, with the delivery at 324 (378 on main
// 1089394, before pgtype arguments instead of pointers, references and metadata read in place,
// no duplicate-name tracking and the 200 body written directly; a hand-written signature check
// took it to 306 but was left out: the signature is stripe-go's, as DESIGN.md says); 425 when
// it was first set, 459 on main 9769d37 and 637 through the HTTP handler alone on main
// 74a0e32. The headroom absorbs what pgx's pool and Go's maps allocate now and then. Raise it
// only for a reason the commit names.
const deliveryAllocBudget = 350

// A delivery through the deployed shape (the runtime's JSON event, web.Lambda, the handler, the
// transaction, the response) allocates within deliveryAllocBudget and starts no goroutine:
// allocations are most of the Go side's CPU beyond the I/O (the allocating and the collecting),
// a goroutine (a detached nudge, a per-request watcher) is a scheduling round and a wake-up of
// the runtime on every delivery, and a count, unlike a time, does not depend on the machine,
// so a change that adds some shows here.
func TestWebhookDeliveryAllocations(t *testing.T) {
	// Not parallel: AllocsPerRun counts the allocations of the whole process, and the runtime
	// counts the goroutines the whole process starts.
	bb := setup(t)
	const runs = 40
	invocations := invoicePaidInvocations(t, bb, time.Now(), 2*runs+1) // AllocsPerRun warms up once
	fn := lambda.NewHandler(web.Lambda(bb.handler))
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		invokeOK(t, fn, invocations[i])
		i++
	})
	t.Logf("%.0f allocations per delivery (budget %d)", allocs, deliveryAllocBudget)
	require.LessOrEqual(t, allocs, float64(deliveryAllocBudget))

	created := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(created)
	before := created[0].Value.Uint64()
	for ; i < len(invocations); i++ {
		invokeOK(t, fn, invocations[i])
	}
	metrics.Read(created)
	require.Zero(t, created[0].Value.Uint64()-before, "goroutines started by %d deliveries", runs)
}

// invoicePaidInvocations are n runtime invocations, each a new invoice.paid for bb's tenant, a
// second apart and older than now: Stripe's created has one-second resolution, and an event of
// the same second as the stored facet changes nothing (no write to measure).
func invoicePaidInvocations(t testing.TB, bb *bundle, now time.Time, n int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		at := now.Add(time.Duration(i-n) * time.Second)
		payload := bb.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, at,
			bb.invoice(t, invoiceSpec{id: "in_" + randomID(14), customer: bb.customer, subscription: "sub_1", amount: 4900, paid: true}, at))
		var err error
		out[i], err = json.Marshal(gatewayEvent(payload, billing.SignedTestEvent(testSecret, payload, now)))
		require.NoError(t, err)
	}
	return out
}

// invokeOK invokes fn with the runtime's event and fails unless the delivery was answered 200.
func invokeOK(t testing.TB, fn lambda.Handler, invocation []byte) {
	res, err := fn.Invoke(context.Background(), invocation)
	if err != nil || !bytes.Contains(res, []byte(`"statusCode":200,`)) {
		t.Fatalf("delivery: %v %s", err, res)
	}
}

// gatewayEvent is the API Gateway HTTP API (payload format 2.0) event of a Stripe delivery, as
// API Gateway hands it to the function: lower-cased headers, the body as text.
func gatewayEvent(payload []byte, signature string) events.APIGatewayV2HTTPRequest {
	return events.APIGatewayV2HTTPRequest{
		Version:  "2.0",
		RouteKey: billing.WebhookRoute,
		RawPath:  "/v1/webhooks/stripe",
		Headers: map[string]string{
			"content-type":     "application/json; charset=utf-8",
			"content-length":   strconv.Itoa(len(payload)),
			"host":             "api.example.test",
			"stripe-signature": signature,
			"user-agent":       "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
		},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:   billing.WebhookRoute,
			Stage:      "$default",
			RequestID:  "req-" + randomID(12),
			DomainName: "api.example.test",
			HTTP:       events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: http.MethodPost, Path: "/v1/webhooks/stripe", SourceIP: "198.51.100.7"},
		},
		Body: string(payload),
	}
}

// processCPU is the CPU time (user and system) this process has used so far.
func processCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A database that cannot be reached answers 503 (Stripe retries), counted as failed.
func TestWebhookAnswers503WhenTheDatabaseIsDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	down, err := db.Open(t.Context(), "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1",
		db.Options{Lazy: true, ConnectTimeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(down.Close)
	v, err := billing.NewVerifier(billing.VerifierOptions{Secrets: []string{testSecret}})
	require.NoError(t, err)
	metrics := &telemetrytest.Buffer{}
	b.handler = web.Wrap(billing.NewWebhookHandler(v, billing.NewProcessor(down, nil), billing.WebhookOptions{
		Metrics:    telemetry.NewMetrics(metrics, "payment-webhook"),
		Rejections: down, // noting the refusal fails too: logged, and the answer stays 503
	}), web.Options{Logger: telemetry.NewLogger(io.Discard, "payment-webhook", slog.LevelInfo)})
	now := time.Now()
	rec := b.deliver(t, b.stripeEvent(t, "evt_"+randomID(24), billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_down", customer: b.customer, subscription: "sub_1", amount: 1, paid: true}, now)), now, testSecret)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	require.Equal(t, problem.ContentType, rec.Header().Get("Content-Type"))
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	m := metrics.Lines(t)
	require.Len(t, m, 1)
	require.Equal(t, "failed", m[0]["Outcome"])
	require.Equal(t, billing.TypeInvoicePaid, m[0]["EventType"])
}

// enqueuerFake fails the follow-up jobs, so the delivery's transaction rolls back.
type enqueuerFake struct {
	EnqueueCRMSyncFunc func() error
}

func (f enqueuerFake) EnqueueCRMSync(context.Context, pgx.Tx, uuid.UUID, string, int64) error {
	return f.EnqueueCRMSyncFunc()
}

func (f enqueuerFake) EnqueueHelpdeskTicket(context.Context, pgx.Tx, uuid.UUID, uuid.UUID) error {
	return f.EnqueueCRMSyncFunc()
}

func (f enqueuerFake) EnqueueBillingRefresh(context.Context, pgx.Tx, uuid.UUID, string, time.Time) error {
	return f.EnqueueCRMSyncFunc()
}

// A delivery that fails after it was verified answers 500 (Stripe retries), writes nothing of
// the event, and is noted for delivery health with its event id.
func TestWebhookFailureIsNotedForDeliveryHealth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	v, err := billing.NewVerifier(billing.VerifierOptions{Secrets: []string{testSecret}})
	require.NoError(t, err)
	broken := enqueuerFake{EnqueueCRMSyncFunc: func() error { return errors.New("queue table is locked") }}
	b.handler = web.Wrap(billing.NewWebhookHandler(v, billing.NewProcessor(b.pool, broken), billing.WebhookOptions{Rejections: b.pool}),
		web.Options{Logger: telemetry.NewLogger(io.Discard, "payment-webhook", slog.LevelInfo)})
	now := time.Now()
	id := "evt_" + randomID(24)
	rec := b.deliver(t, b.stripeEvent(t, id, billing.TypeInvoicePaid, now,
		b.invoice(t, invoiceSpec{id: "in_fail", customer: b.customer, subscription: "sub_1", email: "payer@acme.test", amount: 1, paid: true}, now)), now, testSecret)
	require.Equal(t, http.StatusInternalServerError, rec.Code, rec.Body.String())
	require.Zero(t, b.count(t, `select count(*) from private.stripe_events`))
	require.Equal(t, []string{"error 1 500 " + id}, b.strings(t, `select reason || ' ' || refused || ' ' || last_status || ' ' || last_event_id from private.webhook_rejection_counts`))
}
