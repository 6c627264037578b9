package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/portal-functions/portal-functions/shared/sam"
)

// Scenarios webhook-knee and webhook-recovery drive the payment webhook alone (served by
// `cmd/dev -no-workers`) with the event stream of the side-by-side harness
// (../shared/bench/webhookload): 1,000 UUID tenants, the four event types in its weights,
// 10 % redeliveries, an open model with latency counted from each request's due time.
// webhook-knee finds the highest rate sustained (p95 < 100 ms, no errors, at least 97 % of
// the offered rate answered 2xx) on a fine grid, then offers twice that; webhook-recovery
// offers a rate well past the knee and then one well under it, and counts the seconds from
// the drop until every one-second bucket is healthy again. Both check afterwards, in the
// server's database, that every delivery answered 2xx was stored (no acknowledged delivery
// lost), and that the server still answers (it never crashed).

// healthyP95 and healthyShare are the driver's verdict, per rate and per one-second bucket.
const (
	healthyP95   = 100 * time.Millisecond
	healthyShare = 0.97
)

// ErrBadSchedule is a -schedule that does not parse.
var ErrBadSchedule = errors.New("load: -schedule wants RATExDURATION,... (e.g. 900x15s,150x20s)")

// webhookOptions are the flags of the webhook scenarios.
type webhookOptions struct {
	database     string
	tenants      int
	tenantFormat string
	dup          float64
	warmup       time.Duration
	rates        []int
	schedule     []phase
	benchmarks   string
}

// phase is a stretch of the run at one rate.
type phase struct {
	rate     float64
	duration time.Duration
}

func parseSchedule(s string) ([]phase, error) {
	var out []phase
	for _, f := range strings.Split(s, ",") {
		r, d, ok := strings.Cut(strings.TrimSpace(f), "x")
		rate, err1 := strconv.ParseFloat(r, 64)
		dur, err2 := time.ParseDuration(d)
		if !ok || err1 != nil || err2 != nil || rate <= 0 || dur < time.Second {
			return nil, fmt.Errorf("%w: %q", ErrBadSchedule, f)
		}
		out = append(out, phase{rate, dur})
	}
	return out, nil
}

func (p phase) String() string { return fmt.Sprintf("%.0f/s for %s", p.rate, p.duration) }

// eventKind is one event type of the stream: a project sample event and its weight in the
// harness's mix.
type eventKind struct {
	typ    string
	weight int
	tmpl   map[string]any
}

// webhookEvents builds the stream: each sample event re-addressed to one of the tenants
// (its customer, subscription and metadata.tenant_id, as the harness's events carry them),
// with fresh ids, and a share of redeliveries of bodies already sent.
type webhookEvents struct {
	kinds  []eventKind
	total  int
	o      webhookOptions
	rng    *rand.Rand
	run    string
	seq    int
	bodies [][]byte
	ids    []string
	secret string
}

func newWebhookEvents(o webhookOptions) (*webhookEvents, error) {
	p, err := sam.Open(".")
	if err != nil {
		return nil, err
	}
	e := &webhookEvents{o: o, rng: rand.New(rand.NewPCG(1, 2)), run: strconv.FormatInt(time.Now().UnixMilli()%1e9, 36),
		secret: p.Env["PaymentWebhookFunction"]["STRIPE_WEBHOOK_SECRET"]}
	// The harness's mix: subscription updated 4, invoice paid 3, payment failed 1, checkout 2.
	for _, k := range []struct {
		file   string
		weight int
	}{{"payment-webhook-subscription-updated.json", 4}, {"payment-webhook.json", 3}, {"payment-webhook-payment-failed.json", 1}, {"payment-webhook-checkout-completed.json", 2}} {
		body, err := sampleEvent(filepath.Join(p.Root, "events", k.file))
		if err != nil {
			return nil, err
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			return nil, fmt.Errorf("parse %s: %w", k.file, err)
		}
		typ, _ := ev["type"].(string)
		e.kinds = append(e.kinds, eventKind{typ: typ, weight: k.weight, tmpl: ev})
		e.total += k.weight
	}
	return e, nil
}

func (e *webhookEvents) newID(prefix string) string {
	e.seq++
	return prefix + "load" + e.run + "_" + strconv.Itoa(e.seq)
}

