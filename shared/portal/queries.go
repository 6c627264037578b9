package portal

import "github.com/google/uuid"

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
