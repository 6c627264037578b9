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
// discarded (out of attempts), and not yet resolved. Ops read the list, fix the cause, then
// Requeue (or Resolve).
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
		where state in ('discarded', 'cancelled') and queue = $1 and not metadata ? 'resolved_at'
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

// RequeueResult counts what Requeue did with each dead letter it was given.
type RequeueResult struct {
	// Requeued dead letters are available again.
	Requeued int `json:"requeued"`
	// Skipped dead letters already had a live or completed job of the same push (reconcile
	// queued a fresh one): they were marked resolved instead, since requeueing would collide
	// with that job's unique key and push twice.
	Skipped []int64 `json:"skipped"`
	// Failed are the dead letters that could not be requeued, with why.
	Failed []RequeueFailure `json:"failed"`
}

// RequeueFailure is one dead letter Requeue could not put back.
type RequeueFailure struct {
	JobID int64  `json:"job_id"`
	Error string `json:"error"`
}

// ResolvedRetention is how long a resolved dead letter is kept (for the record) before a queue
// run deletes it; unresolved dead letters are never deleted.
const ResolvedRetention = 30 * 24 * time.Hour

// skipReason is the resolution written on a dead letter whose push another job already covers.
const skipReason = "skipped by requeue: a live or completed job has the same unique key"

// Requeue makes the chosen dead letters available again (River's JobRetry: the job keeps its
// history and gets one more attempt) and marks their sync status pending. A dead letter whose
// push is already covered by another job with the same unique key (reconcile --apply queued
// a fresh one) is skipped and marked resolved. One dead letter's failure does not stop the
// others: each runs in its own transaction, and the returned error joins every failure.
func Requeue(ctx context.Context, pool *pgxpool.Pool, f RequeueFilter) (RequeueResult, error) {
	res := RequeueResult{Skipped: []int64{}, Failed: []RequeueFailure{}}
	if f.JobID == 0 && f.Integration == "" {
		return res, ErrRequeueUnscoped
	}
	var ids []int64
	if f.JobID != 0 {
		ids = []int64{f.JobID}
	} else {
		letters, err := DeadLetters(ctx, pool, f.Integration, f.TenantID)
		if err != nil {
			return res, err
		}
		for _, d := range letters {
			ids = append(ids, d.JobID)
		}
	}
	client, _, err := newClient(pool, RunConfig{Queue: f.Integration, Workers: river.NewWorkers()}, &counters{}, &atomic.Bool{}, true)
	if err != nil {
		return res, err
	}
	var errs []error
	for _, id := range ids {
		skipped, err := requeueOne(ctx, pool, client, id)
		switch {
		case err != nil:
			res.Failed = append(res.Failed, RequeueFailure{JobID: id, Error: err.Error()})
			errs = append(errs, err)
		case skipped:
			res.Skipped = append(res.Skipped, id)
		default:
			res.Requeued++
		}
	}
	return res, errors.Join(errs...)
}

// requeueOne requeues one dead letter in its own transaction, or marks it resolved when another
// job already covers its push.
func requeueOne(ctx context.Context, pool *pgxpool.Pool, client *river.Client[pgx.Tx], id int64) (skipped bool, err error) {
	err = db.Tx(ctx, pool, func(tx pgx.Tx) error {
		// Only an unresolved dead letter is requeued: retrying a completed job would push
		// again, and a waiting one would lose its schedule. The row lock keeps a concurrent
		// requeue of the same job from retrying it twice.
		var dead, covered bool
		err := tx.QueryRow(ctx, `
			select j.state in ('discarded', 'cancelled') and not j.metadata ? 'resolved_at',
			       exists (select 1 from private.river_job o
			               where o.unique_key = j.unique_key and o.id <> j.id
			                 and o.state not in ('discarded', 'cancelled'))
			from private.river_job j where j.id = $1 for update of j`, id).Scan(&dead, &covered)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !dead {
			return fmt.Errorf("requeue job %d: %w", id, ErrNotDeadLetter)
		}
		if err != nil {
			return fmt.Errorf("requeue job %d: %w", id, err)
		}
		if covered {
			skipped = true
			return resolve(ctx, tx, id, skipReason)
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
	return skipped, err
}

// Resolve marks a dead letter as handled without running it again (the push was done another
// way, or is no longer wanted): it leaves the dead-letter list and the health count, and is
// deleted ResolvedRetention later. note says why, for the record.
func Resolve(ctx context.Context, pool *pgxpool.Pool, id int64, note string) error {
	return db.Tx(ctx, pool, func(tx pgx.Tx) error {
		var dead bool
		err := tx.QueryRow(ctx, `select state in ('discarded', 'cancelled') and not metadata ? 'resolved_at'
			from private.river_job where id = $1 for update`, id).Scan(&dead)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !dead {
			return fmt.Errorf("resolve job %d: %w", id, ErrNotDeadLetter)
		}
		if err != nil {
			return fmt.Errorf("resolve job %d: %w", id, err)
		}
		return resolve(ctx, tx, id, note)
	})
}

func resolve(ctx context.Context, tx pgx.Tx, id int64, note string) error {
	_, err := tx.Exec(ctx, `update private.river_job
		set metadata = metadata || jsonb_build_object('resolved_at', now(), 'resolved_note', $2::text)
		where id = $1`, id, note)
	if err != nil {
		return fmt.Errorf("resolve job %d: %w", id, err)
	}
	return nil
}
