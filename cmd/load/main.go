// Command load drives `make dev` at a fixed arrival rate (an open model: requests start on
// schedule whether or not earlier ones have finished, so a slow server shows up as latency
// instead of silently lowering the rate).
//
// Scenario mix (the default) sends signed Stripe webhook deliveries (each a new event id) and
// ticket creations (each a new Idempotency-Key), then reports latency percentiles measured from
// each request's scheduled start, and errors by kind. Scenario crm measures what a customer
// waits for after paying: from a webhook's commit (its 200) to the CRM upsert reaching the
// HubSpot stand-in, each webhook for a tenant of its own (seeded in make dev's database).
//
//	make load                                  # 50 req/s for 30 s against 127.0.0.1:3000
//	make load ARGS='-rate 100 -duration 10s'
//	make load ARGS='-scenario crm -rate 10 -duration 20s'
//
// It only ever targets a loopback address, and stops after -duration or -max requests.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// Errors that stop a run before it starts.
var (
	// ErrNotLoopback refuses any target that is not this machine.
	ErrNotLoopback = errors.New("load: the target must be a loopback address (127.0.0.0/8 or ::1)")
	// ErrUnknownScenario is a -scenario that is not mix or crm.
	ErrUnknownScenario = errors.New("load: unknown scenario")
)

type options struct {
	token       string
	target      *url.URL
	rate        float64
	duration    time.Duration
	max         int
	webhookPct  int
	maxInFlight int
	// warmup (scenario mix) is sent at the same rate before the measured window and not
	// counted: the targets are for a warm server, whose pool is open and whose
	// statements are planned.
	warmup time.Duration
}

