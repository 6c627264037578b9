package portal

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/portal/growth"
	"github.com/portal-functions/portal-functions/shared/tenant"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
)

// planNode is one node of EXPLAIN (FORMAT JSON).
type planNode map[string]any

func (n planNode) children() []planNode {
	var out []planNode
	for _, c := range asSlice(n["Plans"]) {
		out = append(out, planNode(c.(map[string]any)))
	}
	return out
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func (n planNode) num(key string) float64 { f, _ := n[key].(float64); return f }

func (n planNode) str(key string) string { s, _ := n[key].(string); return s }

// rowsRead is how many rows a scan node looked at over all its loops: the rows it returned
// plus the rows its filters threw away.
func (n planNode) rowsRead() float64 {
	loops := max(n.num("Actual Loops"), 1)
	return (n.num("Actual Rows") + n.num("Rows Removed by Filter") + n.num("Rows Removed by Index Recheck")) * loops
}

func walkPlan(n planNode, f func(planNode)) {
	f(n)
	for _, c := range n.children() {
		walkPlan(c, f)
	}
}

// pageBound is how many rows any one scan of a read may look at: a page (and its look-ahead
// row) and the page's attachments, with room to spare; a tenant's size must not show in it.
const pageBound = 3*DefaultLimit + 10

// windowScans are the scans bounded by the health window instead of a page: their index
// condition must hold the window's column, so they read the window's rows and no more.
var windowScans = map[string]string{"stripe_events": "received_at", "job_attempts": "bucket", "webhook_delivery_counts": "bucket"}

// readsWindow says whether n's subtree scans a table by the health window.
func readsWindow(n planNode) bool {
	found := false
	walkPlan(n, func(c planNode) {
		if _, ok := windowScans[c.str("Relation Name")]; ok {
			found = true
		}
	})
	return found
}

// Every statement of the read path, as the route functions run it (their kept generic plans,
// reported by auto_explain: the user under RLS; the membership, the switch and the owner's
// health on the pool), for a tenant grown to 10,500 rows of every kind beside 1,000 others,
// is index scans only, each reading at most a page's worth of rows (or the health window's): no
// sequential scan, no scan of a tenant's history, no sort or aggregate of it. This is what keeps
// GET /v1/account and /v1/tickets at the same cost whatever the tenant's size (BENCHMARKS.md
// has the measured times at 1k, 100k and 1M rows).
func TestEveryReadIsAnIndexScanBoundedByThePageOrTheWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := tickettest.New(t)
	start := time.Now()
	world, err := growth.Seed(ctx, env.Pool, growth.Size{Rows: growth.DeepPage + 500, OtherTenants: 1000, SmallRows: 5})
	require.NoError(t, err)
	require.NotNil(t, world.DeepCursor)
	t.Logf("seeded in %s", time.Since(start))

	for _, role := range []tenant.Role{tenant.Owner, tenant.Member} {
		user := world.MemberID
		if role == tenant.Owner {
			user = world.OwnerID
		}
		m := tickettest.Member{TenantID: world.TenantID, UserID: user, Token: env.Issuer.Token(t, user)}
		scope := userScope(t, env, m, role)
		deep := &Cursor{CreatedAt: world.DeepCursor.CreatedAt, ID: world.DeepCursor.ID}
		plans, err := ExplainReads(ctx, env.Pool, scope, world.TicketID, deep)
		require.NoError(t, err)
		requireEveryReadExplained(t, plans, role == tenant.Owner)
		for _, p := range plans {
			t.Run(string(role)+"/"+p.Read, func(t *testing.T) {
				root := planRoot(t, p)
				require.Positive(t, root.num("Actual Rows"), "the statement found its rows:\n%s", p.Text)
				walkPlan(root, func(n planNode) {
					kind, rel := n.str("Node Type"), n.str("Relation Name")
					require.NotEqual(t, "Seq Scan", kind, "%s\n%s", rel, p.Text)
					if (kind == "Sort" || kind == "Aggregate" || kind == "HashAggregate") && !readsWindow(n) {
						require.LessOrEqual(t, n.children()[0].num("Actual Rows")*max(n.num("Actual Loops"), 1), float64(pageBound),
							"%s of more than a page\n%s", kind, p.Text)
					}
					if rel == "" && n.str("Index Name") == "" {
						return
					}
					require.Contains(t, []string{"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan"},
						kind, "%s\n%s", rel, p.Text)
					if col, ok := windowScans[rel]; ok {
						require.Contains(t, n.str("Index Cond")+n.str("Recheck Cond"), col, "%s is read by the window\n%s", rel, p.Text)
						return
					}
					require.LessOrEqual(t, n.rowsRead(), float64(pageBound), "rows of %s read\n%s", rel, p.Text)
				})
				if p.AsUser {
					require.Contains(t, string(p.JSON), "private.current_tenant_ids()", "RLS applies:\n%s", p.Text)
				}
			})
		}
	}
}

// planRoot is the top node of one of ExplainReads' plans.
func planRoot(t *testing.T, p ReadPlan) planNode {
	t.Helper()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(p.JSON, &doc), "%s", p.JSON)
	plan, ok := doc["Plan"].(map[string]any)
	require.True(t, ok, "%s", p.JSON)
	return planNode(plan)
}

// requireEveryReadExplained checks that ExplainReads reported what each route function runs:
// a statement on the views as the user for every read, the owner's health for an owner only.
func requireEveryReadExplained(t *testing.T, plans []ReadPlan, owner bool) {
	t.Helper()
	asUser := map[string]bool{}
	healthRead := false
	for _, p := range plans {
		route, _, _ := strings.Cut(p.Read, ": select")
		if p.AsUser {
			asUser[route] = true
		}
		healthRead = healthRead || strings.Contains(p.Query, "private.job_summary")
	}
	for _, route := range []string{"GET /v1/account", "GET /v1/tickets: first page",
		"GET /v1/tickets: a page by cursor, deep in the list", "GET /v1/tickets/{id}"} {
		require.True(t, asUser[route], "%s reads the views as the user: %v", route, asUser)
	}
	require.Equal(t, owner, healthRead, "the owner's health, for owners only")
}
