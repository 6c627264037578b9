package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/health"
	"github.com/portal-functions/portal-functions/shared/tenant"
)

// ReadPlan is how Postgres ran one statement of the read path.
type ReadPlan struct {
	// Read names the request and the statement ("GET /v1/account: select json_build_object(...").
	Read string
	// Query is the statement's text as the function that runs it holds it.
	Query string
	// AsUser is true when the statement reads the portal's views, which the route functions
	// do after the switch to the user, under RLS (false: what runs on the pool's role before
	// it: the membership lookup, the owner's health, the switch itself).
	AsUser bool
	// JSON is the plan as EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) writes one plan
	// (an object with "Query Text" and "Plan"); Text is the same run's plan for people.
	JSON json.RawMessage
	Text string
}

// ExplainReads runs every portal read for s exactly as the handlers send it (the route's
// function, one statement, with s's verified claims) and returns the plan of every statement
// those functions ran, as they ran it: auto_explain (nested statements, ANALYZE, BUFFERS)
// reports each one to the session, so these are the generic plans the functions keep, as the
// user under RLS where they read as the user, not plans made anew for the explain. The reads
// are the account, the first page of tickets, the page after deep (skipped when nil) and ticket
// ticketID. Identical statements (the RLS helper's query, run once per policy) are reported
// once per read. The plan test checks them; the growth harness prints them into
// BENCHMARKS.md. pool must connect as a role that may LOAD auto_explain (a superuser, as tests
// and make dev do).
func ExplainReads(ctx context.Context, pool *pgxpool.Pool, s tenant.Scope, ticketID uuid.UUID, deep *Cursor) ([]ReadPlan, error) {
	type call struct {
		name string
		sql  string
		args []any
	}
	user, claims := [16]byte(s.UserID), string(s.Identity.Claims)
	tenantID := [16]byte(s.TenantID)
	calls := []call{
		{"GET /v1/account", accountCall, []any{user, tenantID, claims, health.DefaultWindow.Seconds()}},
		{"GET /v1/tickets: first page", ticketsCall, []any{user, tenantID, claims, nil, nil, DefaultLimit}},
	}
	if deep != nil {
		calls = append(calls, call{"GET /v1/tickets: a page by cursor, deep in the list", ticketsCall,
			[]any{user, tenantID, claims, deep.CreatedAt, [16]byte(deep.ID), DefaultLimit}})
	}
	calls = append(calls, call{"GET /v1/tickets/{id}", ticketCall, []any{user, tenantID, claims, [16]byte(ticketID)}})

	cfg := pool.Config().ConnConfig.Copy()
	var (
		mu      sync.Mutex
		notices []string
	)
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, n.Message)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("explain reads: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, `load 'auto_explain'`); err != nil {
		return nil, fmt.Errorf("explain reads: load auto_explain: %w", err)
	}
	if _, err := conn.Exec(ctx, `select set_config('auto_explain.log_min_duration', '0', false),
		set_config('auto_explain.log_nested_statements', 'on', false), set_config('auto_explain.log_analyze', 'on', false),
		set_config('auto_explain.log_buffers', 'on', false), set_config('auto_explain.log_verbose', 'on', false),
		set_config('auto_explain.log_level', 'notice', false), set_config('client_min_messages', 'notice', false)`); err != nil {
		return nil, fmt.Errorf("explain reads: configure auto_explain: %w", err)
	}
	// run sends c with auto_explain writing format, and answers the statements it reported
	// (text and plan), the route call itself left out.
	run := func(c call, format string) ([][2]string, error) {
		if _, err := conn.Exec(ctx, `select set_config('auto_explain.log_format', $1, false)`, format); err != nil {
			return nil, fmt.Errorf("explain %s: %w", c.name, err)
		}
		mu.Lock()
		notices = nil
		mu.Unlock()
		var refusal *string
		var body []byte
		if err := conn.QueryRow(ctx, c.sql, c.args...).Scan(&refusal, nil, nil, &body); err != nil {
			return nil, fmt.Errorf("explain %s: %w", c.name, err)
		}
		if refusal != nil {
			return nil, fmt.Errorf("explain %s: refused: %s", c.name, *refusal)
		}
		mu.Lock()
		defer mu.Unlock()
		var out [][2]string
		for _, n := range notices {
			_, plan, ok := strings.Cut(n, "plan:\n")
			if !ok {
				continue
			}
			out = append(out, [2]string{queryText(plan), plan})
		}
		return out, nil
	}
	var plans []ReadPlan
	for _, c := range calls {
		asJSON, err := run(c, "json")
		if err != nil {
			return nil, err
		}
		asText, err := run(c, "text")
		if err != nil {
			return nil, err
		}
		if len(asJSON) != len(asText) {
			return nil, fmt.Errorf("explain %s: %d statements, then %d", c.name, len(asJSON), len(asText))
		}
		seen := map[string]bool{}
		for i, p := range asJSON {
			q := p[0]
			if seen[q] || strings.HasPrefix(q, "select refusal, tenant_id, role, body from private.portal_read_") {
				continue
			}
			seen[q] = true
			plans = append(plans, ReadPlan{
				Read: c.name + ": " + shorten(q), Query: q, AsUser: strings.Contains(q, "public.portal_"),
				JSON: json.RawMessage(p[1]), Text: asText[i][1],
			})
		}
	}
	return plans, nil
}

// queryText is the statement an auto_explain plan in JSON is of, whitespace folded ("" for a
// plan in text: the two runs of a read report the same statements in the same order).
func queryText(plan string) string {
	var doc struct {
		Query string `json:"Query Text"`
	}
	if json.Unmarshal([]byte(plan), &doc) != nil {
		return ""
	}
	return strings.Join(strings.Fields(doc.Query), " ")
}

// shorten is the start of a statement, to name its plan.
func shorten(q string) string {
	const n = 72
	if len(q) <= n {
		return q
	}
	return q[:n] + "..."
}
