package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/reconcile"
)

// Exit codes.
const (
	exitOK        = 0
	exitAttention = 1
	exitRefused   = 2
)

const usage = `usage:
  reconcile [run] (--tenant ID | --from DATE --to DATE | both) [--apply] [--from-stripe] [--json]
      find stored events never applied or unmatched-now-matching, and CRM/helpdesk pushes that are
      missing or dead-lettered; dry run unless --apply. DATE is YYYY-MM-DD (UTC; --to includes
      that day) or RFC 3339; a range is at most 31 days.
  reconcile health [--tenant ID] [--window 24h] [--json]
  reconcile rebuild-health --tenant ID | --all [--apply]
      recount the rows the writes keep for an owner's health (webhook deliveries and push
      attempts per 5 minutes, waiting and dead jobs, subjects by sync state) from history, after
      the inbox or River's tables were changed with triggers off. For a tenant it shows what the
      owner sees beside the recount (exit 1 when they differ); dry run unless --apply. --all
      holds back deliveries, enqueues and job completions while it runs.
  reconcile dead-letters --integration crm|helpdesk [--tenant ID] [--json]
  reconcile requeue --job ID | --integration crm|helpdesk --tenant ID | --integration crm|helpdesk --all
      put dead letters back on the queue; one whose push another job already does (reconcile
      queued it) is skipped and marked resolved. Prints requeued, skipped and failed counts.
  reconcile resolve --job ID --note TEXT
      take a dead letter off the list without running it again.
  reconcile setup [--apply] [--webhook-url URL]
      check, and with --apply create, what the functions expect of each provider: the portal_*
      HubSpot properties, the private attachments bucket, the Stripe endpoint's API version and
      events (those it only reports). Idempotent; dry run unless --apply. Reads
      HUBSPOT_ACCESS_TOKEN, HUBSPOT_BASE_URL, SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY,
      STORAGE_BUCKET, STRIPE_API_KEY, STRIPE_API_BASE (no DATABASE_URL).

environment: DATABASE_URL (required); STRIPE_API_KEY and STRIPE_API_BASE (for --from-stripe).
exit status: 0 done, 1 needs attention or failed, 2 refused (usage or scope).
`

// env is what every subcommand reads.
type env struct {
	DatabaseURL config.Secret `env:"DATABASE_URL" required:"true"`
	reconcile.Config
}

// cli is one invocation's streams and environment.
type cli struct {
	stdout, stderr io.Writer
	lookup         func(string) (string, bool)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	c := cli{stdout: stdout, stderr: stderr, lookup: lookup}
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return c.reconcile(ctx, args)
	case "health":
		return c.health(ctx, args)
	case "dead-letters":
		return c.deadLetters(ctx, args)
	case "requeue":
		return c.requeue(ctx, args)
	case "resolve":
		return c.resolve(ctx, args)
	case "setup":
		return c.setup(ctx, args)
	case "rebuild-health":
		return c.rebuildHealth(ctx, args)
	case "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "reconcile: unknown command %q\n\n%s", cmd, usage)
		return exitRefused
	}
}

// flags builds a flag set that reports to stderr and never exits.
func (c cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("reconcile "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { fmt.Fprint(c.stderr, usage) }
	return fs
}

// parse parses args and refuses positional leftovers (a typo must not widen the scope).
func (c cli) parse(fs *flag.FlagSet, args []string) bool {
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "reconcile: unexpected argument %q\n", fs.Arg(0))
		return false
	}
	return true
}

// open loads the environment and connects.
func (c cli) open(ctx context.Context) (*pgxpool.Pool, env, error) {
	var e env
	if err := config.LoadFrom(c.lookup, &e); err != nil {
		return nil, e, err
	}
	pool, err := db.Open(ctx, e.DatabaseURL.Reveal(), db.Options{MaxConns: 4, ApplicationName: "reconcile", StatementTimeout: time.Minute})
	if err != nil {
		return nil, e, err
	}
	return pool, e, nil
}

func (c cli) fail(err error) int {
	var se *reconcile.ScopeError
	if errors.As(err, &se) {
		fmt.Fprintln(c.stderr, se) // a ScopeError already says "reconcile:"
		return exitRefused
	}
	fmt.Fprintf(c.stderr, "reconcile: %v\n", err)
	return exitAttention
}

