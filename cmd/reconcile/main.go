// Command reconcile is the ops tool of portal-functions: the scoped, dry-run-first repair of
// missing effects, delivery health, and the dead-letter review and requeue. It is what the
// first hour of an incident runs (README, "When something goes wrong").
//
//	go run ./cmd/reconcile --tenant <id> [--from 2026-11-01 --to 2026-11-27] [--apply] [--from-stripe] [--json]
//	go run ./cmd/reconcile health [--tenant <id>] [--window 24h] [--json]
//	go run ./cmd/reconcile rebuild-health --tenant <id> | --all [--apply]
//	go run ./cmd/reconcile dead-letters --integration crm|helpdesk [--tenant <id>] [--json]
//	go run ./cmd/reconcile requeue --job <id> | --integration crm|helpdesk (--tenant <id> | --all)
//	go run ./cmd/reconcile resolve --job <id> --note <why>
//
// Exit status: 0 done (or nothing to do); 1 something needed attention and could not be
// repaired, or the run failed; 2 refused (bad usage, unscoped or over-wide scope).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}
