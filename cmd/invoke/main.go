// Command invoke runs one function of template.yaml under the AWS Lambda Runtime Interface
// Emulator with its environment from env.json, sends it a sample event and prints the
// response and the emulator's REPORT line (with the cold start's Init Duration): what
// `sam local invoke` does inside its container, without Docker.
//
//	make invoke FN=PortalReadFunction EVENT=events/portal-read-account.json
//
// Sample events that carry a Stripe signature or an access token are re-signed in memory
// first with the function's own secrets from env.json, so a sample never fails for being old.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/rie"
	"github.com/portal-functions/portal-functions/shared/sam"
)

func main() {
	fn := flag.String("fn", "", "logical id of the function (e.g. PortalReadFunction)")
	event := flag.String("event", "", "sample event file (e.g. events/portal-read-account.json)")
	envFile := flag.String("env", "env.json", "environment file in sam local --env-vars format")
	keep := flag.Bool("raw", false, "send the event exactly as it is (no re-signing)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *fn, *event, *envFile, !*keep); err != nil {
		fmt.Fprintln(os.Stderr, "invoke:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logicalID, eventPath, envPath string, resign bool) error {
	if logicalID == "" || eventPath == "" {
		return errors.New("usage: make invoke FN=<LogicalId> EVENT=events/<file>.json")
	}
	p, err := sam.Open(".")
	if err != nil {
		return err
	}
	root := p.Root
	f, err := p.Template.Function(logicalID)
	if err != nil {
		return err
	}
	target, ok := p.Targets[logicalID]
	if !ok || target.Package == "" {
		return fmt.Errorf("the Makefile has no build-%s target writing $(ARTIFACTS_DIR)/bootstrap", logicalID)
	}
	envs, err := sam.LoadEnvFile(filepath.Join(root, envPath))
	if err != nil {
		return err
	}
	env := envs.For(f)
	payload, err := os.ReadFile(eventPath)
	if err != nil {
		return fmt.Errorf("read event: %w", err)
	}
	if resign {
		signer := demo.Signer{
			WebhookSecret: env["STRIPE_WEBHOOK_SECRET"],
			JWTSecret:     env["SUPABASE_JWT_SECRET"],
			SupabaseURL:   env["SUPABASE_URL"],
			TokenTTL:      15 * time.Minute,
		}
		fresh, ch, err := signer.Refresh(payload)
		switch {
		case errors.Is(err, demo.ErrNotAnHTTPEvent):
		case err != nil:
			return err
		default:
			payload = fresh
			if ch.Signature || ch.Token {
				fmt.Fprintf(os.Stderr, "invoke: re-signed the event in memory (signature: %v, token: %v)\n", ch.Signature, ch.Token)
			}
		}
	}

	dir, err := os.MkdirTemp("", "invoke-")
	if err != nil {
		return fmt.Errorf("make build folder: %w", err)
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "invoke: building %s (%s) and the emulator for this machine\n", logicalID, target.Package)
	if err := rie.Build(ctx, root, dir, target.Package, rie.ToolPackage); err != nil {
		return err
	}
	bootstrap := filepath.Join(dir, "bootstrap")
	if err := os.Rename(filepath.Join(dir, filepath.Base(target.Package)), bootstrap); err != nil {
		return fmt.Errorf("name the bootstrap: %w", err)
	}
	if st, err := os.Stat(bootstrap); err == nil {
		fmt.Fprintf(os.Stderr, "invoke: bootstrap is %.1f MiB\n", float64(st.Size())/(1<<20))
	}
	em, err := rie.Start(ctx, rie.Options{
		RIE:          filepath.Join(dir, "aws-lambda-rie"),
		Bootstrap:    bootstrap,
		Env:          env,
		FunctionName: logicalID,
		Timeout:      time.Duration(max(f.Timeout, 3)) * time.Second,
		MemoryMB:     f.MemorySize,
		Output:       os.Stderr,
	})
	if err != nil {
		return err
	}
	defer em.Stop()
	res, err := em.Invoke(ctx, payload)
	if err != nil && !errors.Is(err, rie.ErrNoReport) {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, res.Body, "", "  ") != nil {
		pretty.Reset()
		pretty.Write(res.Body)
	}
	fmt.Println(pretty.String())
	if res.Report.Line != "" {
		fmt.Fprintln(os.Stderr, res.Report.Line)
	}
	fmt.Fprintf(os.Stderr, "invoke: first (cold) invocation answered in %s, runtime start and init included\n", res.Elapsed.Round(time.Millisecond))
	if res.StatusCode != 200 {
		return fmt.Errorf("the emulator answered %d (an init or function error; see the log above)", res.StatusCode)
	}
	return nil
}
