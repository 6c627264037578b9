package portal

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// The account's queries ($1: the tenant); ExplainReads explains them as they are run.
const (
	accountQuery = `
		select tenant_id, name, billing_status, billing_message, plan, current_period_end, cancel_at_period_end,
		       last_payment_at, last_payment_amount, last_payment_currency, last_failure_at, billing_updated_at
		from public.portal_account where tenant_id = $1`
	syncsQuery = `
		select integration, state, message, waiting, failed, last_success_at, last_attempt_at
		from public.portal_sync_summary where tenant_id = $1`
	// ticketQuery: $1 the ticket, $2 the tenant.
	ticketQuery = `select ` + ticketColumns + `, body from public.portal_tickets where id = $1 and tenant_id = $2`
)

// queueAccount queues the read of the tenant's row of public.portal_account (as the user:
// RLS applies); t and b are filled when the batch's results are read. No row (RLS hid it) is
// pgx.ErrNoRows.
func queueAccount(batch *pgx.Batch, tenantID uuid.UUID, t *AccountTenant, b *Billing) {
	batch.Queue(accountQuery, tenantID).QueryRow(func(row pgx.Row) error {
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
	batch.Queue(syncsQuery, tenantID).Query(func(rows pgx.Rows) error {
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

const ticketColumns = `id, subject, category, priority, status, status_message, source, created_at, updated_at, attachments`

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

// ticketPageQuery is the keyset query of one page, newest first, after the cursor: the order
// (created_at desc, id desc) is that of tickets_tenant_created_idx, so a page costs an index
// range scan whatever the tenant's ticket count (rls_test.go checks the plan as the user).
func ticketPageQuery(tenantID uuid.UUID, after *Cursor, limit int) (string, []any) {
	if after == nil {
		return `select ` + ticketColumns + ` from public.portal_tickets
			where tenant_id = $1 order by created_at desc, id desc limit $2`, []any{tenantID, limit + 1}
	}
	return `select ` + ticketColumns + ` from public.portal_tickets
			where tenant_id = $1 and (created_at, id) < ($2, $3)
			order by created_at desc, id desc limit $4`, []any{tenantID, after.CreatedAt, after.ID, limit + 1}
}

// queueTickets queues the read of one page of ticketPageQuery into page; one extra row says
// whether a next page exists.
func queueTickets(batch *pgx.Batch, tenantID uuid.UUID, after *Cursor, limit int, page *TicketPage) {
	sql, args := ticketPageQuery(tenantID, after, limit)
	batch.Queue(sql, args...).Query(func(rows pgx.Rows) error {
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
	batch.Queue(ticketQuery, id, tenantID).QueryRow(func(row pgx.Row) error {
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