// next is the body and event id of the next delivery: a redelivery of an earlier body with
// probability dup, else a new event.
func (e *webhookEvents) next(now time.Time) ([]byte, string, error) {
	if len(e.bodies) > 0 && e.rng.Float64() < e.o.dup {
		i := e.rng.IntN(len(e.bodies))
		return e.bodies[i], e.ids[i], nil
	}
	x := e.rng.IntN(e.total)
	k := e.kinds[0]
	for _, c := range e.kinds {
		if x < c.weight {
			k = c
			break
		}
		x -= c.weight
	}
	t := e.rng.IntN(e.o.tenants)
	tenantID := fmt.Sprintf(e.o.tenantFormat, t)
	customer, subscription := fmt.Sprintf("cus_load%06d", t), fmt.Sprintf("sub_load%06d", t)
	ev := maps.Clone(k.tmpl)
	data := maps.Clone(ev["data"].(map[string]any))
	obj := maps.Clone(data["object"].(map[string]any))
	meta := map[string]any{"tenant_id": tenantID}
	obj["customer"], obj["metadata"] = customer, meta
	switch {
	case strings.HasPrefix(k.typ, "customer.subscription."):
		obj["id"] = subscription
	case strings.HasPrefix(k.typ, "invoice."):
		obj["id"], obj["subscription"] = e.newID("in_"), subscription
		obj["subscription_details"] = map[string]any{"metadata": meta}
	case strings.HasPrefix(k.typ, "checkout.session."):
		obj["id"], obj["subscription"], obj["client_reference_id"] = e.newID("cs_"), subscription, tenantID
	}
	data["object"] = obj
	id := e.newID("evt_")
	ev["data"], ev["id"], ev["created"] = data, id, now.Unix()
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, "", fmt.Errorf("encode event: %w", err)
	}
	e.bodies, e.ids = append(e.bodies, body), append(e.ids, id)
	return body, id, nil
}

// shot is one delivery of a run: when it was due (from the run's start), its event, and
// its outcome.
type shot struct {
	due     time.Duration
	id      string
	body    []byte
	latency time.Duration
	status  int
	errKind string // "" for an answer; else timeout, conn, overflow
}

// maxInFlight bounds the driver's outstanding requests; a send over it counts as an error
// (the server is not answering at all).
const maxInFlight = 5000

// drive sends the schedule's deliveries, each at its due time whatever came before, and
// returns them with their outcomes.
func drive(ctx context.Context, url string, sched []phase, ev *webhookEvents) ([]shot, error) {
	var shots []shot
	var at time.Duration
	now := time.Now()
	for _, p := range sched {
		n := int(p.rate * p.duration.Seconds())
		for j := range n {
			body, id, err := ev.next(now)
			if err != nil {
				return nil, err
			}
			shots = append(shots, shot{due: at + time.Duration(float64(j)/p.rate*float64(time.Second)), id: id, body: body})
		}
		at += p.duration
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: maxInFlight}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	var inFlight atomic.Int64
	start := time.Now()
	for i := range shots {
		s := &shots[i]
		if d := time.Until(start.Add(s.due)); d > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return nil, ctx.Err()
			case <-time.After(d):
			}
		}
		if inFlight.Load() >= maxInFlight {
			s.errKind = "overflow"
			continue
		}
		inFlight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inFlight.Add(-1)
			s.status, s.errKind = deliver(ctx, client, url, s.body, ev.secret)
			s.latency = time.Since(start.Add(s.due))
		}()
	}
	wg.Wait()
	return shots, nil
}

// deliver posts one signed delivery and returns its status, or the kind of transport error.
func deliver(ctx context.Context, client *http.Client, url string, body []byte, secret string) (int, string) {
	signed := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "conn"
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", signed.Header)
	res, err := client.Do(req)
	if err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, "timeout"
		}
		return 0, "conn"
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res.StatusCode, ""
}

// window is the verdict over the deliveries due in [from, to).
type window struct {
	offered, ok, shed, other int
	p95                      time.Duration
	seconds                  float64
}

