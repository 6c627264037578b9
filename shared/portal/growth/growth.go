// Package growth seeds what a portal read has to cope with after years of use: one tenant
// grown to n rows of every kind the account and ticket reads touch (tickets, attachments,
// River jobs, Stripe events, sync statuses), beside many small tenants, in bulk with COPY.
// The plan test of shared/portal seeds a small world with it, and cmd/load's growth harness
// seeds 1k, 100k and 1M rows to check that each read costs the same at every size.
//
// Rows go in with COPY on one connection with triggers off (session_replication_role =
// replica, which needs a superuser: the local development server), then the kept delivery
// summaries are recounted in one pass (health.Rebuild), as ops would after a bulk load: a
// row trigger per copied row would make a million upserts of one summary row in one
// transaction.
package growth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/portal-functions/portal-functions/shared/health"
)

// ErrBadSize is a size the seeder cannot make.
var ErrBadSize = errors.New("growth: rows must be at least 1 and tenants at least 0")

// Size is the world to seed.
type Size struct {
	// Rows of each kind for the grown tenant (tickets, attachments, helpdesk jobs, Stripe
	// events, sync statuses; CRM jobs are a tenth of it).
	Rows int
	// OtherTenants beside it, each with SmallRows rows of each kind.
	OtherTenants int
	SmallRows    int
	// Progress, when not nil, hears what is being loaded and how long each step took.
	Progress io.Writer
	// Span is how far back the grown tenant's history reaches (default a year); the newest
	// rows are minutes old, so the health window always holds some.
	Span time.Duration
}

// Querier is what Find reads with (a pool or a connection).
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s Size) progress(format string, args ...any) {
	if s.Progress != nil {
		fmt.Fprintf(s.Progress, "growth: "+format+"\n", args...)
	}
}

// World is what Seed made: the grown tenant, an owner and a member of it, a ticket of it, and
// the cursor of its ticket list 10,000 rows deep (nil when it has fewer tickets).
type World struct {
	TenantID   uuid.UUID
	OwnerID    uuid.UUID
	MemberID   uuid.UUID
	TicketID   uuid.UUID
	DeepCursor *Cursor
}

// Cursor is a position in a tenant's ticket list (created_at, id), as the portal orders it.
type Cursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// DeepPage is how deep into the list World.DeepCursor points.
const DeepPage = 10000

