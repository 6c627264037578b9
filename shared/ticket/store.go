package ticket

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db"
)

// newTicket is one validated ticket with its ids, ready to insert.
type newTicket struct {
	ID             uuid.UUID
	TenantID       uuid.UUID
	UserID         uuid.UUID
	RequesterEmail string
	RequesterName  string
	Subject        string
	Body           string
	Category       string
	Priority       string
	Attachments    []newAttachment
}

type newAttachment struct {
	ID          uuid.UUID
	Name        string
	Size        int64
	ContentType string
	ObjectPath  string
}

// insertTicket writes the ticket and its attachments in tx and returns the ticket's created_at;
// only the ticket's insert waits for its answer.
func insertTicket(ctx context.Context, tx pgx.Tx, t newTicket) (time.Time, error) {
	var createdAt time.Time
	err := tx.QueryRow(ctx, `
		insert into public.tickets
		    (id, tenant_id, user_id, requester_email, requester_name, subject, body, category, priority, status, source)
		values ($1, $2, $3, nullif($4, ''), nullif($5, ''), $6, $7, $8, $9, 'pending_sync', 'portal')
		returning created_at`,
		t.ID, t.TenantID, t.UserID, t.RequesterEmail, t.RequesterName, t.Subject, t.Body, t.Category, t.Priority,
	).Scan(&createdAt)
	if err != nil {
		return time.Time{}, fmt.Errorf("insert ticket: %w", err)
	}
	if len(t.Attachments) == 0 {
		return createdAt, nil
	}
	// Nobody waits for these: on a db.Pipe (the idempotency store's transaction) they go with
	// the commit.
	for _, a := range t.Attachments {
		if err := db.Defer(ctx, tx, `
			insert into public.ticket_attachments (id, ticket_id, tenant_id, name, size_bytes, content_type, object_path, created_at)
			values ($1, $2, $3, $4, $5, $6, $7, $8)`,
			a.ID, t.ID, t.TenantID, a.Name, a.Size, a.ContentType, a.ObjectPath, createdAt); err != nil {
			return time.Time{}, fmt.Errorf("insert ticket attachments: %w", err)
		}
	}
	return createdAt, nil
}
