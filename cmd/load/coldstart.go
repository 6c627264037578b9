package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/rie"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// Scenario cold-start measures a function's cold start as Lambda's client feels it: the
// function's bootstrap, built as the Makefile builds it for Lambda, started afresh under the
// AWS Lambda Runtime Interface Emulator -starts times, each time invoked once cold and once
// warm with the sample event (a webhook sample gets a new event id each time, so every
// invocation applies a new event rather than answering a redelivery). This RIE starts the
// runtime as soon as it starts itself, so the cold start lies between the first invocation's
// wall time (sent as soon as the emulator listens) and the time from starting the emulator to
// that answer; the REPORT line's Duration is the handler's share (its Init Duration only times
// the hand-off to the runtime).

// coldOptions are the flags of scenario cold-start.
type coldOptions struct {
	fn, event, database, benchmarks string
	starts                          int
}

// coldRun is one fresh start: its cold and its warm invocation.
type coldRun struct {
	fromStart, cold, coldHandler, initReported, warm, warmHandler time.Duration
}

func runColdStart(ctx context.Context, o coldOptions) error {
	p, err := sam.Open(".")
	if err != nil {
		return err
	}
	f, err := p.Template.Function(o.fn)
	if err != nil {
		return err
	}
	target, ok := p.Targets[o.fn]
	if !ok || target.Package == "" {
		return fmt.Errorf("load: the Makefile has no build-%s target", o.fn)
	}
	env := p.Env.For(f)
	if o.database != "" {
		env["DATABASE_URL"] = o.database
	}
	payload, err := os.ReadFile(filepath.Join(p.Root, o.event))
	if err != nil {
		return fmt.Errorf("read the sample event: %w", err)
	}
	dir, err := os.MkdirTemp("", "cold-start-")
	if err != nil {
		return fmt.Errorf("make build folder: %w", err)
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "load: building %s and the emulator\n", target.Package)
	if err := rie.Build(ctx, p.Root, dir, target.Package, rie.ToolPackage); err != nil {
		return err
	}
	bootstrap := filepath.Join(dir, "bootstrap")
	if err := os.Rename(filepath.Join(dir, filepath.Base(target.Package)), bootstrap); err != nil {
		return fmt.Errorf("name the bootstrap: %w", err)
	}
	signer := demo.Signer{WebhookSecret: env["STRIPE_WEBHOOK_SECRET"], JWTSecret: env["SUPABASE_JWT_SECRET"], SupabaseURL: env["SUPABASE_URL"], TokenTTL: 15 * time.Minute}
	run := strconv.FormatInt(time.Now().UnixMilli(), 36)
	invoke := func(em *rie.Emulator, n int) (rie.Result, error) {
		fresh, err := freshEvent(payload, fmt.Sprintf("evt_cold_%s_%d", run, n))
		if err != nil {
			return rie.Result{}, err
		}
		if fresh, _, err = signer.Refresh(fresh); err != nil && err != demo.ErrNotAnHTTPEvent {
			return rie.Result{}, err
		}
		res, err := em.Invoke(ctx, fresh)
		if err == nil && res.StatusCode != 200 {
			err = fmt.Errorf("load: the emulator answered %d:\n%s", res.StatusCode, em.Output())
		}
		if err == nil && !strings.Contains(string(res.Body), `"statusCode":200`) {
			err = fmt.Errorf("load: the function did not answer 200: %s", res.Body)
		}
		return res, err
	}
	var runs []coldRun
	for i := range o.starts {
		started := time.Now()
		em, err := rie.Start(ctx, rie.Options{RIE: filepath.Join(dir, "aws-lambda-rie"), Bootstrap: bootstrap, Env: env,
			FunctionName: o.fn, Timeout: time.Duration(max(f.Timeout, 3)) * time.Second, MemoryMB: f.MemorySize})
		if err != nil {
			return err
		}
		cold, err := invoke(em, 2*i)
		fromStart := time.Since(started)
		var warm rie.Result
		if err == nil {
			warm, err = invoke(em, 2*i+1)
		}
		em.Stop()
		if err != nil {
			return err
		}
		runs = append(runs, coldRun{fromStart: fromStart, cold: cold.Elapsed, coldHandler: cold.Report.Duration, initReported: cold.Report.InitDuration,
			warm: warm.Elapsed, warmHandler: warm.Report.Duration})
	}
	var out strings.Builder
	w := io.MultiWriter(os.Stdout, &out)
	fmt.Fprintf(w, "%s (%s), %d fresh starts under the RIE, each invoked cold (as soon as the emulator listens) and then warm with %s (a new event each time). "+
		"This RIE starts the runtime when it starts, so the function's init may begin before the cold invocation is sent: "+
		"the cold invocation's wall time (first connection and the delivery on a new backend, and whatever of the init had not finished) is the lower bound of the cold start, "+
		"the time from starting the emulator to the answer (the emulator's own start included) its upper bound. Handler: the REPORT line's Duration.\n\n",
		o.fn, target.Package, o.starts, o.event)
	fmt.Fprintln(w, "| | p50 ms | max ms |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, row := range []struct {
		name string
		get  func(coldRun) time.Duration
	}{
		{"emulator started to cold answer (wall; upper bound)", func(r coldRun) time.Duration { return r.fromStart }},
		{"cold invocation (wall; lower bound)", func(r coldRun) time.Duration { return r.cold }},
		{"cold invocation, handler (REPORT Duration)", func(r coldRun) time.Duration { return r.coldHandler }},
		{"REPORT Init Duration (the RIE's hand-off only)", func(r coldRun) time.Duration { return r.initReported }},
		{"warm invocation (wall)", func(r coldRun) time.Duration { return r.warm }},
		{"warm invocation, handler (REPORT Duration)", func(r coldRun) time.Duration { return r.warmHandler }},
	} {
		var ds []time.Duration
		for _, r := range runs {
			ds = append(ds, row.get(r))
		}
		slices.Sort(ds)
		fmt.Fprintf(w, "| %s | %.1f | %.1f |\n", row.name, msf(ds[(len(ds)-1)/2]), msf(ds[len(ds)-1]))
	}
	if o.benchmarks == "" {
		return nil
	}
	return writeWebhookBlock(o.benchmarks, "cold-start", fmt.Sprintf("### Cold start under the Lambda Runtime Interface Emulator\n\nGenerated by `make load ARGS='-scenario cold-start -fn %s -event %s -starts %d -database <a migrated database> -benchmarks BENCHMARKS.md'` on %s at commit %s.\n\n%s",
		o.fn, o.event, o.starts, time.Now().UTC().Format("2006-01-02 15:04 MST"), commit(), out.String()))
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// freshEvent gives a webhook sample's Stripe event a new id (other samples come back as they are).
func freshEvent(payload []byte, id string) ([]byte, error) {
	var ev map[string]any
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, fmt.Errorf("parse the sample event: %w", err)
	}
	body, ok := ev["body"].(string)
	if !ok {
		return payload, nil
	}
	var stripe map[string]any
	if json.Unmarshal([]byte(body), &stripe) != nil || stripe["object"] != "event" {
		return payload, nil
	}
	stripe["id"], stripe["created"] = id, time.Now().Unix()
	b, err := json.Marshal(stripe)
	if err != nil {
		return nil, fmt.Errorf("encode the event: %w", err)
	}
	ev["body"] = string(b)
	return json.Marshal(ev)
}
