package function_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/portal"
)

// Past the knee clients give up, and every request they abandon is cancelled while its query
// runs. pgx closes a connection whose query is cancelled mid-flight, so if a function's
// database work ended with its client, overload would turn into reconnect churn (a backend, or
// a TLS and SCRAM login at the pooler, for each abandoned request). N portal reads, built as
// the dev server and Lambda build them, are held inside their query (a lock on the tickets
// table), their clients hang up, and then the lock goes: the reads finish, and the pool still
// holds the N connections it opened, which serve the next N reads without a new one.
func TestAbandonedRequestsKeepTheirPooledConnections(t *testing.T) {
	t.Parallel()
	const n = 6
	ctx := context.Background()
	url := dbtest.NewURL(t)
	pool, err := db.Open(ctx, url, db.Options{MaxConns: n, ApplicationName: "abandoned"})
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, demo.Seed(ctx, pool))
	env := map[string]string{"SUPABASE_URL": demo.SupabaseURL, "SUPABASE_JWT_SECRET": demo.JWTSecret}
	h, err := portal.ReadFunction.Handler(ctx, function.Deps{Name: "portal-read", Pool: pool, Logger: slog.New(slog.DiscardHandler),
		Lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	require.NoError(t, err)
	// noticed counts the requests whose client's hang-up the server saw while they ran.
	var noticed atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-r.Context().Done():
				noticed.Add(1)
			case <-done:
			}
		}()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	token, err := demo.Token(demo.JWTSecret, demo.SupabaseURL, time.Minute)
	require.NoError(t, err)

	// reads sends n reads at once while the tickets table is locked, waits until all n wait
	// on the lock inside their query, calls during, releases the lock and returns what each
	// client got (a status, or its error).
	reads := func(reqCtx context.Context, during func()) []any {
		locker, err := pgx.Connect(ctx, url)
		require.NoError(t, err)
		defer locker.Close(ctx)
		tx, err := locker.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `lock table public.tickets in access exclusive mode`)
		require.NoError(t, err)
		got := make(chan any, n)
		for range n {
			go func() {
				req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, srv.URL+"/v1/tickets", nil)
				require.NoError(t, err)
				req.Header.Set("Authorization", "Bearer "+token)
				res, err := srv.Client().Do(req)
				if err != nil {
					got <- err
					return
				}
				res.Body.Close()
				got <- res.StatusCode
			}()
		}
		require.Eventually(t, func() bool { return waitingOnLock(t, url) == n }, 10*time.Second, 10*time.Millisecond,
			"every read waits inside its query")
		during()
		require.NoError(t, tx.Rollback(ctx))
		out := make([]any, 0, n)
		for range n {
			out = append(out, <-got)
		}
		return out
	}

	for _, got := range reads(ctx, func() {}) {
		require.Equal(t, http.StatusOK, got)
	}
	require.Equal(t, int64(n), pool.Stat().NewConnsCount(), "n reads at once hold n connections")

	abandoned, hangUp := context.WithCancel(ctx)
	for _, got := range reads(abandoned, func() {
		hangUp()
		require.Eventually(t, func() bool { return noticed.Load() == n }, 10*time.Second, 10*time.Millisecond,
			"the server sees every client hang up while its read waits")
	}) {
		require.ErrorIs(t, got.(error), context.Canceled, "the client gave up before the answer")
	}
	require.Eventually(t, func() bool { return pool.Stat().AcquiredConns() == 0 }, 10*time.Second, 10*time.Millisecond,
		"the abandoned reads finish once the lock goes")
	require.Equal(t, int32(n), pool.Stat().TotalConns(), "no abandoned read cost its connection")

	for _, got := range reads(ctx, func() {}) {
		require.Equal(t, http.StatusOK, got)
	}
	require.Equal(t, int64(n), pool.Stat().NewConnsCount(), "the next n reads need no new connection")
}

// waitingOnLock counts the pool's backends (application_name "abandoned") that wait on a
// lock.
func waitingOnLock(t *testing.T, url string) int {
	t.Helper()
	return dbtest.Count(t, url, `select count(*) from pg_stat_activity
		where datname = current_database() and application_name = 'abandoned' and wait_event_type = 'Lock'`)
}
