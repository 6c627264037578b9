package portal

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// read is one query of the portal's reads, in its two spellings: SQL is the query itself (what
// ExplainReads and the plan test explain), Call runs the same query through the PL/pgSQL
// function that holds it (migration portal_read_functions), which is what the handlers send:
// Postgres then keeps its plan for the connection's life instead of planning it per request.
type read struct {
	SQL, Call string
	Args      []any
	// from is SQL after its column list: the function's query is "select * " + from.
	from string
}

// newRead builds a read of columns from a function and the query inside it; from is that
// query after "select *", exactly as the function's text has it.
func newRead(columns, function, from string, args ...any) read {
	return read{SQL: "select " + columns + " " + from, Call: "select " + columns + " from " + function, Args: args, from: from}
}

const (
	accountColumns = `tenant_id, name, billing_status, billing_message, plan, current_period_end, cancel_at_period_end,
		last_payment_at, last_payment_amount, last_payment_currency, last_failure_at, billing_updated_at`
	syncColumns   = `integration, state, message, waiting, failed, last_success_at, last_attempt_at`
	ticketColumns = `id, subject, category, priority, status, status_message, source, created_at, updated_at, attachments`
)

// accountRead is the tenant's row of public.portal_account.
func accountRead(tenantID uuid.UUID) read {
	return newRead(accountColumns, "private.portal_account_of($1)", "from public.portal_account where tenant_id = $1", tenantID)
}

// syncsRead is the tenant's rows of public.portal_sync_summary.
func syncsRead(tenantID uuid.UUID) read {
	return newRead(syncColumns, "private.portal_syncs_of($1)", "from public.portal_sync_summary where tenant_id = $1", tenantID)
}

// ticketRead is one ticket of the tenant, with its body.
func ticketRead(tenantID, id uuid.UUID) read {
	return newRead(ticketColumns+", body", "private.portal_ticket_of($1, $2)",
		"from public.portal_tickets where id = $1 and tenant_id = $2", id, tenantID)
}

// ticketPageRead is the keyset query of one page, newest first, after the cursor: the order
// (created_at desc, id desc) is that of tickets_tenant_created_idx, so a page costs an index
// range scan whatever the tenant's ticket count (rls_test.go checks the plan as the user).
func ticketPageRead(tenantID uuid.UUID, after *Cursor, limit int) read {
	if after == nil {
		return newRead(ticketColumns, "private.portal_tickets_first($1, $2)",
			"from public.portal_tickets where tenant_id = $1 order by created_at desc, id desc limit $2", tenantID, limit+1)
	}
	return newRead(ticketColumns, "private.portal_tickets_after($1, $2, $3, $4)",
		"from public.portal_tickets where tenant_id = $1 and (created_at, id) < ($2, $3) order by created_at desc, id desc limit $4",
		tenantID, after.CreatedAt, after.ID, limit+1)
}

// queueAccount queues the read of the tenant's row of public.portal_account (as the user:
// RLS applies); t and b are filled when the batch's results are read. No row (RLS hid it) is
// pgx.ErrNoRows.
func queueAccount(batch *pgx.Batch, tenantID uuid.UUID, t *AccountTenant, b *Billing) {
	q := accountRead(tenantID)
	batch.Queue(q.Call, q.Args...).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&t.ID, &t.Name, &b.Status, &b.Message, &b.Plan, &b.CurrentPeriodEnd, &b.CancelAtPeriodEnd,
			&b.LastPaymentAt, &b.LastPaymentAmount, &b.LastPaymentCurrency, &b.LastFailureAt, &b.UpdatedAt)
		if err != nil {
			return fmt.Errorf("read account: %w", err)
		}
		return nil
	})
}

// queueSyncs queues the read of public.portal_sync_summary; out gets every integration, those
// with nothing yet in their idle words.
func queueSyncs(batch *pgx.Batch, tenantID uuid.UUID, out *[]Sync) {
	q := syncsRead(tenantID)
	batch.Queue(q.Call, q.Args...).Query(func(rows pgx.Rows) error {
		got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Sync, error) {
			var s Sync
			err := row.Scan(&s.Integration, &s.State, &s.Message, &s.Waiting, &s.Failed, &s.LastSuccessAt, &s.LastAttemptAt)
			return s, err
		})
		if err != nil {
			return fmt.Errorf("read sync summary: %w", err)
		}
		all := idleSyncs()
		for i := range all {
			for _, g := range got {
				if g.Integration == all[i].Integration {
					all[i] = g
				}
			}
		}
		*out = all
		return nil
	})
}

func scanSummary(row pgx.Row, extra ...any) (TicketSummary, error) {
	var t TicketSummary
	var atts []byte
	dest := append([]any{&t.ID, &t.Subject, &t.Category, &t.Priority, &t.Status, &t.StatusMessage, &t.Source,
		&t.CreatedAt, &t.UpdatedAt, &atts}, extra...)
	if err := row.Scan(dest...); err != nil {
		return t, err
	}
	t.Attachments = []Attachment{}
	if err := json.Unmarshal(atts, &t.Attachments); err != nil {
		return t, fmt.Errorf("decode attachments: %w", err)
	}
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return t, nil
}

// queueTickets queues the read of one page of ticketPageRead into page; one extra row says
// whether a next page exists.
func queueTickets(batch *pgx.Batch, tenantID uuid.UUID, after *Cursor, limit int, page *TicketPage) {
	q := ticketPageRead(tenantID, after, limit)
	batch.Queue(q.Call, q.Args...).Query(func(rows pgx.Rows) error {
		list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TicketSummary, error) { return scanSummary(row) })
		if err != nil {
			return fmt.Errorf("list tickets: %w", err)
		}
		*page = TicketPage{Tickets: list}
		if len(list) > limit {
			page.Tickets = list[:limit]
			last := page.Tickets[limit-1]
			next := Cursor{CreatedAt: last.CreatedAt, ID: last.ID}.Encode()
			page.NextCursor = &next
		}
		return nil
	})
}

// queueTicket queues the read of one ticket of the tenant into t; found stays false for an
// unknown id or one RLS hides.
func queueTicket(batch *pgx.Batch, tenantID, id uuid.UUID, t *Ticket, found *bool) {
	q := ticketRead(tenantID, id)
	batch.Queue(q.Call, q.Args...).QueryRow(func(row pgx.Row) error {
		s, err := scanSummary(row, &t.Body)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read ticket: %w", err)
		}
		t.TicketSummary, *found = s, true
		return nil
	})
}
