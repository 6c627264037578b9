package ticket_test

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/idempotency"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/web"
)

// createRoundTrips is what POST /v1/tickets waits on the database, warm, for a ticket with an
// attachment: the membership, the idempotency key's claim (which reads a live record in the
// same call), then the transaction on a db.Pipe: begin; the ticket (its created_at is in the
// answer); and the commit, which carries the attachments, River's insert with the sync status
// and the key's completion. It was 10 before issue 13's round (a look-up and a claim, and
// every statement of the transaction waited on its own). A ceiling, so a new wait shows up
// here first.
const createRoundTrips = 5

// Creating a ticket costs at most createRoundTrips waits on the database.
func TestCreateRoundTrips(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	counter := &dbtest.Counter{}
	pool, err := db.Open(ctx, b.env.Pool.Config().ConnString(), db.Options{MaxConns: 1, ApplicationName: "roundtrips", Tracer: counter})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	h := web.Wrap(ticket.NewHandler(ticket.Deps{Pool: pool, Verifier: b.env.Issuer.Verifier(t), Idempotency: idempotency.New(pool),
		Jobs: ins, Uploads: b.env.Signer}), web.Options{Logger: slog.New(slog.DiscardHandler)})
	env := *b.env
	env.Handler = h
	body := ticket.CreateRequest{Subject: "Round trips", Body: "Counting.", Category: "technical", Priority: "normal",
		Attachments: []ticket.AttachmentRequest{{Name: "trace.txt", Size: 1024, ContentType: "text/plain"}}}
	for i := range 3 {
		require.Equal(t, http.StatusCreated, env.Post(t, b.a, "warm-"+strconv.Itoa(i), body).Code)
	}
	counter.Reset()
	require.Equal(t, http.StatusCreated, env.Post(t, b.a, "counted", body).Code)
	got := counter.Reset()
	require.LessOrEqual(t, got.RoundTrips, createRoundTrips, "%q", got.SQL)
	require.Zero(t, got.Describes)
}