func judge(shots []shot, from, to time.Duration) window {
	w := window{seconds: (to - from).Seconds()}
	var lat []time.Duration
	for _, s := range shots {
		if s.due < from || s.due >= to {
			continue
		}
		w.offered++
		switch {
		case s.errKind == "" && s.status/100 == 2:
			w.ok++
			lat = append(lat, s.latency)
		case s.status == http.StatusServiceUnavailable:
			w.shed++
		default:
			w.other++
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		w.p95 = lat[max((len(lat)*95+99)/100-1, 0)]
	}
	return w
}

func (w window) healthy() bool {
	return w.offered > 0 && w.shed == 0 && w.other == 0 && w.p95 < healthyP95 && float64(w.ok) >= healthyShare*float64(w.offered)
}

func (w window) okRate() float64 { return float64(w.ok) / w.seconds }

func (w window) p95ms() string {
	if w.ok == 0 {
		return "—"
	}
	return strconv.FormatFloat(float64(w.p95)/float64(time.Millisecond), 'f', 1, 64)
}

// errorKinds counts the run's failures by kind, for the table.
func errorKinds(shots []shot, from, to time.Duration) string {
	m := map[string]int{}
	for _, s := range shots {
		switch {
		case s.due < from || s.due >= to:
		case s.errKind != "":
			m[s.errKind]++
		case s.status/100 != 2:
			m[strconv.Itoa(s.status)]++
		}
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, " %s=%d", k, m[k])
	}
	return cmp.Or(strings.TrimPrefix(b.String(), " "), "0")
}

// seedWebhookTenants makes sure the stream's tenants exist in the server's database.
func seedWebhookTenants(ctx context.Context, o webhookOptions) error {
	conn, err := pgx.Connect(ctx, o.database)
	if err != nil {
		return fmt.Errorf("connect to the server's database: %w", err)
	}
	defer conn.Close(ctx)
	ids := make([]string, o.tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf(o.tenantFormat, i)
	}
	if _, err := conn.Exec(ctx, `insert into public.tenants (id, name)
		select id, 'load ' || id from unnest($1::uuid[]) id on conflict do nothing`, ids); err != nil {
		return fmt.Errorf("seed the tenants (is -database the one the server uses?): %w", err)
	}
	return nil
}

