package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portal-functions/portal-functions/shared/db/pgbouncer"
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
//
// With -pooler (the default) every start is measured twice, alternately, in two shapes:
//   - direct: DATABASE_URL straight to Postgres, so the instance's first connection is a new
//     Postgres backend (fork, authentication, then its first compile of the PL/pgSQL the
//     webhook calls and first planning). A direct connection pays that; the deployed shape
//     does not.
//   - pooler: DATABASE_URL through PgBouncer in transaction mode over TLS with a SCRAM password
//     (package pgbouncer), the local stand-in for Supabase's pooler in transaction mode, which
//     is how every function connects in Lambda. Its backends are warmed first by -pooler-warm
//     earlier instances, as other instances keep them busy in production, so the cold start
//     pays the client's own handshake with the pooler (TCP, TLS, SCRAM) and its first describe
//     of each statement, not a new backend.

// coldOptions are the flags of scenario cold-start.
type coldOptions struct {
	fn, event, database, benchmarks string
	starts, poolerWarm              int
	pooler                          bool
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
	// once is one fresh start under env: its cold invocation, then a warm one.
	n := 0
	once := func(env map[string]string) (coldRun, error) {
		started := time.Now()
		em, err := rie.Start(ctx, rie.Options{RIE: filepath.Join(dir, "aws-lambda-rie"), Bootstrap: bootstrap, Env: env,
			FunctionName: o.fn, Timeout: time.Duration(max(f.Timeout, 3)) * time.Second, MemoryMB: f.MemorySize})
		if err != nil {
			return coldRun{}, err
		}
		defer em.Stop()
		n += 2
		cold, err := invoke(em, n-2)
		fromStart := time.Since(started)
		if err != nil {
			return coldRun{}, err
		}
		warm, err := invoke(em, n-1)
		return coldRun{fromStart: fromStart, cold: cold.Elapsed, coldHandler: cold.Report.Duration, initReported: cold.Report.InitDuration,
			warm: warm.Elapsed, warmHandler: warm.Report.Duration}, err
	}
	shapes := []coldShape{{name: "direct", env: env}}
	if o.pooler {
		// One backend, so the one the measured instances get is the one the warm-up used (as
		// in production, where every backend of the pooler is busy with other instances).
		pooler, err := pgbouncer.Start(ctx, pgbouncer.Options{Upstream: env["DATABASE_URL"], PoolSize: 1})
		if err != nil {
			return fmt.Errorf("load: start the pooler (-pooler=false measures the direct connection only): %w", err)
		}
		defer pooler.Stop()
		via := maps.Clone(env)
		if via["DATABASE_URL"], err = pooler.Via(env["DATABASE_URL"]); err != nil {
			return err
		}
		for range o.poolerWarm {
			if _, err := once(via); err != nil {
				return fmt.Errorf("load: warm the pooler's backends: %w", err)
			}
		}
		shapes = append(shapes, coldShape{name: "pooler", env: via})
	}
	for range o.starts {
		for i := range shapes {
			r, err := once(shapes[i].env)
			if err != nil {
				return fmt.Errorf("load: %s start: %w", shapes[i].name, err)
			}
			shapes[i].runs = append(shapes[i].runs, r)
		}
	}
	var out strings.Builder
	w := io.MultiWriter(os.Stdout, &out)
	fmt.Fprintf(w, "%s (%s), %d fresh starts under the RIE per shape, each invoked cold (as soon as the emulator listens) and then warm with %s (a new event each time). "+
		"This RIE starts the runtime when it starts, so the function's init may begin before the cold invocation is sent: "+
		"the cold invocation's wall time (the first connection, the delivery, and whatever of the init had not finished) is the lower bound of the cold start, "+
		"the time from starting the emulator to the answer (the emulator's own start included) its upper bound. Handler: the REPORT line's Duration.\n\n",
		o.fn, target.Package, o.starts, o.event)
	fmt.Fprintln(w, "- **direct**: DATABASE_URL straight to Postgres (no TLS, trust), so each instance's first connection is a new Postgres backend: "+
		"its fork and authentication, then its first compile of the webhook's PL/pgSQL and first planning. Not the deployed shape: in Lambda the functions reach Postgres through Supabase's pooler.")
	if o.pooler {
		fmt.Fprintf(w, "- **pooler**: DATABASE_URL through PgBouncer in transaction mode (TLS, SCRAM password), the local stand-in for Supabase's pooler (Supavisor) in transaction mode, "+
			"which is how the functions connect in Lambda; its backends were warmed first by %d earlier instances, as other instances keep them busy in production. "+
			"The cold start pays the instance's own handshake with the pooler (TCP, TLS, SCRAM) and its first describe of each statement, not a new backend. "+
			"The two shapes' starts alternate.\n", o.poolerWarm)
	}
	fmt.Fprintln(w)
	head, rule := "| |", "| --- |"
	for _, sh := range shapes {
		head += fmt.Sprintf(" %s p50 ms | %s max ms |", sh.name, sh.name)
		rule += " --- | --- |"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, rule)
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
		line := "| " + row.name + " |"
		for _, sh := range shapes {
			ds := make([]time.Duration, 0, len(sh.runs))
			for _, r := range sh.runs {
				ds = append(ds, row.get(r))
			}
			slices.Sort(ds)
			line += fmt.Sprintf(" %.1f | %.1f |", msf(ds[(len(ds)-1)/2]), msf(ds[len(ds)-1]))
		}
		fmt.Fprintln(w, line)
	}
	if o.benchmarks == "" {
		return nil
	}
	return writeWebhookBlock(o.benchmarks, "cold-start", fmt.Sprintf("### Cold start under the Lambda Runtime Interface Emulator\n\nGenerated by `make load ARGS='-scenario cold-start -fn %s -event %s -starts %d -pooler=%t -pooler-warm %d -database <a migrated database> -benchmarks BENCHMARKS.md'` on %s at commit %s.\n\n%s",
		o.fn, o.event, o.starts, o.pooler, o.poolerWarm, time.Now().UTC().Format("2006-01-02 15:04 MST"), commit(), out.String()))
}

// coldShape is one way of reaching the database and the starts measured with it.
type coldShape struct {
	name string
	env  map[string]string
	runs []coldRun
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
