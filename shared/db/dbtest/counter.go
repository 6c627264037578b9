package dbtest

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Counts is the database work a piece of code did, as the client saw it.
type Counts struct {
	// RoundTrips is how many times the client waited for the server on a warm connection: one
	// per query outside a batch (begin and commit included), one per batch (pipelined).
	RoundTrips int
	// Describes is how many statements new to their connection were described first (one
	// more round trip each, once per connection; a batch describes its new ones together).
	Describes int
	// Statements is how many SQL statements were sent, batched or not.
	Statements int
	// SQL lists the statements in order, whitespace collapsed, to say what a count is made of.
	SQL []string
}

// Counter is a pgx tracer (db.Options.Tracer) that counts round trips and statements, so a
// test can hold a code path to a budget of database work: a count, unlike a timing, does not
// depend on how busy the machine is.
type Counter struct {
	mu sync.Mutex
	c  Counts
}

var (
	_ pgx.QueryTracer   = (*Counter)(nil)
	_ pgx.BatchTracer   = (*Counter)(nil)
	_ pgx.PrepareTracer = (*Counter)(nil)
)

// Reset starts a new count and returns the one that ends.
func (c *Counter) Reset() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.c
	c.c = Counts{}
	return out
}

// Counts returns the count so far.
func (c *Counter) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.c
	out.SQL = slices.Clone(c.c.SQL)
	return out
}

func (c *Counter) add(roundTrips, describes int, sql string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c.RoundTrips += roundTrips
	c.c.Describes += describes
	if sql != "" {
		c.c.Statements++
		c.c.SQL = append(c.c.SQL, strings.Join(strings.Fields(sql), " "))
	}
}

// TraceQueryStart counts a query sent on its own: one round trip, one statement.
func (c *Counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	c.add(1, 0, data.SQL)
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (c *Counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart counts a batch: its queries go in one pipelined round trip.
func (c *Counter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.add(1, 0, "")
	return ctx
}

// TraceBatchQuery counts one statement of a batch.
func (c *Counter) TraceBatchQuery(_ context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	c.add(0, 0, data.SQL)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (c *Counter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TracePrepareStart implements pgx.PrepareTracer.
func (c *Counter) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	return ctx
}

// TracePrepareEnd counts the describe of a statement new to its connection.
func (c *Counter) TracePrepareEnd(_ context.Context, _ *pgx.Conn, data pgx.TracePrepareEndData) {
	if !data.AlreadyPrepared {
		c.add(0, 1, "")
	}
}
