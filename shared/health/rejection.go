package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/db"
)

// Rejection reasons the webhook records. A reason is free text of the shape validReason, so a
// new kind of refusal is one more constant, not a migration.
const (
	// RejectedSignature: the Stripe-Signature header did not verify (400).
	RejectedSignature = "signature"
	// RejectedPayload: the body verified but is not a readable event (400), or is too large (413).
	RejectedPayload = "payload"
	// RejectedError: the event could not be stored or applied (5xx; Stripe retries).
	RejectedError = "error"
)

// validReason reports whether s has a rejection reason's shape, which the table also checks:
// ^[a-z][a-z0-9_]{0,31}$. Checked by hand: that regexp, compiled at package init, cost every
// cold start of the webhook 379 allocations and 0.1 to 0.2 ms.
func validReason(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// RejectionRetention is how long a minute's rejection count is kept. The counts only feed the
// health window (at most MaxWindow), so a month leaves room to look back after an incident.
const RejectionRetention = 30 * 24 * time.Hour

// RejectionPruneBatch bounds how many expired minutes one RecordRejectedDelivery deletes, so a
// burst of bad deliveries never turns one small upsert into a long delete.
const RejectionPruneBatch = 100

// ErrBadRejection: a rejection with a malformed reason or a non-error status.
var ErrBadRejection = errors.New("health: rejection needs a reason (lower-case word) and a 4xx/5xx status")

// Rejection is one delivery the webhook turned away.
type Rejection struct {
	Reason string
	Status int
	// EventID is the verified event's id, when there is one.
	EventID string
}

// RecordRejectedDelivery counts a delivery the webhook turned away, so delivery health shows
// it: one upsert into the row of the current minute and the reason, so a storm of refused
// deliveries (anyone can send them) adds at most one row per minute and reason, whatever its
// size. The same statement deletes up to RejectionPruneBatch minutes older than
// RejectionRetention, so the table stays bounded without a scheduled job; expired rows another
// call is already deleting are skipped, not waited for.
//
// The webhook calls it after its own transaction rolled back (q is the pool), and ignores its
// error beyond logging: a note about a failure must not change the answer to Stripe.
func RecordRejectedDelivery(ctx context.Context, q db.Querier, r Rejection) error {
	if !validReason(r.Reason) || r.Status < 400 || r.Status > 599 {
		return ErrBadRejection
	}
	var eventID *string
	if r.EventID != "" {
		id := r.EventID
		if len(id) > 255 {
			id = id[:255]
		}
		eventID = &id
	}
	// The count is a health hint, not a record: with q a pool, it is written in a transaction
	// that does not wait for the WAL flush (synchronous_commit off), which at worst loses the
	// last few counts in a server crash and makes each refusal several times cheaper.
	if b, ok := q.(db.Beginner); ok {
		return db.Tx(ctx, b, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `set local synchronous_commit = off`); err != nil {
				return fmt.Errorf("health: record rejected delivery: %w", err)
			}
			return upsertRejection(ctx, tx, r.Reason, r.Status, eventID)
		})
	}
	return upsertRejection(ctx, q, r.Reason, r.Status, eventID)
}

// upsertRejection adds one to the current minute's count of reason, pruning expired minutes.
func upsertRejection(ctx context.Context, q db.Querier, reason string, status int, eventID *string) error {
	if _, err := q.Exec(ctx, `
		with expired as (
		    delete from private.webhook_rejection_counts
		    where (minute, reason) in (
		        select minute, reason from private.webhook_rejection_counts
		        where minute < now() - make_interval(secs => $4)
		        order by minute
		        limit $5
		        for update skip locked))
		insert into private.webhook_rejection_counts as c (minute, reason, refused, last_status, last_event_id)
		values (date_trunc('minute', now()), $1, 1, $2, $3)
		on conflict (minute, reason) do update
		set refused = c.refused + 1, last_status = excluded.last_status,
		    last_event_id = coalesce(excluded.last_event_id, c.last_event_id)`,
		reason, status, eventID, RejectionRetention.Seconds(), RejectionPruneBatch); err != nil {
		return fmt.Errorf("health: record rejected delivery: %w", db.Classify(err))
	}
	return nil
}
