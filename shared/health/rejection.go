package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portal-functions/portal-functions/shared/db"
)

// Rejection reasons for RecordRejectedDelivery.
const (
	// RejectedSignature: the Stripe-Signature header did not verify (400).
	RejectedSignature = "signature"
	// RejectedPayload: the body verified but is not a readable event (400).
	RejectedPayload = "payload"
	// RejectedError: the event could not be stored or applied (5xx; Stripe retries).
	RejectedError = "error"
)

// RejectionRetention is how long a rejection note is kept. The notes only feed the health
// window (at most MaxWindow), so a month leaves room to look back after an incident and
// keeps the table small.
const RejectionRetention = 30 * 24 * time.Hour

// RejectionPruneBatch bounds how many expired notes one RecordRejectedDelivery deletes, so a
// burst of bad deliveries never turns one small insert into a long delete. Each new note
// removes up to this many expired ones, so expired notes go far faster than new ones arrive
// and the table needs no cron of its own.
const RejectionPruneBatch = 100

// ErrBadRejection: a rejection with an unknown reason or a non-error status.
var ErrBadRejection = errors.New("health: rejection needs a known reason and a 4xx/5xx status")

// Rejection is one delivery the webhook turned away.
type Rejection struct {
	Reason string
	Status int
	// EventID is the verified event's id, when there is one.
	EventID string
}

// RecordRejectedDelivery notes a delivery the webhook turned away, so delivery health counts
// it, and in the same statement deletes up to RejectionPruneBatch notes older than
// RejectionRetention: the table is only written when a delivery is refused, so that is also
// when it can grow, and pruning there keeps it bounded without a scheduled job. Expired rows
// another call is already deleting are skipped, not waited for.
//
// The webhook calls it after its own transaction rolled back (q is the pool), and ignores its
// error beyond logging: a note about a failure must not change the answer to Stripe.
func RecordRejectedDelivery(ctx context.Context, q db.Querier, r Rejection) error {
	switch r.Reason {
	case RejectedSignature, RejectedPayload, RejectedError:
	default:
		return ErrBadRejection
	}
	if r.Status < 400 || r.Status > 599 {
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
	if _, err := q.Exec(ctx, `
		with expired as (
		    delete from private.webhook_rejections
		    where id in (
		        select id from private.webhook_rejections
		        where received_at < now() - make_interval(secs => $4)
		        order by received_at
		        limit $5
		        for update skip locked))
		insert into private.webhook_rejections (reason, status, event_id) values ($1, $2, $3)`,
		r.Reason, r.Status, eventID, RejectionRetention.Seconds(), RejectionPruneBatch); err != nil {
		return fmt.Errorf("health: record rejected delivery: %w", db.Classify(err))
	}
	return nil
}
