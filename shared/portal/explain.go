package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/tenant"
)

// ReadPlan is how Postgres ran one query of the read path.
type ReadPlan struct {
	// Read names the request and the query ("GET /v1/account: sync summary").
	Read string
	// AsUser is true when the query ran as the user under RLS (false: the service pool, as
	// the owner's health section runs).
	AsUser bool
	// JSON is EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON); Text is EXPLAIN (ANALYZE,
	// BUFFERS), shorter, for people.
	JSON json.RawMessage
	Text string
}

// ExplainReads runs EXPLAIN (ANALYZE, BUFFERS) of every query the portal's reads make for s,
// as the handlers run them (each inside its PL/pgSQL function, whose text is this query:
// TestEachReadFunctionRunsTheExplainedQuery): the account's row and sync summary as the user under RLS,
// for an owner the health statement on the pool, the first page of tickets, the page after deep
// (skipped when nil) and ticket ticketID as the user. The plan test checks them; the growth
// harness prints them into BENCHMARKS.md. ANALYZE runs each query (twice: JSON and text); they
// are reads.
func ExplainReads(ctx context.Context, pool *pgxpool.Pool, s tenant.Scope, ticketID uuid.UUID, deep *Cursor) ([]ReadPlan, error) {
	type plan struct {
		name   string
		sql    string
		args   []any
		asUser bool
	}
	of := func(name string, r read) plan { return plan{name, r.SQL, r.Args, true} }
	healthSQL, healthArgs := health.ForTenantQuery(s.TenantID, health.DefaultWindow)
	reads := []plan{
		of("GET /v1/account: tenant and billing", accountRead(s.TenantID)),
		of("GET /v1/account: sync summary", syncsRead(s.TenantID)),
	}
	if s.Require(tenant.Owner) == nil {
		reads = append(reads, plan{"GET /v1/account: owner's delivery health", healthSQL, healthArgs, false})
	}
	reads = append(reads, of("GET /v1/tickets: first page", ticketPageRead(s.TenantID, nil, DefaultLimit)))
	if deep != nil {
		reads = append(reads, of("GET /v1/tickets: a page by cursor, deep in the list", ticketPageRead(s.TenantID, deep, DefaultLimit)))
	}
	reads = append(reads, of("GET /v1/tickets/{id}", ticketRead(s.TenantID, ticketID)))

	out := make([]ReadPlan, 0, len(reads))
	for _, r := range reads {
		p := ReadPlan{Read: r.name, AsUser: r.asUser}
		explain := func(q interface {
			QueryRow(context.Context, string, ...any) pgx.Row
			Query(context.Context, string, ...any) (pgx.Rows, error)
		}) error {
			if err := q.QueryRow(ctx, "explain (analyze, buffers, verbose, format json) "+r.sql, r.args...).Scan(&p.JSON); err != nil {
				return fmt.Errorf("explain %s: %w", r.name, err)
			}
			rows, err := q.Query(ctx, "explain (analyze, buffers) "+r.sql, r.args...)
			if err != nil {
				return fmt.Errorf("explain %s: %w", r.name, err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("explain %s: %w", r.name, err)
			}
			p.Text = strings.Join(lines, "\n")
			return nil
		}
		var err error
		if r.asUser {
			err = tenant.ReadAsUser(ctx, pool, s, func(tx pgx.Tx) error { return explain(tx) })
		} else {
			err = explain(pool)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