func main() {
	target := flag.String("target", "http://127.0.0.1:3000", "base URL of make dev (loopback only)")
	rate := flag.Float64("rate", 50, "requests started per second")
	duration := flag.Duration("duration", 30*time.Second, "how long to send")
	maxRequests := flag.Int("max", 10000, "stop after this many requests")
	webhookPct := flag.Int("webhook-percent", 50, "share of webhook deliveries; the rest are ticket creations")
	inFlight := flag.Int("max-in-flight", 1000, "requests in flight at most; beyond it a request is counted as dropped")
	scenario := flag.String("scenario", "mix", "mix: webhooks and tickets, latency of each answer; crm: delay from a webhook's commit to the CRM upsert; "+
		"reads: the portal's reads (account, tickets, a ticket) at each of -rates; growth: each read at each of -sizes (seeds databases of its own); "+
		"webhook-knee: webhooks alone at each of -rates, then twice the knee; webhook-recovery: webhooks alone along -schedule, seconds to recover after the drop "+
		"(both against cmd/dev -no-workers, with -database its database); cold-start: -fn's first invocation under the Lambda RIE, over -starts fresh starts")
	rates := flag.String("rates", "", "reads, webhook-knee: comma-separated rates to sweep (reads: default -rate alone; webhook-knee: default 200,300,...,800)")
	sizes := flag.String("sizes", "1000,100000,1000000", "growth: rows of the grown tenant, comma-separated")
	others := flag.Int("other-tenants", 1000, "growth: small tenants beside the grown one")
	requests := flag.Int("requests", 300, "growth: timed requests per read and size")
	reuse := flag.Bool("reuse", false, "growth: time the databases an earlier run seeded instead of seeding again")
	benchmarks := flag.String("benchmarks", "", "mix, reads, growth: also write the results into this file's \"## Portal reads\" section")
	token := flag.String("token", "", "the demo owner's access token (default: minted from env.json; a make dev with -ephemeral-standins prints its own, since its issuer differs)")
	label := flag.String("label", "", "reads: name the run (e.g. the branch served), so runs against two servers keep two blocks in -benchmarks")
	database := flag.String("database", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"), "growth: the PostgreSQL server to create the databases on; webhook-knee, webhook-recovery: the target's database")
	schedule := flag.String("schedule", "900x15s,150x20s", "webhook-recovery: RATExDURATION phases; the last one is the drop (e.g. 3x the knee for 15 s, then well under it)")
	warmup := flag.Duration("warmup", 5*time.Second, "mix, webhook-knee, webhook-recovery: warm-up at the measured rate before each measured window (not counted)")
	tenants := flag.Int("tenants", 1000, "webhook-knee, webhook-recovery: tenants the events are spread over (seeded in -database)")
	dup := flag.Float64("dup", 0.1, "webhook-knee, webhook-recovery: share of redeliveries")
	fn := flag.String("fn", "PaymentWebhookFunction", "cold-start: the function (logical id in template.yaml)")
	event := flag.String("event", "events/payment-webhook.json", "cold-start: the sample event each invocation sends")
	starts := flag.Int("starts", 10, "cold-start: fresh starts of the function (per shape)")
	pooler := flag.Bool("pooler", true, "cold-start: also measure through PgBouncer in transaction mode, the local stand-in for Supabase's pooler (needs pgbouncer installed)")
	poolerWarm := flag.Int("pooler-warm", 2, "cold-start: instances started through the pooler before the measured ones, to warm its backends (not counted)")
	deployed := flag.Bool("deployed-shape", true, "crm: also measure the deployed shape (webhook and crm-push bootstraps under the Lambda RIE, the nudge through a local Lambda Invoke stand-in)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	u, err := loopbackTarget(*target)
	o := options{token: *token, target: u, rate: *rate, duration: *duration, max: *maxRequests, webhookPct: *webhookPct, maxInFlight: *inFlight}
	switch {
	case err != nil:
	case *scenario == "mix":
		o.warmup = *warmup
		err = run(ctx, o, *benchmarks)
	case *scenario == "crm":
		err = runBothCRMShapes(ctx, o, *deployed)
	case *scenario == "reads":
		err = runReads(ctx, o, *rates, *benchmarks, *label)
	case *scenario == "growth":
		g := growthOptions{databaseURL: *database, otherTenants: *others, requests: *requests, reuse: *reuse, benchmarks: *benchmarks}
		g.sizes, err = intList(*sizes)
		if err == nil {
			err = runGrowth(ctx, g)
		}
	case *scenario == "webhook-knee" || *scenario == "webhook-recovery":
		wo := webhookOptions{database: *database, tenants: *tenants, tenantFormat: "00000000-0000-4000-8000-%012d", dup: *dup, warmup: *warmup, benchmarks: *benchmarks}
		list := *rates
		if list == "" {
			list = "200,300,400,500,600,700,800"
		}
		if wo.rates, err = intList(list); err == nil {
			wo.schedule, err = parseSchedule(*schedule)
		}
		switch {
		case err != nil:
		case *scenario == "webhook-knee":
			if !flagSet("duration") {
				o.duration = 10 * time.Second // per rate: eight rates fit in about three minutes
			}
			err = runWebhookKnee(ctx, o, wo)
		default:
			err = runWebhookRecovery(ctx, o, wo)
		}
	case *scenario == "cold-start":
		co := coldOptions{fn: *fn, event: *event, starts: max(*starts, 1), benchmarks: *benchmarks, pooler: *pooler, poolerWarm: max(*poolerWarm, 0)}
		if flagSet("database") {
			co.database = *database // else env.json's (make dev's database)
		}
		err = runColdStart(ctx, co)
	default:
		err = fmt.Errorf("%w: %q (want mix, crm, reads, growth, webhook-knee, webhook-recovery or cold-start)", ErrUnknownScenario, *scenario)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// flagSet reports whether the command line set the flag.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func loopbackTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return nil, fmt.Errorf("target %q: want http://127.0.0.1:<port>", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return u, nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil, ErrNotLoopback
	}
	return u, nil
}

// requestMaker builds the i-th request.
type requestMaker struct {
	opts       options
	target     *url.URL
	webhookPct int
	token      string
	secret     string
	event      []byte
	run        string
}

func newRequestMaker(o options) (*requestMaker, error) {
	p, err := sam.Open(".")
	if err != nil {
		return nil, err
	}
	root, envs := p.Root, p.Env
	m := &requestMaker{opts: o, target: o.target, webhookPct: o.webhookPct, run: time.Now().Format("150405"),
		secret: envs["PaymentWebhookFunction"]["STRIPE_WEBHOOK_SECRET"]}
	m.token = o.token
	if m.token == "" {
		m.token, err = demo.Token(envs["TicketCreateFunction"]["SUPABASE_JWT_SECRET"], envs["TicketCreateFunction"]["SUPABASE_URL"], time.Hour)
		if err != nil {
			return nil, err
		}
	}
	// The Stripe event of the webhook sample, re-sent with a new id each time.
	m.event, err = sampleEvent(filepath.Join(root, "events", "payment-webhook.json"))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// sampleEvent is the Stripe event (the body) of a webhook sample event.
func sampleEvent(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the webhook sample: %w", err)
	}
	var sample struct {
		Body string `json:"body"`
	}
	if err := json.Unmarshal(raw, &sample); err != nil {
		return nil, fmt.Errorf("parse the webhook sample %s: %w", filepath.Base(path), err)
	}
	return []byte(sample.Body), nil
}

// webhookRequest is a delivery of body as Stripe signs it.
func webhookRequest(ctx context.Context, o options, body []byte, secret string) (*http.Request, error) {
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret})
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, o.target.JoinPath("/v1/webhooks/stripe").String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build webhook request: %w", err)
	}
	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	r.Header.Set("Stripe-Signature", signed.Header)
	return r, nil
}

