package idempotency_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/idempotency"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/web"
)

type bundle struct {
	pool   *pgxpool.Pool
	store  *idempotency.Store
	tenant uuid.UUID
	scope  string
}

func setup(t testing.TB) bundle {
	t.Helper()
	pool := dbtest.New(t)
	b := bundle{pool: pool, store: idempotency.New(pool), tenant: uuid.New()}
	b.scope = "ticket-create:" + b.tenant.String()
	_, err := pool.Exec(context.Background(), `insert into public.tenants (id, name) values ($1, 'Acme')`, b.tenant)
	require.NoError(t, err)
	return b
}

func (b bundle) options() idempotency.Options {
	return idempotency.Options{
		Required: true,
		Scope:    func(*http.Request) (string, error) { return b.scope, nil },
	}
}

// createTicket is a real handler: it inserts a ticket in the request's transaction and answers
// 201 with the new id, a Location header and a JSON body.
func (b bundle) createTicket(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		web.Error(w, r, err)
		return
	}
	var id uuid.UUID
	if err := tx.QueryRow(r.Context(), `
		insert into public.tickets (tenant_id, subject, body, category, priority)
		values ($1, 'Charged twice', $2, 'billing', 'normal') returning id`,
		b.tenant, string(body)).Scan(&id); err != nil {
		web.Error(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/tickets/"+id.String())
	web.JSON(w, http.StatusCreated, map[string]string{"id": id.String()})
}

func (b bundle) serve(t testing.TB, opts idempotency.Options, h idempotency.TxHandler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(web.Wrap(b.store.Handler(opts, h), web.Options{Logger: slog.New(slog.DiscardHandler), MaxBody: 1024}))
	t.Cleanup(srv.Close)
	return srv
}

type result struct {
	status int
	header http.Header
	body   string
}

func post(t testing.TB, srv *httptest.Server, key, body string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/tickets", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set(idempotency.DefaultHeader, key)
	}
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return result{status: res.StatusCode, header: res.Header, body: string(raw)}
}

func (b bundle) tickets(t testing.TB) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`select count(*) from public.tickets where tenant_id = $1`, b.tenant).Scan(&n))
	return n
}

func (b bundle) records(t testing.TB, key string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(),
		`select count(*) from private.idempotency_keys where scope = $1 and key = $2`, b.scope, key).Scan(&n))
	return n
}

func TestRepeatReplaysTheFirstResponseExactly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), b.createTicket)

	first := post(t, srv, "key-1", `{"subject":"a"}`)
	require.Equal(t, http.StatusCreated, first.status, first.body)
	require.Empty(t, first.header.Get(idempotency.HeaderReplayed))

	again := post(t, srv, "key-1", `{"subject":"a"}`)
	require.Equal(t, http.StatusCreated, again.status)
	require.Equal(t, "true", again.header.Get(idempotency.HeaderReplayed))
	require.Equal(t, first.body, again.body)
	require.Equal(t, first.header.Get("Location"), again.header.Get("Location"))
	require.Equal(t, first.header.Get("Content-Type"), again.header.Get("Content-Type"))
	require.NotEqual(t, first.header.Get(web.HeaderRequestID), again.header.Get(web.HeaderRequestID),
		"the request id is the replay's own, not the stored one")
	require.Equal(t, 1, b.tickets(t), "the side effect happened once")

	other := post(t, srv, "key-2", `{"subject":"a"}`)
	require.Equal(t, http.StatusCreated, other.status)
	require.NotEqual(t, first.body, other.body, "another key is another request")
	require.Equal(t, 2, b.tickets(t))
}

func TestSameKeyWithAnotherRequestIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), b.createTicket)

	require.Equal(t, http.StatusCreated, post(t, srv, "key-1", `{"subject":"a"}`).status)
	res := post(t, srv, "key-1", `{"subject":"b"}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.status)
	require.Contains(t, res.body, problem.TypeIdempotencyReused)
	require.Equal(t, 1, b.tickets(t))
}

func TestScopesKeepEqualKeysApart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	opts := b.options()
	opts.Scope = func(r *http.Request) (string, error) { return "ticket-create:" + r.URL.Query().Get("user"), nil }
	srv := b.serve(t, opts, b.createTicket)

	for _, user := range []string{"u1", "u2"} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/tickets?user="+user, strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set(idempotency.DefaultHeader, "same-key")
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusCreated, res.StatusCode)
		require.Empty(t, res.Header.Get(idempotency.HeaderReplayed))
	}
	require.Equal(t, 2, b.tickets(t))
}

func TestRepeatWhileTheFirstRunsIsAConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started, release := make(chan struct{}), make(chan struct{})
	srv := b.serve(t, b.options(), func(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
		close(started)
		<-release
		b.createTicket(w, r, tx)
	})

	done := make(chan result)
	go func() { done <- post(t, srv, "key-1", `{}`) }()
	<-started

	busy := post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusConflict, busy.status)
	require.Contains(t, busy.body, problem.TypeIdempotencyBusy)
	require.NotEmpty(t, busy.header.Get("Retry-After"))

	reused := post(t, srv, "key-1", `{"other":1}`)
	require.Equal(t, http.StatusUnprocessableEntity, reused.status, "another payload is refused even while in progress")

	close(release)
	require.Equal(t, http.StatusCreated, (<-done).status)
	require.Equal(t, "true", post(t, srv, "key-1", `{}`).header.Get(idempotency.HeaderReplayed))
	require.Equal(t, 1, b.tickets(t))
}

func TestFiftyConcurrentRequestsWithOneKeyHaveOneSideEffect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), func(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
		// Hold the claim a little so the others arrive while it is in progress.
		if _, err := tx.Exec(r.Context(), `select pg_sleep(0.05)`); err != nil {
			web.Error(w, r, err)
			return
		}
		b.createTicket(w, r, tx)
	})

	const n = 50
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]result, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i] = post(t, srv, "same-key", `{"subject":"once"}`)
		})
	}
	close(start)
	wg.Wait()

	var created, replayed, conflicts int
	var body string
	for _, res := range results {
		switch {
		case res.status == http.StatusCreated && res.header.Get(idempotency.HeaderReplayed) == "":
			created++
			body = res.body
		case res.status == http.StatusCreated:
			replayed++
		case res.status == http.StatusConflict:
			conflicts++
		default:
			t.Fatalf("unexpected answer %d: %s", res.status, res.body)
		}
	}
	require.Equal(t, 1, created, "exactly one request ran")
	require.Equal(t, n-1, replayed+conflicts)
	require.Equal(t, 1, b.tickets(t), "exactly one ticket")
	for _, res := range results {
		if res.status == http.StatusCreated {
			require.Equal(t, body, res.body, "every 201 is the same ticket")
		}
	}
}

func TestCrashedAttemptIsTakenOverAfterItsLock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), b.createTicket)
	ctx := context.Background()

	// An attempt that claimed the key and died: its lock ran out a second ago.
	_, err := b.pool.Exec(ctx, `
		insert into private.idempotency_keys (scope, key, request_hash, status, locked_until, expires_at)
		values ($1, 'key-1', '\x00', 'in_progress', now() - interval '1 second', now() + interval '1 day')`, b.scope)
	require.NoError(t, err)

	res := post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusCreated, res.status, res.body)
	require.Empty(t, res.header.Get(idempotency.HeaderReplayed))
	require.Equal(t, 1, b.tickets(t))

	// One still holding its lock is not taken over.
	_, err = b.pool.Exec(ctx, `
		insert into private.idempotency_keys (scope, key, request_hash, status, locked_until, expires_at)
		values ($1, 'key-2', $2, 'in_progress', now() + interval '20 seconds', now() + interval '1 day')`,
		b.scope, idempotency.HashRequest(http.MethodPost, "/v1/tickets", "", []byte(`{}`)))
	require.NoError(t, err)
	busy := post(t, srv, "key-2", `{}`)
	require.Equal(t, http.StatusConflict, busy.status)
	retryAfter, err := strconv.Atoi(busy.header.Get("Retry-After"))
	require.NoError(t, err)
	require.Greater(t, retryAfter, 1, "retry when the lock runs out, not at once")
	require.LessOrEqual(t, retryAfter, 20)
}

func TestExpiredResponseIsNotReplayedButRunsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), b.createTicket)

	first := post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusCreated, first.status)
	_, err := b.pool.Exec(context.Background(),
		`update private.idempotency_keys set expires_at = now() - interval '1 second' where scope = $1`, b.scope)
	require.NoError(t, err)

	again := post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusCreated, again.status)
	require.Empty(t, again.header.Get(idempotency.HeaderReplayed))
	require.NotEqual(t, first.body, again.body)
	require.Equal(t, 2, b.tickets(t))

	// The new response is the one replayed from now on.
	require.Equal(t, again.body, post(t, srv, "key-1", `{}`).body)
}

func TestExpiryAndLockFollowTheOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	opts := b.options()
	opts.Expiry = time.Hour
	opts.InProgressTTL = 10 * time.Second
	var lockSecs float64
	srv := b.serve(t, opts, func(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
		// locked_until and created_at come from the same claim statement.
		if err := b.pool.QueryRow(r.Context(), `select extract(epoch from locked_until - created_at)
			from private.idempotency_keys where scope = $1`, b.scope).Scan(&lockSecs); err != nil {
			web.Error(w, r, err)
			return
		}
		b.createTicket(w, r, tx)
	})
	require.Equal(t, http.StatusCreated, post(t, srv, "key-1", `{}`).status)
	require.Equal(t, 10.0, lockSecs, "claims hold for InProgressTTL")

	var expirySecs float64
	require.NoError(t, b.pool.QueryRow(context.Background(), `select extract(epoch from expires_at - created_at)
		from private.idempotency_keys where scope = $1`, b.scope).Scan(&expirySecs))
	require.Equal(t, time.Hour.Seconds(), expirySecs, "responses are kept for Expiry")
}

func TestFailedAttemptRollsBackAndReleasesTheKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fail := true
	srv := b.serve(t, b.options(), func(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
		if _, err := tx.Exec(r.Context(), `
			insert into public.tickets (tenant_id, subject, body, category, priority)
			values ($1, 'half', 'half', 'other', 'low')`, b.tenant); err != nil {
			web.Error(w, r, err)
			return
		}
		if fail {
			web.Error(w, r, problem.Validation("subject is required", problem.FieldError{Field: "subject", Message: "is required"}))
			return
		}
		b.createTicket(w, r, tx)
	})

	res := post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusUnprocessableEntity, res.status)
	require.Contains(t, res.body, `"field":"subject"`, "the handler's own answer reaches the client")
	require.Zero(t, b.tickets(t), "its writes rolled back")
	require.Zero(t, b.records(t, "key-1"), "the key is free again")

	fail = false
	res = post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusCreated, res.status)
	require.Empty(t, res.header.Get(idempotency.HeaderReplayed))
	require.Equal(t, 2, b.tickets(t), "the retry's two inserts commit")
}

func TestPanickingHandlerReleasesTheKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), func(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
		b.createTicket(w, r, tx)
		panic("boom")
	})
	res := post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusInternalServerError, res.status)
	require.Zero(t, b.tickets(t))
	require.Zero(t, b.records(t, "key-1"))
}

func TestAttemptThatLostItsClaimRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), func(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
		// This attempt overran its lock and a later one took over (a new lock deadline).
		if _, err := b.pool.Exec(r.Context(), `
			update private.idempotency_keys set locked_until = now() + interval '1 minute'
			where scope = $1`, b.scope); err != nil {
			web.Error(w, r, err)
			return
		}
		b.createTicket(w, r, tx)
	})
	res := post(t, srv, "key-1", `{}`)
	require.Equal(t, http.StatusConflict, res.status)
	require.Zero(t, b.tickets(t), "the late attempt's side effects do not commit")
	require.Equal(t, 1, b.records(t, "key-1"), "the later attempt's claim is left alone")
}

func TestKeysAreBoundedPrintableASCII(t *testing.T) {
	t.Parallel()
	b := setup(t)
	required := b.serve(t, b.options(), b.createTicket)
	optional := b.options()
	optional.Required = false
	notRequired := b.serve(t, optional, b.createTicket)

	cases := []struct {
		name       string
		srv        *httptest.Server
		key        string
		wantStatus int
	}{
		{name: "missing where required", srv: required, key: "", wantStatus: 400},
		{name: "missing where optional runs unprotected", srv: notRequired, key: "", wantStatus: 201},
		{name: "a uuid", srv: required, key: uuid.NewString(), wantStatus: 201},
		{name: "255 characters", srv: required, key: strings.Repeat("k", 255), wantStatus: 201},
		{name: "256 characters", srv: required, key: strings.Repeat("k", 256), wantStatus: 400},
		{name: "control character", srv: required, key: "a\tb", wantStatus: 400},
		{name: "non-ASCII", srv: notRequired, key: "clé", wantStatus: 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := post(t, tc.srv, tc.key, `{}`)
			require.Equal(t, tc.wantStatus, res.status, res.body)
			if tc.wantStatus == 400 {
				require.Contains(t, res.body, problem.TypeIdempotencyKey)
				require.Contains(t, res.body, idempotency.DefaultHeader, "the message names the header")
			}
		})
	}
}

func TestUnprotectedRequestStillRollsBackOnFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	opts := b.options()
	opts.Required = false
	srv := b.serve(t, opts, func(w http.ResponseWriter, r *http.Request, tx pgx.Tx) {
		b.createTicket(httptest.NewRecorder(), r, tx)
		web.Error(w, r, problem.BadRequest("no"))
	})
	require.Equal(t, http.StatusBadRequest, post(t, srv, "", `{}`).status)
	require.Zero(t, b.tickets(t))
}

func TestOversizedBodyIsRefusedBeforeClaiming(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := b.serve(t, b.options(), b.createTicket)
	req, err := http.NewRequest(http.MethodPost, srv.URL, io.MultiReader(strings.NewReader(strings.Repeat("x", 4096))))
	require.NoError(t, err)
	req.ContentLength = -1 // chunked: only reading finds out
	req.Header.Set(idempotency.DefaultHeader, "key-1")
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	require.Zero(t, b.records(t, "key-1"))
}

func TestScopeErrorIsAServerError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	opts := b.options()
	opts.Scope = func(*http.Request) (string, error) { return "", fmt.Errorf("no tenant scope") }
	srv := b.serve(t, opts, b.createTicket)
	require.Equal(t, http.StatusInternalServerError, post(t, srv, "key-1", `{}`).status)
	require.Zero(t, b.tickets(t))

	require.PanicsWithValue(t, idempotency.ErrNoScope, func() {
		b.store.Handler(idempotency.Options{}, b.createTicket)
	}, "a route without a scope fails at wiring time")
}

func TestExpiredRecordsAreDeletedWhenKeysAreClaimed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.pool.Exec(ctx, `
		insert into private.idempotency_keys (scope, key, request_hash, status, response_status, locked_until, expires_at)
		select 'old', 'k' || g, '\x00', 'completed', 201, null, now() - interval '1 hour'
		from generate_series(1, 3) g`)
	require.NoError(t, err)
	// Neither a live completed record nor a live lock is touched.
	_, err = b.pool.Exec(ctx, `
		insert into private.idempotency_keys (scope, key, request_hash, status, response_status, locked_until, expires_at)
		values ('old', 'live', '\x00', 'completed', 201, null, now() + interval '1 hour'),
		       ('old', 'running', '\x00', 'in_progress', null, now() + interval '1 minute', now() + interval '1 hour')`)
	require.NoError(t, err)

	srv := b.serve(t, b.options(), b.createTicket)
	require.Equal(t, http.StatusCreated, post(t, srv, "key-1", `{}`).status)

	rows, err := b.pool.Query(ctx, `select key from private.idempotency_keys where scope = 'old' order by key`)
	require.NoError(t, err)
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"live", "running"}, left)
}

func TestDoDeduplicatesByEventID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	hash := idempotency.HashRequest("stripe", "evt_1", "", []byte(`{"id":"evt_1"}`))
	calls := 0
	fn := func(tx pgx.Tx) (idempotency.Response, error) {
		calls++
		if _, err := tx.Exec(ctx, `
			insert into public.tickets (tenant_id, subject, body, category, priority, source, source_ref)
			values ($1, 'Payment failed', 'in_1', 'billing', 'high', 'payment_failure', 'in_1')`, b.tenant); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: http.StatusOK, Body: []byte(`{"received":true}`)}, nil
	}

	resp, replayed, err := b.store.Do(ctx, "stripe-webhook", "evt_1", hash, fn)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, `{"received":true}`, string(resp.Body))

	resp, replayed, err = b.store.Do(ctx, "stripe-webhook", "evt_1", hash, fn)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, http.StatusOK, resp.Status)
	require.Equal(t, `{"received":true}`, string(resp.Body))
	require.Equal(t, 1, calls)
	require.Equal(t, 1, b.tickets(t))

	_, _, err = b.store.Do(ctx, "stripe-webhook", "evt_1", []byte("other"), fn)
	require.ErrorIs(t, err, idempotency.ErrKeyReused)

	_, _, err = b.store.Do(ctx, "stripe-webhook", "", hash, fn)
	require.ErrorIs(t, err, idempotency.ErrInvalidKey)

	// An error rolls back and frees the key for the retry.
	boom := fmt.Errorf("upstream said no")
	_, _, err = b.store.Do(ctx, "stripe-webhook", "evt_2", hash, func(tx pgx.Tx) (idempotency.Response, error) {
		return idempotency.Response{}, boom
	})
	require.ErrorIs(t, err, boom)
	var n int
	require.NoError(t, b.pool.QueryRow(ctx, `select count(*) from private.idempotency_keys where key = 'evt_2'`).Scan(&n))
	require.Zero(t, n)
}

// TestAClaimReadsNoOtherStoredKeys pins the cost of a claim to its own key, not to the
// number of keys stored (24 hours of them in production). The claim runs on generic plans,
// made at its first call in a session and kept for the session's life (a pooled backend's),
// so this session makes them on an empty table, as a backend does after a deploy; then the
// table grows and the next claim must still read no row by a sequential scan. The clean-up
// form of migration idempotency_claim_generic_plan kept a sequential scan of the whole table
// in that case, and its claims grew 0.4 → 1.1 ms over 13,500 tickets on make dev.
func TestAClaimReadsNoOtherStoredKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.pool.Config().ConnConfig.ConnString())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(ctx) })
	claim := func(tx interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}, key string) {
		t.Helper()
		_, err := tx.Exec(ctx, `select * from private.idempotency_claim($1, $2, '\x00', 30000000, 86400000000, 5)`, b.scope, key)
		require.NoError(t, err)
	}
	claim(conn, "first")
	_, err = b.pool.Exec(ctx, `
		insert into private.idempotency_keys (scope, key, request_hash, status, response_status, locked_until, expires_at)
		select 'other', 'k' || g, '\x00', 'completed', 201, null, now() + interval '1 hour'
		from generate_series(1, 5000) g`)
	require.NoError(t, err)

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	claim(tx, "second")
	var seqRead int64
	require.NoError(t, tx.QueryRow(ctx, `select coalesce(seq_tup_read, 0) from pg_stat_xact_user_tables
		where relid = 'private.idempotency_keys'::regclass`).Scan(&seqRead))
	require.Zero(t, seqRead, "the claim read stored keys by a sequential scan")
}