// Seed makes the world and ANALYZEs the tables, so plans are the ones a settled database
// picks. The grown tenant's failures are kept rare (1 in 100 helpdesk jobs discarded after two
// failed attempts), as on a healthy system.
func Seed(ctx context.Context, pool *pgxpool.Pool, s Size) (World, error) {
	if s.Rows < 1 || s.OtherTenants < 0 || s.SmallRows < 0 {
		return World{}, ErrBadSize
	}
	if s.Span <= 0 {
		s.Span = 365 * 24 * time.Hour
	}
	w := World{TenantID: uuid.New(), OwnerID: uuid.New(), MemberID: uuid.New()}
	tenants := []tenantSeed{{id: w.TenantID, rows: s.Rows, span: s.Span}}
	for range s.OtherTenants {
		tenants = append(tenants, tenantSeed{id: uuid.New(), rows: s.SmallRows, span: s.Span})
	}
	now := time.Now().UTC()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return World{}, fmt.Errorf("growth: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `set session_replication_role = replica; set statement_timeout = 0`); err != nil {
		return World{}, fmt.Errorf("growth: bulk load settings: %w", err)
	}
	defer func() {
		// Back to normal before the connection returns to the pool.
		_, _ = conn.Exec(context.WithoutCancel(ctx), `reset session_replication_role; reset statement_timeout`)
	}()
	c := conn.Conn()

	if err := copyRows(ctx, c, "tenants", []string{"id", "name"}, len(tenants), func(i int) []any {
		return []any{tenants[i].id, fmt.Sprintf("Tenant %d", i)}
	}); err != nil {
		return World{}, err
	}
	if err := copyRows(ctx, c, "memberships", []string{"tenant_id", "user_id", "role"}, len(tenants)+1, func(i int) []any {
		switch i {
		case 0:
			return []any{w.TenantID, w.OwnerID, "owner"}
		case 1:
			return []any{w.TenantID, w.MemberID, "member"}
		}
		return []any{tenants[i-1].id, uuid.New(), "owner"}
	}); err != nil {
		return World{}, err
	}
	if err := copyRowsIn(ctx, c, "private", "billing_accounts",
		[]string{"tenant_id", "status", "plan", "last_payment_at", "last_payment_amount", "last_payment_currency"},
		len(tenants), func(i int) []any {
			return []any{tenants[i].id, "active", "pro", now.Add(-time.Hour), int64(4900), "usd"}
		}); err != nil {
		return World{}, err
	}

	for i := range tenants {
		t := &tenants[i]
		t.ticketIDs = make([]uuid.UUID, t.rows)
		for j := range t.ticketIDs {
			t.ticketIDs[j] = uuid.New()
		}
	}
	// One COPY per table for all tenants: a thousand small tenants are a thousand rows of a
	// stream, not a thousand round trips.
	for _, tb := range tables(now) {
		tn, i := 0, 0
		src := pgx.CopyFromFunc(func() ([]any, error) {
			for tn < len(tenants) && i >= tb.count(&tenants[tn]) {
				tn, i = tn+1, 0
			}
			if tn == len(tenants) {
				return nil, nil
			}
			i++
			return tb.row(&tenants[tn], i-1), nil
		})
		started := time.Now()
		n, err := c.CopyFrom(ctx, pgx.Identifier{tb.schema, tb.name}, tb.cols, src)
		if err != nil {
			return World{}, fmt.Errorf("growth: copy %s.%s: %w", tb.schema, tb.name, err)
		}
		s.progress("copied %d rows into %s.%s in %s", n, tb.schema, tb.name, time.Since(started).Round(time.Millisecond))
	}
	if _, err := c.Exec(ctx, `reset session_replication_role`); err != nil {
		return World{}, fmt.Errorf("growth: triggers back on: %w", err)
	}
	started := time.Now()
	if err := health.Rebuild(ctx, c, uuid.Nil); err != nil {
		return World{}, fmt.Errorf("growth: %w", err)
	}
	s.progress("recounted the delivery summary in %s", time.Since(started).Round(time.Millisecond))
	started = time.Now()
	if _, err := c.Exec(ctx, `analyze public.tenants, public.memberships, public.tickets, public.ticket_attachments,
		private.billing_accounts, private.stripe_events, private.sync_status, private.sync_summary,
		private.river_job, private.job_summary, private.job_attempts`); err != nil {
		return World{}, fmt.Errorf("growth: analyze: %w", err)
	}
	s.progress("analyzed in %s", time.Since(started).Round(time.Millisecond))
	return Find(ctx, c)
}

// Find is the World a database was seeded with before (the tenant with the most tickets), so
// a harness can time reads again without seeding again. It counts the tickets: a harness's
// query, not a portal's.
func Find(ctx context.Context, q Querier) (World, error) {
	var w World
	var n int
	err := q.QueryRow(ctx, `select tenant_id, count(*) from public.tickets group by tenant_id order by 2 desc limit 1`).Scan(&w.TenantID, &n)
	if err != nil {
		return World{}, fmt.Errorf("growth: find the grown tenant: %w", err)
	}
	err = q.QueryRow(ctx, `select
		    (select user_id from public.memberships where tenant_id = $1 and role = 'owner' limit 1),
		    (select user_id from public.memberships where tenant_id = $1 and role = 'member' limit 1),
		    (select id from public.tickets where tenant_id = $1 order by created_at desc, id desc offset $2 limit 1)`,
		w.TenantID, n/2).Scan(&w.OwnerID, &w.MemberID, &w.TicketID)
	if err != nil {
		return World{}, fmt.Errorf("growth: find the grown tenant's users: %w", err)
	}
	if n > DeepPage {
		var deep Cursor
		if err := q.QueryRow(ctx, `select created_at, id from public.tickets where tenant_id = $1
			order by created_at desc, id desc offset $2 limit 1`, w.TenantID, DeepPage-1).Scan(&deep.CreatedAt, &deep.ID); err != nil {
			return World{}, fmt.Errorf("growth: deep cursor: %w", err)
		}
		w.DeepCursor = &deep
	}
	return w, nil
}

type tenantSeed struct {
	id        uuid.UUID
	rows      int
	span      time.Duration
	ticketIDs []uuid.UUID
}

// at is the time of row i of n, newest first: i = 0 is a minute old, n-1 is span old.
func (t *tenantSeed) at(now time.Time, i int) time.Time {
	return now.Add(-time.Minute - time.Duration(float64(t.span)*float64(i)/float64(t.rows)))
}

// table is how to generate one table's rows for a tenant.
type table struct {
	schema, name string
	cols         []string
	count        func(t *tenantSeed) int
	row          func(t *tenantSeed, i int) []any
}