// acknowledgedStored is how many distinct events answered 2xx there were, and how many of
// them the server's database holds.
func acknowledgedStored(ctx context.Context, o webhookOptions, shots []shot) (acked, stored int, err error) {
	seen := map[string]bool{}
	var ids []string
	for _, s := range shots {
		if s.errKind == "" && s.status/100 == 2 && !seen[s.id] {
			seen[s.id] = true
			ids = append(ids, s.id)
		}
	}
	conn, err := pgx.Connect(ctx, o.database)
	if err != nil {
		return 0, 0, fmt.Errorf("connect to the server's database: %w", err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `select count(*) from private.stripe_events where id = any($1)`, ids).Scan(&stored)
	if err != nil {
		return 0, 0, fmt.Errorf("count the stored events: %w", err)
	}
	return len(ids), stored, nil
}

// alive reports whether the server still answers its health check after the run.
func alive(ctx context.Context, base string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/health", nil)
	if err != nil {
		return false
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = res.Body.Close()
	return res.StatusCode < 500
}

// afterRun is the part of both reports that checks the run's guarantees.
func afterRun(ctx context.Context, o options, wo webhookOptions, shots []shot, w io.Writer) error {
	acked, stored, err := acknowledgedStored(ctx, wo, shots)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nAcknowledged deliveries lost: %d (%d distinct events answered 2xx, %d of them stored in private.stripe_events).\n", acked-stored, acked, stored)
	fmt.Fprintf(w, "Server still answering GET /v1/health after the run: %v.\n", alive(ctx, strings.TrimRight(o.target.String(), "/")))
	return nil
}

func webhookURL(o options) string { return o.target.JoinPath("/v1/webhooks/stripe").String() }

// runWebhookKnee offers each of wo.rates (warm-up, then the measured window), takes the
// highest rate that passed before the first that failed as the knee, then offers twice the
// knee the same way.
func runWebhookKnee(ctx context.Context, o options, wo webhookOptions) error {
	if err := seedWebhookTenants(ctx, wo); err != nil {
		return err
	}
	ev, err := newWebhookEvents(wo)
	if err != nil {
		return err
	}
	type step struct {
		rate int
		w    window
		errs string
	}
	var steps []step
	var all []shot
	try := func(rate int) (step, error) {
		fmt.Fprintf(os.Stderr, "load: %d/s for %s + %s\n", rate, wo.warmup, o.duration)
		shots, err := drive(ctx, webhookURL(o), []phase{{float64(rate), wo.warmup + o.duration}}, ev)
		if err != nil {
			return step{}, err
		}
		all = append(all, shots...)
		s := step{rate: rate, w: judge(shots, wo.warmup, wo.warmup+o.duration), errs: errorKinds(shots, wo.warmup, wo.warmup+o.duration)}
		time.Sleep(2 * time.Second) // let the last answers drain before the next rate
		return s, nil
	}
	var verdicts []window
	for _, r := range wo.rates {
		s, err := try(r)
		if err != nil {
			return err
		}
		steps, verdicts = append(steps, s), append(verdicts, s.w)
	}
	knee := kneeOf(verdicts)
	var past *step
	if knee >= 0 {
		s, err := try(2 * steps[knee].rate)
		if err != nil {
			return err
		}
		past = &s
	}
	var out strings.Builder
	w := io.MultiWriter(os.Stdout, &out)
	fmt.Fprintf(w, "Each rate: %s of warm-up, then %s measured. Verdict per rate: p95 < %s, no errors, at least %.0f %% of the offered rate answered 2xx (503 is the shedding, counted as an error).\n\n",
		wo.warmup, o.duration, healthyP95, healthyShare*100)
	fmt.Fprintln(w, "| offered/s | ok/s | p95 ms | errors (kind=count) | verdict |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, s := range append(steps, derefSteps(past)...) {
		verdict := "fail"
		if s.w.healthy() {
			verdict = "pass"
		}
		fmt.Fprintf(w, "| %d | %.0f | %s | %s | %s |\n", s.rate, s.w.okRate(), s.w.p95ms(), s.errs, verdict)
	}
	fmt.Fprintln(w)
	switch {
	case knee < 0:
		fmt.Fprintf(w, "Knee: below %d/s, the lowest rate offered.\n", wo.rates[0])
	default:
		k := steps[knee]
		fmt.Fprintf(w, "Knee: %d/s (%.0f ok/s). At twice the knee, %d/s offered: %.0f ok/s, %.0f %% of the knee's throughput (target: at least 90 %%).\n",
			k.rate, k.w.okRate(), past.rate, past.w.okRate(), past.w.okRate()/k.w.okRate()*100)
	}
	if err := afterRun(ctx, o, wo, all, w); err != nil {
		return err
	}
	return writeWebhookBlock(wo.benchmarks, "knee", fmt.Sprintf("### The knee on a fine grid, and twice the knee\n\nGenerated by `make load ARGS='-scenario webhook-knee -rates %s -warmup %s -duration %s -target <cmd/dev -no-workers> -database <its database> -benchmarks BENCHMARKS.md'` on %s at commit %s.\n\n%s",
		joinInts(wo.rates), wo.warmup, o.duration, time.Now().UTC().Format("2006-01-02 15:04 MST"), commit(), out.String()))
}

func derefSteps[T any](p *T) []T {
	if p == nil {
		return nil
	}
	return []T{*p}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// runWebhookRecovery offers the schedule and reports each second, and how long after the
// last phase began (the drop) the buckets turned healthy for good.
func runWebhookRecovery(ctx context.Context, o options, wo webhookOptions) error {
	if len(wo.schedule) < 2 {
		return fmt.Errorf("%w: a recovery needs at least two phases (past the knee, then the drop)", ErrBadSchedule)
	}
	if err := seedWebhookTenants(ctx, wo); err != nil {
		return err
	}
	ev, err := newWebhookEvents(wo)
	if err != nil {
		return err
	}
	// Warm, not counted: the pool's connections and the first plans.
	fmt.Fprintf(os.Stderr, "load: warming up for %s at %.0f/s (not counted)\n", wo.warmup, wo.schedule[len(wo.schedule)-1].rate)
	if _, err := drive(ctx, webhookURL(o), []phase{{wo.schedule[len(wo.schedule)-1].rate, wo.warmup}}, ev); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "load: schedule %v\n", wo.schedule)
	shots, err := drive(ctx, webhookURL(o), wo.schedule, ev)
	if err != nil {
		return err
	}
	var drop, end time.Duration
	for i, p := range wo.schedule {
		if i == len(wo.schedule)-1 {
			drop = end
		}
		end += p.duration
	}
	var out strings.Builder
	w := io.MultiWriter(os.Stdout, &out)
	var parts []string
	for _, p := range wo.schedule {
		parts = append(parts, p.String())
	}
	fmt.Fprintf(w, "Schedule: %s; second 0 is the drop to the last rate. A bucket holds the deliveries due in that second; healthy: p95 < %s, no errors, at least %.0f %% answered 2xx (503 is the shedding, counted as an error).\n\n",
		strings.Join(parts, ", then "), healthyP95, healthyShare*100)
	fmt.Fprintln(w, "| second | offered | ok | 503 | other errors | p95 ms | healthy |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- |")
	buckets := perSecond(shots, end)
	for i, b := range buckets {
		mark := ""
		if b.healthy() {
			mark = "yes"
		}
		fmt.Fprintf(w, "| %+d | %d | %d | %d | %d | %s | %s |\n", i-int(drop/time.Second), b.offered, b.ok, b.shed, b.other, b.p95ms(), mark)
	}
	recovered := recoveredAfter(buckets, int(drop/time.Second))
	fmt.Fprintln(w)
	past, under := judge(shots, 0, drop), judge(shots, drop, end)
	fmt.Fprintf(w, "Before the drop: %.0f ok/s of %.0f/s offered (%s). After it: %.0f ok/s of %.0f/s offered.\n",
		past.okRate(), float64(past.offered)/past.seconds, errorKinds(shots, 0, drop), under.okRate(), float64(under.offered)/under.seconds)
	if recovered < 0 {
		fmt.Fprintf(w, "Recovery: not within the %s after the drop (target: 5 s).\n", end-drop)
	} else {
		fmt.Fprintf(w, "Recovery: healthy from second %d after the drop on, to the end of the run (target: within 5 s).\n", recovered)
	}
	if err := afterRun(ctx, o, wo, shots, w); err != nil {
		return err
	}
	return writeWebhookBlock(wo.benchmarks, "recovery", fmt.Sprintf("### Recovery after the rate drops\n\nGenerated by `make load ARGS='-scenario webhook-recovery -schedule %s -warmup %s -target <cmd/dev -no-workers> -database <its database> -benchmarks BENCHMARKS.md'` on %s at commit %s.\n\n%s",
		scheduleFlag(wo.schedule), wo.warmup, time.Now().UTC().Format("2006-01-02 15:04 MST"), commit(), out.String()))
}

// perSecond is the verdict of each second of a run that lasted end.
func perSecond(shots []shot, end time.Duration) []window {
	var buckets []window
	for at := time.Duration(0); at < end; at += time.Second {
		buckets = append(buckets, judge(shots, at, at+time.Second))
	}
	return buckets
}

// recoveredAfter is how many seconds after bucket drop the buckets turned healthy for good
// (to the end of the run), or -1 when the last one is not healthy.
func recoveredAfter(buckets []window, drop int) int {
	from := len(buckets)
	for from > drop && buckets[from-1].healthy() {
		from--
	}
	if from == len(buckets) {
		return -1
	}
	return from - drop
}

// kneeOf is the index of the highest rate that passed before the first that did not (-1: the
// first failed).
func kneeOf(ws []window) int {
	knee := -1
	for knee+1 < len(ws) && ws[knee+1].healthy() {
		knee++
	}
	return knee
}

func scheduleFlag(s []phase) string {
	parts := make([]string, len(s))
	for i, p := range s {
		parts[i] = fmt.Sprintf("%.0fx%s", p.rate, p.duration)
	}
	return strings.Join(parts, ",")
}

// writeWebhookBlock puts block between <!-- webhook-edge:<name> --> markers in the file's
// "## Webhook ingest" section (nothing when path is empty).
func writeWebhookBlock(path, name, block string) error {
	if path == "" {
		return nil
	}
	return writeMarked(path, "webhook-edge:"+name, "## Webhook ingest (issue 12)\n", "Issue 12. The payment webhook's cost per delivery and its behaviour past the knee.\n\n", block)
}
