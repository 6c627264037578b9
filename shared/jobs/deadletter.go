package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/portal-functions/portal-functions/shared/db"
)

// DeadLetter is a job that will not run again by itself: cancelled (a permanent error) or
// discarded (out of attempts). Ops read the list, fix the cause, then Requeue.
type DeadLetter struct {
	JobID       int64     `json:"job_id"`
	Kind        string    `json:"kind"`
	Integration string    `json:"integration"`
	State       string    `json:"state"` // cancelled or discarded
	Subject     string    `json:"subject"`
	TenantID    uuid.UUID `json:"tenant_id"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error"`
	FinalizedAt time.Time `json:"finalized_at"`
}

// DeadLetters lists the dead letters of an integration (a queue name), newest first, for one
// tenant when tenant is not nil.
func DeadLetters(ctx context.Context, q db.Querier, integration string, tenant *uuid.UUID) ([]DeadLetter, error) {
	rows, err := q.Query(ctx, `
		select id, kind, queue, state::text, args, attempt, coalesce(errors[array_length(errors, 1)]->>'error', ''), finalized_at
		from private.river_job
		where state in ('discarded', 'cancelled') and queue = $1
		  and ($2::uuid is null or args->>'tenant_id' = $2::text)
		order by finalized_at desc, id desc
		limit 1000`, integration, tenant)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var (
			d    DeadLetter
			args json.RawMessage
		)
		if err := rows.Scan(&d.JobID, &d.Kind, &d.Integration, &d.State, &args, &d.Attempts, &d.LastError, &d.FinalizedAt); err != nil {
			return nil, fmt.Errorf("scan dead letter: %w", err)
		}
		d.TenantID, d.Subject = subjectOf(d.Kind, args)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

// RequeueFilter picks the dead letters to run again: one job (JobID), or all of one
// integration's, optionally of one tenant. Integration is required unless JobID is set.
type RequeueFilter struct {
	JobID       int64
	Integration string
	TenantID    *uuid.UUID
}

// Requeue makes the chosen dead letters available again (River's JobRetry: the job keeps its
// history and gets one more attempt), marks their sync status pending, and returns how many
// it requeued.
func Requeue(ctx context.Context, pool *pgxpool.Pool, f RequeueFilter) (int, error) {
	if f.JobID == 0 && f.Integration == "" {
		return 0, ErrRequeueUnscoped
	}
	var ids []int64
	if f.JobID != 0 {
		ids = []int64{f.JobID}
	} else {
		letters, err := DeadLetters(ctx, pool, f.Integration, f.TenantID)
		if err != nil {
			return 0, err
		}
		for _, d := range letters {
			ids = append(ids, d.JobID)
		}
	}
	client, _, err := newClient(pool, RunConfig{Queue: f.Integration, Workers: river.NewWorkers()}, &counters{}, &atomic.Bool{}, true)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		err := db.Tx(ctx, pool, func(tx pgx.Tx) error {
			// Only a dead letter is requeued: retrying a completed job would push again, and a
			// waiting one would lose its schedule. The row lock keeps a running requeue of the
			// same job from retrying it twice.
			var dead bool
			err := tx.QueryRow(ctx, `select state in ('discarded', 'cancelled') from private.river_job
				where id = $1 for update`, id).Scan(&dead)
			if errors.Is(err, pgx.ErrNoRows) || err == nil && !dead {
				return fmt.Errorf("requeue job %d: %w", id, ErrNotDeadLetter)
			}
			if err != nil {
				return fmt.Errorf("requeue job %d: %w", id, err)
			}
			job, err := client.JobRetryTx(ctx, tx, id)
			if err != nil {
				return fmt.Errorf("requeue job %d: %w", id, err)
			}
			tenantID, subject := subjectOf(job.Kind, job.EncodedArgs)
			if tenantID == uuid.Nil {
				return nil
			}
			return markPending(ctx, tx, job.Queue, subject, tenantID)
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
