package portal

import (
	"context"
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

// readAccount reads the tenant's row of public.portal_account (as the user: RLS applies).
func readAccount(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) (AccountTenant, Billing, error) {
	var t AccountTenant
	var b Billing
	err := tx.QueryRow(ctx, accountQuery, tenantID).
		Scan(&t.ID, &t.Name, &b.Status, &b.Message, &b.Plan, &b.CurrentPeriodEnd, &b.CancelAtPeriodEnd,
			&b.LastPaymentAt, &b.LastPaymentAmount, &b.LastPaymentCurrency, &b.LastFailureAt, &b.UpdatedAt)
	if err != nil {
		return t, b, fmt.Errorf("read account: %w", err)
	}
	return t, b, nil
}

// readSyncs reads public.portal_sync_summary and fills in integrations with nothing yet.
func readSyncs(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) ([]Sync, error) {
	rows, err := tx.Query(ctx, syncsQuery, tenantID)
	if err != nil {
		return nil, fmt.Errorf("read sync summary: %w", err)
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Sync, error) {
		var s Sync
		err := row.Scan(&s.Integration, &s.State, &s.Message, &s.Waiting, &s.Failed, &s.LastSuccessAt, &s.LastAttemptAt)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read sync summary: %w", err)
	}
	out := idleSyncs()
	for i := range out {
		for _, g := range got {
			if g.Integration == out[i].Integration {
				out[i] = g
			}
		}
	}
	return out, nil
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

// readTickets reads one page of ticketPageQuery; one extra row says whether a next page exists.
func readTickets(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, after *Cursor, limit int) (TicketPage, error) {
	sql, args := ticketPageQuery(tenantID, after, limit)
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return TicketPage{}, fmt.Errorf("list tickets: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TicketSummary, error) { return scanSummary(row) })
	if err != nil {
		return TicketPage{}, fmt.Errorf("list tickets: %w", err)
	}
	page := TicketPage{Tickets: list}
	if len(list) > limit {
		page.Tickets = list[:limit]
		last := page.Tickets[limit-1]
		next := Cursor{CreatedAt: last.CreatedAt, ID: last.ID}.Encode()
		page.NextCursor = &next
	}
	return page, nil
}

// readTicket reads one ticket of the tenant; found is false for an unknown id or one RLS hides.
func readTicket(ctx context.Context, tx pgx.Tx, tenantID, id uuid.UUID) (Ticket, bool, error) {
	var t Ticket
	row := tx.QueryRow(ctx, ticketQuery, id, tenantID)
	s, err := scanSummary(row, &t.Body)
	if errors.Is(err, pgx.ErrNoRows) {
		return Ticket{}, false, nil
	}
	if err != nil {
		return Ticket{}, false, fmt.Errorf("read ticket: %w", err)
	}
	t.TicketSummary = s
	return t, true, nil
}