func (c cli) reconcile(ctx context.Context, args []string) int {
	fs := c.flags("run")
	var req reconcile.Request
	var asJSON bool
	fs.StringVar(&req.TenantID, "tenant", "", "tenant id")
	fs.StringVar(&req.From, "from", "", "start of the range (YYYY-MM-DD or RFC 3339)")
	fs.StringVar(&req.To, "to", "", "end of the range (a date includes that whole day)")
	fs.BoolVar(&req.Apply, "apply", false, "do the repairs (default: dry run)")
	fs.BoolVar(&req.FromStripe, "from-stripe", false, "also ingest the range's events Stripe lists that we never received")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if !c.parse(fs, args) {
		return exitRefused
	}
	// Refuse before connecting: an unscoped run never touches the database.
	o, err := req.Options()
	if err != nil {
		return c.fail(err)
	}
	pool, e, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer pool.Close()
	r, err := reconcile.NewFromPool(pool, e.Config, &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		return c.fail(err)
	}
	rep, err := r.Run(ctx, o)
	if err != nil {
		return c.fail(err)
	}
	if asJSON {
		err = rep.WriteJSON(c.stdout)
	} else {
		err = rep.WriteText(c.stdout)
	}
	if err != nil {
		return c.fail(err)
	}
	if rep.NeedsAttention() {
		return exitAttention
	}
	return exitOK
}

func (c cli) health(ctx context.Context, args []string) int {
	fs := c.flags("health")
	var tenant string
	var asJSON bool
	var window time.Duration
	fs.StringVar(&tenant, "tenant", "", "one tenant's deliveries only")
	fs.DurationVar(&window, "window", health.DefaultWindow, "how far back to look (at most 168h)")
	fs.BoolVar(&asJSON, "json", false, "print as JSON")
	if !c.parse(fs, args) {
		return exitRefused
	}
	tenantID, ok := c.tenantFlag(tenant)
	if !ok {
		return exitRefused
	}
	q := health.Query{Window: window}
	if tenantID != nil {
		q.TenantID = *tenantID
	}
	pool, _, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer pool.Close()
	rep, err := health.Read(ctx, pool, q)
	if errors.Is(err, health.ErrBadWindow) {
		fmt.Fprintf(c.stderr, "reconcile: %v\n", err)
		return exitRefused
	}
	if err != nil {
		return c.fail(err)
	}
	if asJSON {
		err = writeJSON(c.stdout, rep)
	} else {
		err = writeHealth(c.stdout, rep)
	}
	if err != nil {
		return c.fail(err)
	}
	return exitOK
}

// writeHealth prints delivery health as two small tables.
func writeHealth(w io.Writer, r health.Report) error {
	var b strings.Builder
	who := "all tenants"
	if r.TenantID != uuid.Nil {
		who = "tenant " + r.TenantID.String()
	}
	fmt.Fprintf(&b, "delivery health: %s, %s to %s (%s)\n\n", who, r.Since.UTC().Format(time.RFC3339),
		r.Until.UTC().Format(time.RFC3339), time.Duration(r.WindowSeconds*float64(time.Second)))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	wh := r.Webhook
	fmt.Fprintln(tw, "stripe webhook\treceived\tprocessed\tignored\tunmatched\trefused\tunapplied\trejected\tsuccess")
	fmt.Fprintf(tw, "\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f%%\n", wh.Received, wh.Processed, wh.Ignored, wh.Unmatched,
		wh.Refused, wh.Unapplied, wh.Rejected, wh.SuccessRate*100)
	_ = tw.Flush()
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "integration\tattempts\tfailures\tpending\toldest pending\tdead letters\tfailing subjects\tlast success")
	for _, i := range r.Integrations {
		last := "never"
		if i.LastSuccessAt != nil {
			last = i.LastSuccessAt.UTC().Format(time.RFC3339)
		}
		oldest := "-"
		if i.Pending > 0 {
			oldest = (time.Duration(i.OldestPendingSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%d\t%s\n", i.Name, i.Attempts, i.Failures, i.Pending, oldest,
			i.DeadLetters, i.FailingSubjects, last)
	}
	_ = tw.Flush()
	_, err := io.WriteString(w, b.String())
	return err
}
