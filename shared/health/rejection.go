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
// it. The webhook calls it after its own transaction rolled back (q is the pool), and ignores
// its error beyond logging: a note about a failure must not change the answer to Stripe.
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
	if _, err := q.Exec(ctx, `insert into private.webhook_rejections (reason, status, event_id) values ($1, $2, $3)`,
		r.Reason, r.Status, eventID); err != nil {
		return fmt.Errorf("health: record rejected delivery: %w", db.Classify(err))
	}
	return nil
}

// PruneRejections deletes rejection notes older than keep (they only feed the health window).
func PruneRejections(ctx context.Context, q db.Querier, keep time.Duration) (int64, error) {
	tag, err := q.Exec(ctx, `delete from private.webhook_rejections where received_at < now() - $1::interval`,
		fmt.Sprintf("%d seconds", int64(keep.Seconds())))
	if err != nil {
		return 0, fmt.Errorf("health: prune rejections: %w", db.Classify(err))
	}
	return tag.RowsAffected(), nil
}
