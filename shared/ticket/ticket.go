// Package ticket creates support tickets for portal users (POST /v1/tickets): one request gives
// exactly one ticket, tied to the tenant and user of the verified token, with its attachments'
// storage paths and the job that pushes it to the helpdesk, all in one transaction with the
// idempotency record. Rules, queries and the handler of ticket creation live here together.
//
// Ticket text is untrusted input: it is stored as text and forwarded as text, never
// interpreted and never rendered as HTML by us.
//
// When attachments are described, the answer carries one signed Supabase Storage upload URL per
// file under <tenant_id>/<ticket_id>/<attachment_id>-<safe name>. The URLs are signed before
// anything is written: if Storage is down or slow (bounded timeout), the request fails with 503
// and nothing is stored, so the client retries with the same Idempotency-Key and gets one
// ticket. A replay of a stored answer carries the same URLs (valid two hours from signing).
package ticket

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// maxSafeNameLen bounds the file name part of an object path.
const maxSafeNameLen = 100

// StatusPendingSync is a new ticket's status until the helpdesk worker has delivered it.
const StatusPendingSync = "pending_sync"

// Errors of this package.
var (
	// ErrNoScope means the handler ran without tenant.Middleware in front (a wiring bug).
	ErrNoScope = errors.New("ticket: no tenant scope in the request")
)

// Enqueuer queues the helpdesk push inside the ticket's transaction (jobs.Inserter is one).
type Enqueuer interface {
	EnqueueHelpdeskTicket(ctx context.Context, tx pgx.Tx, tenantID, ticketID uuid.UUID) error
}

// UploadSigner signs an upload URL for one object path (storage.Client is one). It must bound
// its own time; any error means "Storage is unavailable".
type UploadSigner interface {
	SignUpload(ctx context.Context, objectPath string) (url string, expiresAt time.Time, err error)
}

// CreateRequest is the body of POST /v1/tickets. Unknown fields are rejected. The limits and
// allow-lists in the validate tags are the rules; the database's check constraints and
// openapi.yaml say the same (portal's contract test compares the tags with the document).
type CreateRequest struct {
	Subject     string              `json:"subject" validate:"required,max=200"`
	Body        string              `json:"body" validate:"required,max=20000"`
	Category    string              `json:"category" validate:"required,oneof=billing technical account other"`
	Priority    string              `json:"priority" validate:"omitempty,oneof=low normal high urgent"`
	Attachments []AttachmentRequest `json:"attachments" validate:"max=5,dive"`
}

// AttachmentRequest describes one file the user will upload after the ticket exists: at most
// 10 MiB, of a content type support can open safely.
type AttachmentRequest struct {
	Name        string `json:"name" validate:"required,max=255"`
	Size        int64  `json:"size" validate:"required,min=1,max=10485760"`
	ContentType string `json:"content_type" validate:"required,oneof=image/png image/jpeg image/gif image/webp application/pdf text/plain text/csv application/zip application/json application/vnd.openxmlformats-officedocument.wordprocessingml.document application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"`
}

// AttachmentLimits are the size limit and content types AttachmentRequest accepts, read from
// its validation tags: the attachments bucket is set up with exactly these (`reconcile setup`).
func AttachmentLimits() (maxBytes int64, contentTypes []string) {
	t := reflect.TypeFor[AttachmentRequest]()
	size, _ := t.FieldByName("Size")
	ct, _ := t.FieldByName("ContentType")
	for _, rule := range strings.Split(size.Tag.Get("validate"), ",") {
		if v, ok := strings.CutPrefix(rule, "max="); ok {
			maxBytes, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	for _, rule := range strings.Split(ct.Tag.Get("validate"), ",") {
		if v, ok := strings.CutPrefix(rule, "oneof="); ok {
			contentTypes = strings.Fields(v)
		}
	}
	return maxBytes, contentTypes
}

// Created is the 201 answer.
type Created struct {
	ID          uuid.UUID           `json:"id"`
	Status      string              `json:"status"`
	CreatedAt   time.Time           `json:"created_at"`
	Attachments []CreatedAttachment `json:"attachments"`
}

// CreatedAttachment tells the client where to PUT one file.
type CreatedAttachment struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	UploadURL   string    `json:"upload_url"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// SafeName turns a user's file name into the last segment of an object path: letters, digits,
// dot, dash and underscore only (others become "_"), no leading dots, at most 100 bytes,
// "file" when nothing is left. The original name is kept in the database for display.
func SafeName(name string) string {
	var b strings.Builder
	lastUnderscore := false
	for _, r := range name {
		ok := r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '-' || r == '_')
		if !ok {
			r = '_'
		}
		if r == '_' && lastUnderscore {
			continue
		}
		lastUnderscore = r == '_'
		b.WriteRune(r)
	}
	s := strings.TrimLeft(b.String(), "._")
	if len(s) > maxSafeNameLen {
		s = s[len(s)-maxSafeNameLen:]
		s = strings.TrimLeft(s, "._")
	}
	if s == "" {
		return "file"
	}
	return s
}

// ObjectPath is where an attachment lives in the bucket: <tenant>/<ticket>/<attachment>-<safe name>.
func ObjectPath(tenantID, ticketID, attachmentID uuid.UUID, name string) string {
	return tenantID.String() + "/" + ticketID.String() + "/" + attachmentID.String() + "-" + SafeName(name)
}
