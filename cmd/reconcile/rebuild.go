package main

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/portal-functions/portal-functions/shared/health"
)

// rebuildHealth is `reconcile rebuild-health`: the repair of the rows the writes keep for the
// owner's health (webhook deliveries and push attempts per 5 minutes, waiting and dead jobs,
// subjects by sync state), recounted from history (health.Rebuild). For one tenant it first
// shows what the owner sees beside the recount and whether they differ; nothing changes
// without --apply. For every tenant (--all) it holds back webhook deliveries, enqueues and
// job completions while it runs, so the dry run only says so.
func (c cli) rebuildHealth(ctx context.Context, args []string) int {
	fs := c.flags("rebuild-health")
	var tenant string
	var all, apply bool
	fs.StringVar(&tenant, "tenant", "", "one tenant's kept rows")
	fs.BoolVar(&all, "all", false, "every tenant's kept rows (blocks writes while it runs)")
	fs.BoolVar(&apply, "apply", false, "recount (default: dry run)")
	if !c.parse(fs, args) {
		return exitRefused
	}
	tenantID, ok := c.tenantFlag(tenant)
	if !ok {
		return exitRefused
	}
	if (tenantID == nil) == !all {
		fmt.Fprintln(c.stderr, "reconcile: rebuild-health needs exactly one of --tenant ID or --all")
		return exitRefused
	}
	pool, _, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer pool.Close()

	if all {
		if !apply {
			fmt.Fprintln(c.stdout, "DRY RUN: would recount every tenant's kept health rows from history, holding back webhook deliveries, enqueues and job completions while it runs; --apply to do it, or --tenant ID to check one tenant first")
			return exitOK
		}
		if err := health.Rebuild(ctx, pool, uuid.Nil); err != nil {
			return c.fail(err)
		}
		fmt.Fprintln(c.stdout, "recounted every tenant's kept health rows from history")
		return exitOK
	}

	kept, recount, err := health.Check(ctx, pool, *tenantID)
	if err != nil {
		return c.fail(err)
	}
	if !apply {
		fmt.Fprintln(c.stdout, "DRY RUN: nothing changed; --apply recounts this tenant's kept rows from history")
		return c.compare(kept, recount)
	}
	if err := health.Rebuild(ctx, pool, *tenantID); err != nil {
		return c.fail(err)
	}
	if kept, recount, err = health.Check(ctx, pool, *tenantID); err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, "recounted from history")
	return c.compare(kept, recount)
}

// compare prints what the owner sees and the recount, and exits 1 when they differ.
func (c cli) compare(kept, recount health.Report) int {
	fmt.Fprintln(c.stdout, "\nwhat the owner sees (kept rows):")
	if err := writeHealth(c.stdout, kept); err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, "\nrecounted from history:")
	if err := writeHealth(c.stdout, recount); err != nil {
		return c.fail(err)
	}
	if !health.Agree(kept, recount) {
		fmt.Fprintln(c.stdout, "\nthe kept rows DIFFER from history")
		return exitAttention
	}
	fmt.Fprintln(c.stdout, "\nthe kept rows agree with history")
	return exitOK
}