func (m *requestMaker) make(ctx context.Context, i int) (*http.Request, string, error) {
	if i%100 < m.webhookPct {
		var ev map[string]any
		if err := json.Unmarshal(m.event, &ev); err != nil {
			return nil, "", fmt.Errorf("parse the webhook sample's Stripe event: %w", err)
		}
		ev["id"] = fmt.Sprintf("evt_load_%s_%d", m.run, i)
		ev["created"] = time.Now().Unix()
		body, err := json.Marshal(ev)
		if err != nil {
			return nil, "", fmt.Errorf("encode event: %w", err)
		}
		r, err := webhookRequest(ctx, m.opts, body, m.secret)
		return r, "webhook", err
	}
	body := fmt.Sprintf(`{"subject":"Load test %d","body":"Generated by make load.","category":"technical","priority":"low"}`, i)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, m.target.JoinPath("/v1/tickets").String(), bytes.NewReader([]byte(body)))
	if err != nil {
		return nil, "", fmt.Errorf("build ticket request: %w", err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+m.token)
	r.Header.Set("Idempotency-Key", uuid.NewString())
	return r, "ticket", nil
}

// result is one request's outcome.
type result struct {
	kind    string
	status  int
	err     error
	latency time.Duration
}

// maker builds the i-th request of a run and names its kind (the report's rows).
type maker interface {
	make(ctx context.Context, i int) (*http.Request, string, error)
}

func run(ctx context.Context, o options, benchmarks string) error {
	m, err := newRequestMaker(o)
	if err != nil {
		return err
	}
	if o.warmup > 0 {
		// Its own maker, so its webhook event ids never repeat the measured ones.
		wm, err := newRequestMaker(o)
		if err != nil {
			return err
		}
		wm.run = "warm" + wm.run
		warm := o
		warm.duration = o.warmup
		fmt.Fprintf(os.Stderr, "load: warming up for %s at %.0f/s (not counted)\n", o.warmup, o.rate)
		if err := fire(ctx, warm, wm, io.Discard); err != nil {
			return err
		}
	}
	var out strings.Builder
	w := io.MultiWriter(os.Stdout, &out)
	fmt.Fprintf(w, "load: %d%% webhooks, %d%% tickets\n", o.webhookPct, 100-o.webhookPct)
	if err := fire(ctx, o, m, w); err != nil || benchmarks == "" {
		return err
	}
	block := fmt.Sprintf("### Writes beside the reads (scenario mix)\n\nGenerated by `make load ARGS='-rate %.0f -warmup %s -duration %s -webhook-percent %d -target <make dev> -benchmarks BENCHMARKS.md'` on %s at commit %s.\n\n```\n%s```\n",
		o.rate, o.warmup, o.duration, o.webhookPct, time.Now().UTC().Format("2006-01-02 15:04 MST"), commit(), out.String())
	return writeBenchmarks(benchmarks, "mix", block)
}

