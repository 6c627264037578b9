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
// exactly as the handlers run them: the account's row and sync summary as the user under RLS,
// for an owner the health statement on the pool, the first page of tickets, the page after deep
// (skipped when nil) and ticket ticketID as the user. The plan test checks them; the growth
// harness prints them into BENCHMARKS.md. ANALYZE runs each query (twice: JSON and text); they
// are reads.
func ExplainReads(ctx context.Context, pool *pgxpool.Pool, s tenant.Scope, ticketID uuid.UUID, deep *Cursor) ([]ReadPlan, error) {
	type read struct {
		name   string
		sql    string
		args   []any
		asUser bool
	}
	first, firstArgs := ticketPageQuery(s.TenantID, nil, DefaultLimit)
	healthSQL, healthArgs := health.ForTenantQuery(s.TenantID, health.DefaultWindow)
	reads := []read{
		{"GET /v1/account: tenant and billing", accountQuery, []any{s.TenantID}, true},
		{"GET /v1/account: sync summary", syncsQuery, []any{s.TenantID}, true},
	}
	if s.Require(tenant.Owner) == nil {
		reads = append(reads, read{"GET /v1/account: owner's delivery health", healthSQL, healthArgs, false})
	}
	reads = append(reads, read{"GET /v1/tickets: first page", first, firstArgs, true})
	if deep != nil {
		sql, args := ticketPageQuery(s.TenantID, deep, DefaultLimit)
		reads = append(reads, read{"GET /v1/tickets: a page by cursor, deep in the list", sql, args, true})
	}
	reads = append(reads, read{"GET /v1/tickets/{id}", ticketQuery, []any{ticketID, s.TenantID}, true})

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
