// Command events re-signs the sample events under events/ (`make events`): a Stripe-Signature
// header is recomputed over the event's body with the local webhook secret, and a Bearer token
// is replaced by a fresh one for the demo owner, signed with the local JWT secret and valid for
// a year, so `sam local invoke` and the portal samples work as they are. Only those values
// change in each file. The secrets are the owning function's values in env.json (local
// development values only).
//
// A Stripe signature is only good for 300 s, so for the webhook run `make events` right
// before `sam local invoke`; `make invoke` and the tests re-sign in memory by themselves.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/sam"
)

func main() {
	ttl := flag.Duration("token-ttl", 365*24*time.Hour, "lifetime of the minted access tokens")
	flag.Parse()
	if err := run(*ttl); err != nil {
		fmt.Fprintln(os.Stderr, "events:", err)
		os.Exit(1)
	}
}

func run(ttl time.Duration) error {
	p, err := sam.Open(".")
	if err != nil {
		return err
	}
	root, tmpl, envs := p.Root, p.Template, p.Env
	files, err := filepath.Glob(filepath.Join(root, "events", "*.json"))
	if err != nil {
		return fmt.Errorf("list events: %w", err)
	}
	for _, file := range files {
		f, ok := owner(tmpl, filepath.Base(file))
		if !ok {
			fmt.Printf("skip   %s (named after no function)\n", rel(root, file))
			continue
		}
		env := envs.For(f)
		signer := demo.Signer{
			WebhookSecret: env["STRIPE_WEBHOOK_SECRET"],
			JWTSecret:     env["SUPABASE_JWT_SECRET"],
			SupabaseURL:   env["SUPABASE_URL"],
			TokenTTL:      ttl,
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read %s: %w", rel(root, file), err)
		}
		out, ch, err := signer.Refresh(raw)
		switch {
		case errors.Is(err, demo.ErrNotAnHTTPEvent):
			continue
		case err != nil:
			return fmt.Errorf("%s: %w", rel(root, file), err)
		case !ch.Signature && !ch.Token:
			continue
		}
		if err := os.WriteFile(file, out, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", rel(root, file), err)
		}
		var what []string
		if ch.Signature {
			what = append(what, "Stripe-Signature")
		}
		if ch.Token {
			what = append(what, "token")
		}
		fmt.Printf("signed %s (%s)\n", rel(root, file), strings.Join(what, ", "))
	}
	return nil
}

// owner is the function whose folder name the sample's file name starts with (the longest
// match, so portal-read-x.json never goes to a shorter "portal" folder).
func owner(tmpl *sam.Template, name string) (sam.Function, bool) {
	var best sam.Function
	found := false
	for _, f := range tmpl.Functions {
		folder := filepath.Base(f.Folder())
		if strings.HasPrefix(name, folder) && (!found || len(folder) > len(filepath.Base(best.Folder()))) {
			best, found = f, true
		}
	}
	return best, found
}

func rel(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil {
		return r
	}
	return path
}
