package db

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// BatchTx runs b as one transaction in a single round trip: begin, b's statements in order,
// commit, pipelined on one connection of pool. Each statement's result is read by the callback
// its queued query was given (QueryRow, Query, Exec), in order, before BatchTx returns.
//
// It is for reads whose statements do not depend on each other's answers, such as a portal
// read (set the role and claims, read, read): the request waits on the database once instead
// of once per statement. A failing statement fails the batch: the statements after it do not
// run and the transaction is rolled back. A failing callback fails the batch too, but the
// server has already run the rest by then (the batch was sent whole), which is why this is
// for reads. Like Tx, the error says whether the database was unavailable.
func BatchTx(ctx context.Context, pool Acquirer, b *pgx.Batch) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return Classify(fmt.Errorf("acquire connection: %w", err))
	}
	defer conn.Release()
	all := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, b.Len()+3)}
	all.Queue("begin")
	queueTimeout(all, conn.Conn())
	all.QueuedQueries = append(all.QueuedQueries, b.QueuedQueries...)
	if err := sendWithCommit(ctx, conn, all); err != nil {
		return Classify(err)
	}
	return nil
}
