package portal

import "github.com/google/uuid"

// read is one query of the portal's reads on its views, as the route functions run it (they
// take the tenant from the resolved scope): the RLS test asks each for another tenant's rows.
type read struct {
	SQL  string
	Args []any
}

const ticketColumns = `id, subject, category, priority, status, status_message, source, created_at, updated_at, attachments`

// accountRead is the tenant's row of public.portal_account.
func accountRead(tenantID uuid.UUID) read {
	return read{`select tenant_id, name, billing_status, plan from public.portal_account where tenant_id = $1`, []any{tenantID}}
}

// syncsRead is the tenant's rows of public.portal_sync_summary.
func syncsRead(tenantID uuid.UUID) read {
	return read{`select integration, state, waiting from public.portal_sync_summary where tenant_id = $1`, []any{tenantID}}
}

// ticketRead is one ticket of the tenant, with its body.
func ticketRead(tenantID, id uuid.UUID) read {
	return read{`select ` + ticketColumns + `, body from public.portal_tickets where id = $1 and tenant_id = $2`, []any{id, tenantID}}
}

// ticketPageRead is the keyset query of one page, newest first, after the cursor (nil: the
// first page).
func ticketPageRead(tenantID uuid.UUID, after *Cursor, limit int) read {
	if after == nil {
		return read{`select ` + ticketColumns + ` from public.portal_tickets where tenant_id = $1
			order by created_at desc, id desc limit $2`, []any{tenantID, limit + 1}}
	}
	return read{`select ` + ticketColumns + ` from public.portal_tickets where tenant_id = $1 and (created_at, id) < ($2, $3)
		order by created_at desc, id desc limit $4`, []any{tenantID, after.CreatedAt, after.ID, limit + 1}}
}