// tables are the tenant-owned rows: per ticket one attachment, one helpdesk job, one sync
// status and one Stripe event; a CRM job per ten tickets and the tenant's CRM sync status.
func tables(now time.Time) []table {
	perTicket := func(t *tenantSeed) int { return t.rows }
	return []table{
		{"public", "tickets",
			[]string{"id", "tenant_id", "subject", "body", "category", "priority", "status", "helpdesk_ticket_id", "created_at", "updated_at", "synced_at"},
			perTicket, func(t *tenantSeed, i int) []any {
				at := t.at(now, i)
				return []any{t.ticketIDs[i], t.id, fmt.Sprintf("Ticket %d", i), "The export button does nothing when I click it.",
					"technical", "normal", "synced", int64(i + 1), at, at, at}
			}},
		{"public", "ticket_attachments",
			[]string{"ticket_id", "tenant_id", "name", "size_bytes", "content_type", "object_path", "created_at"},
			perTicket, func(t *tenantSeed, i int) []any {
				return []any{t.ticketIDs[i], t.id, "screenshot.png", int64(1024), "image/png",
					fmt.Sprintf("%s/%s/a-screenshot.png", t.id, t.ticketIDs[i]), t.at(now, i)}
			}},
		{"private", "sync_status",
			[]string{"integration", "subject", "tenant_id", "state", "last_success_at", "last_attempt_at", "attempts"},
			func(t *tenantSeed) int { return t.rows + min(t.rows, 1) }, func(t *tenantSeed, i int) []any {
				if i == t.rows {
					return []any{"crm", "tenant:" + t.id.String(), t.id, "synced", now.Add(-time.Hour), now.Add(-time.Hour), 1}
				}
				at := t.at(now, i)
				return []any{"helpdesk", "ticket:" + t.ticketIDs[i].String(), t.id, "synced", at, at, 1}
			}},
		{"private", "stripe_events",
			[]string{"id", "type", "created", "payload", "tenant_id", "outcome", "received_at", "applied_at"},
			perTicket, func(t *tenantSeed, i int) []any {
				at := t.at(now, i)
				return []any{"evt_" + uuid.NewString(), "invoice.paid", at, []byte(`{}`), t.id, "processed", at, at}
			}},
		{"private", "river_job",
			[]string{"kind", "queue", "args", "state", "attempt", "max_attempts", "priority", "created_at", "scheduled_at", "attempted_at", "finalized_at", "errors"},
			func(t *tenantSeed) int { return t.rows + min(max(t.rows/10, 1), t.rows) }, func(t *tenantSeed, i int) []any {
				n := t.rows
				kind, queue := "helpdesk_ticket", "helpdesk"
				args := fmt.Sprintf(`{"tenant_id":%q,"ticket_id":%q}`, t.id, t.ticketIDs[i%n])
				at := t.at(now, i%n)
				if i >= n {
					kind, queue = "crm_sync", "crm"
					args = fmt.Sprintf(`{"tenant_id":%q,"source_event":"evt_%d"}`, t.id, i)
				}
				done := at.Add(time.Minute)
				if i%100 == 99 { // a dead letter after two failed attempts
					errs := []json.RawMessage{
						fmt.Appendf(nil, `{"at":%q,"attempt":1,"error":"provider 500","trace":""}`, at.Add(15*time.Second).Format(time.RFC3339Nano)),
						fmt.Appendf(nil, `{"at":%q,"attempt":2,"error":"provider 422","trace":""}`, done.Format(time.RFC3339Nano)),
					}
					return []any{kind, queue, []byte(args), "discarded", 2, 2, 1, at, at, done, done, errs}
				}
				return []any{kind, queue, []byte(args), "completed", 1, 32, 1, at, at, done, done, nil}
			}},
	}
}

func copyRows(ctx context.Context, c *pgx.Conn, table string, cols []string, n int, row func(int) []any) error {
	return copyRowsIn(ctx, c, "public", table, cols, n, row)
}

// copyRowsIn streams n generated rows into schema.table with COPY, in one transaction.
func copyRowsIn(ctx context.Context, c *pgx.Conn, schema, table string, cols []string, n int, row func(int) []any) error {
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		return row(i - 1), nil
	})
	if _, err := c.CopyFrom(ctx, pgx.Identifier{schema, table}, cols, src); err != nil {
		return fmt.Errorf("growth: copy %s.%s: %w", schema, table, err)
	}
	return nil
}
