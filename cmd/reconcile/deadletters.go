package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/jobs"
)

// integrationFlag checks --integration against the queues that exist.
func integrationFlag(s string) (string, bool) {
	switch s {
	case jobs.QueueCRM, jobs.QueueHelpdesk:
		return s, true
	}
	return "", false
}

func (c cli) tenantFlag(s string) (*uuid.UUID, bool) {
	if s == "" {
		return nil, true
	}
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil {
		fmt.Fprintf(c.stderr, "reconcile: --tenant %q is not a tenant id\n", s)
		return nil, false
	}
	return &id, true
}

func (c cli) deadLetters(ctx context.Context, args []string) int {
	fs := c.flags("dead-letters")
	var integration, tenant string
	var asJSON bool
	fs.StringVar(&integration, "integration", "", "crm or helpdesk (required)")
	fs.StringVar(&tenant, "tenant", "", "one tenant's dead letters only")
	fs.BoolVar(&asJSON, "json", false, "print as JSON")
	if !c.parse(fs, args) {
		return exitRefused
	}
	queue, ok := integrationFlag(integration)
	if !ok {
		fmt.Fprintln(c.stderr, "reconcile: dead-letters needs --integration crm or --integration helpdesk")
		return exitRefused
	}
	tenantID, ok := c.tenantFlag(tenant)
	if !ok {
		return exitRefused
	}
	pool, _, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer pool.Close()
	letters, err := jobs.DeadLetters(ctx, pool, queue, tenantID)
	if err != nil {
		return c.fail(err)
	}
	if asJSON {
		if letters == nil {
			letters = []jobs.DeadLetter{}
		}
		err = writeJSON(c.stdout, letters)
	} else {
		err = writeDeadLetters(c.stdout, queue, letters)
	}
	if err != nil {
		return c.fail(err)
	}
	return exitOK
}

func writeDeadLetters(w io.Writer, queue string, letters []jobs.DeadLetter) error {
	var b strings.Builder
	fmt.Fprintf(&b, "dead letters of %s: %d\n", queue, len(letters))
	if len(letters) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "job\tstate\ttenant\tsubject\tattempts\tfinalized\tlast error")
		for _, d := range letters {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", d.JobID, d.State, d.TenantID, d.Subject, d.Attempts,
				d.FinalizedAt.UTC().Format(time.RFC3339), oneLine(d.LastError, 120))
		}
		_ = tw.Flush()
		fmt.Fprintf(&b, "\nafter fixing the cause: reconcile requeue --job <job>, or --integration %s --tenant <id>, or --integration %s --all\n", queue, queue)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (c cli) requeue(ctx context.Context, args []string) int {
	fs := c.flags("requeue")
	var integration, tenant string
	var jobID int64
	var all bool
	fs.Int64Var(&jobID, "job", 0, "one dead-lettered job")
	fs.StringVar(&integration, "integration", "", "crm or helpdesk")
	fs.StringVar(&tenant, "tenant", "", "one tenant's dead letters of the integration")
	fs.BoolVar(&all, "all", false, "every dead letter of the integration")
	if !c.parse(fs, args) {
		return exitRefused
	}
	var f jobs.RequeueFilter
	switch {
	case jobID > 0 && integration == "" && tenant == "" && !all:
		f.JobID = jobID
	case jobID == 0 && integration != "" && (tenant != "") != all:
		queue, ok := integrationFlag(integration)
		if !ok {
			fmt.Fprintln(c.stderr, "reconcile: --integration is crm or helpdesk")
			return exitRefused
		}
		tenantID, ok := c.tenantFlag(tenant)
		if !ok {
			return exitRefused
		}
		f.Integration, f.TenantID = queue, tenantID
	default:
		fmt.Fprintln(c.stderr, "reconcile: requeue needs exactly one of: --job ID; --integration X --tenant ID; --integration X --all")
		return exitRefused
	}
	pool, _, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer pool.Close()
	res, err := jobs.Requeue(ctx, pool, f)
	fmt.Fprintf(c.stdout, "requeued %d, skipped %d, failed %d\n", res.Requeued, len(res.Skipped), len(res.Failed))
	for _, id := range res.Skipped {
		fmt.Fprintf(c.stdout, "skipped job %d: a live or completed job already does its push; marked resolved\n", id)
	}
	for _, f := range res.Failed {
		fmt.Fprintf(c.stdout, "failed job %d: %s\n", f.JobID, oneLine(f.Error, 200))
	}
	if len(res.Failed) > 0 {
		return exitAttention
	}
	if err != nil {
		return c.fail(err)
	}
	return exitOK
}

// resolve takes dead letters off the list without running them again (the push was done by
// hand, or is no longer wanted).
func (c cli) resolve(ctx context.Context, args []string) int {
	fs := c.flags("resolve")
	var jobID int64
	var note string
	fs.Int64Var(&jobID, "job", 0, "the dead-lettered job (required)")
	fs.StringVar(&note, "note", "", "why, for the record (required)")
	if !c.parse(fs, args) {
		return exitRefused
	}
	if jobID <= 0 || strings.TrimSpace(note) == "" {
		fmt.Fprintln(c.stderr, "reconcile: resolve needs --job ID and --note TEXT")
		return exitRefused
	}
	pool, _, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer pool.Close()
	if err := jobs.Resolve(ctx, pool, jobID, note); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "resolved job %d\n", jobID)
	return exitOK
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// oneLine keeps an upstream error on one table row of at most n characters.
func oneLine(s string, n int) string {
	r := []rune(strings.Join(strings.Fields(s), " "))
	if len(r) > n {
		r = append(r[:n-1], '…')
	}
	return string(r)
}