// fire sends o.rate requests a second from m for o.duration (an open model) and reports to w.
func fire(ctx context.Context, o options, m maker, w io.Writer) error {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.maxInFlight, MaxConnsPerHost: 0}}
	total := int(o.rate * o.duration.Seconds())
	if total > o.max {
		total = o.max
	}
	interval := time.Duration(float64(time.Second) / o.rate)
	fmt.Fprintf(w, "load: %d requests at %.0f/s against %s\n", total, o.rate, o.target)

	results := make(chan result, total)
	var inFlight atomic.Int64
	var dropped int
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < total; i++ {
		scheduled := start.Add(time.Duration(i) * interval)
		if d := time.Until(scheduled); d > 0 {
			select {
			case <-ctx.Done():
				total = i
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		if inFlight.Load() >= int64(o.maxInFlight) {
			dropped++
			continue
		}
		req, kind, err := m.make(ctx, i)
		if err != nil {
			return err
		}
		inFlight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inFlight.Add(-1)
			res, err := client.Do(req)
			r := result{kind: kind, err: err}
			if err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				r.status = res.StatusCode
			}
			// From the scheduled start: time spent waiting to be sent counts (no coordinated omission).
			r.latency = time.Since(scheduled)
			results <- r
		}()
	}
	wg.Wait()
	close(results)
	report(w, results, time.Since(start), dropped)
	return nil
}

func report(w io.Writer, results <-chan result, elapsed time.Duration, dropped int) {
	byKind := map[string][]time.Duration{}
	statuses := map[string]map[int]int{}
	errs := map[string]int{}
	n := 0
	for r := range results {
		n++
		if r.err != nil {
			errs[r.kind+": "+r.err.Error()]++
			continue
		}
		byKind[r.kind] = append(byKind[r.kind], r.latency)
		byKind["all"] = append(byKind["all"], r.latency)
		if statuses[r.kind] == nil {
			statuses[r.kind] = map[int]int{}
		}
		statuses[r.kind][r.status]++
	}
	fmt.Fprintf(w, "\nsent %d in %s (%.1f/s achieved), dropped %d (over max in flight)\n\n", n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), dropped)
	fmt.Fprintf(w, "%-10s %6s %9s %9s %9s %9s  %s\n", "kind", "count", "p50", "p95", "p99", "max", "statuses")
	kinds := make([]string, 0, len(byKind))
	for kind := range byKind {
		if kind != "all" {
			kinds = append(kinds, kind)
		}
	}
	sort.Strings(kinds)
	for _, kind := range append(kinds, "all") {
		ls := byKind[kind]
		if len(ls) == 0 {
			continue
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
		st := ""
		keys := make([]int, 0, len(statuses[kind]))
		for code := range statuses[kind] {
			keys = append(keys, code)
		}
		sort.Ints(keys)
		for _, code := range keys {
			st += fmt.Sprintf("%d×%d ", code, statuses[kind][code])
		}
		fmt.Fprintf(w, "%-10s %6d %9s %9s %9s %9s  %s\n", kind, len(ls), pct(ls, 50), pct(ls, 95), pct(ls, 99), ls[len(ls)-1].Round(time.Microsecond*100), st)
	}
	failed := 0
	for _, s := range statuses {
		for code, c := range s {
			if code >= 400 {
				failed += c
			}
		}
	}
	for e, c := range errs {
		fmt.Fprintf(w, "error ×%d: %s\n", c, e)
		failed += c
	}
	fmt.Fprintf(w, "\nerrors: %d (transport errors and 4xx/5xx answers)\n", failed)
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	if i > 0 {
		i--
	}
	return sorted[i].Round(time.Microsecond * 100)
}
