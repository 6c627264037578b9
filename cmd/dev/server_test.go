package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/providerfake"
	"github.com/portal-functions/portal-functions/shared/sam"
)

type bundle struct {
	base    string
	project *sam.Project
	token   string
	dbURL   string
	stop    func() error
}

// setup runs the dev server as `make dev` does (workers and stand-ins included) on a free
// port against a throwaway database; stop cancels it as Ctrl-C does and returns run's error.
func setup(t *testing.T) bundle {
	t.Helper()
	return setupWorkers(t, true)
}

// setupWorkers is setup with the queue workers on or off (`make dev -no-workers`): without
// them every push stays pending, as when the workers lag behind.
func setupWorkers(t *testing.T, workers bool) bundle {
	t.Helper()
	p, err := sam.Open(".")
	require.NoError(t, err)
	dbURL := dbtest.NewURL(t)
	base, stop := serve(t, options{DatabaseURL: dbURL, Workers: workers})
	b := bundle{base: base, project: p, dbURL: dbURL, stop: stop}

	// The demo owner's token, issued by this run's Supabase stand-in (its URL is the issuer).
	status, body := b.do(t, http.MethodGet, controlPrefix, "")
	require.Equal(t, http.StatusOK, status, string(body))
	var states []providerfake.State
	require.NoError(t, json.Unmarshal(body, &states))
	supabaseURL := ""
	for _, st := range states {
		if st.Provider == "supabase" {
			supabaseURL = st.URL
		}
	}
	require.NotEmpty(t, supabaseURL, "%s", body)
	b.token, err = demo.Token(p.Env["PortalReadFunction"]["SUPABASE_JWT_SECRET"], supabaseURL, time.Hour)
	require.NoError(t, err)
	return b
}

// serve runs the dev server with o on a free port, its stand-ins on free ones too (the test
// runs beside a `make dev`), until stop, which cancels it as Ctrl-C does and returns run's
// error (the test's cleanup stops it otherwise).
func serve(t *testing.T, o options) (base string, stop func() error) {
	t.Helper()
	o.Addr, o.EphemeralStandins, o.Out = "127.0.0.1:0", true, io.Discard
	ready := make(chan string, 1)
	o.Ready = func(base string) { ready <- base }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), o) }()
	select {
	case base = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("the dev server did not start: %v", err)
	}
	stopped := false
	stop = func() error {
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})
	return base, stop
}

func (b bundle) do(t *testing.T, method, path, token string) (int, []byte) {
	t.Helper()
	return b.send(t, method, path, "application/json", `{}`, token)
}

// make dev serves every HTTP route of template.yaml from the function's own handler (each
// refuses an unauthenticated call itself: 400 for a webhook without signature, 401 for the
// portal routes, never the mux's 404 or 405), answers the demo owner from the seeded
// database, switches a stand-in, and stops cleanly when cancelled.
func TestDevServesTheTemplateRoutesAndStopsCleanly(t *testing.T) {
	t.Parallel()
	b := setup(t)

	routes := b.project.Template.Routes()
	require.NotEmpty(t, routes)
	for _, r := range routes {
		path := strings.ReplaceAll(r.Path, "{id}", demo.TicketID.String())
		status, body := b.do(t, r.Method, path, "")
		if r.Path == "/v1/health" {
			// The one route without a token: the uptime probe's, on the dev database.
			require.Equal(t, http.StatusOK, status, "%s %s -> %s: %s", r.Method, path, r.Function, body)
			continue
		}
		require.Contains(t, []int{http.StatusBadRequest, http.StatusUnauthorized}, status, "%s %s -> %s: %s", r.Method, path, r.Function, body)
		require.Contains(t, string(body), `"request_id"`, "a problem from the function's own skeleton")
	}

	status, body := b.do(t, http.MethodGet, "/v1/account", b.token)
	require.Equal(t, http.StatusOK, status, string(body))
	var account struct {
		Tenant struct {
			ID string `json:"id"`
		} `json:"tenant"`
	}
	require.NoError(t, json.Unmarshal(body, &account))
	require.Equal(t, demo.TenantID.String(), account.Tenant.ID, "the seeded demo tenant")

	status, body = b.do(t, http.MethodGet, "/v1/tickets/"+demo.TicketID.String(), b.token)
	require.Equal(t, http.StatusOK, status, string(body))

	// Every provider is a stand-in (on its own free port): switch one.
	status, body = b.do(t, http.MethodGet, controlPrefix, "")
	require.Equal(t, http.StatusOK, status, string(body))
	var states []providerfake.State
	require.NoError(t, json.Unmarshal(body, &states))
	require.Len(t, states, 4, "stripe, hubspot, zendesk, supabase")
	name := ""
	for _, st := range states {
		if st.Standin && name == "" {
			name = st.Provider
		}
	}
	require.NotEmpty(t, name, "no stand-in started: %s", body)
	status, body = b.do(t, http.MethodPost, controlPrefix+"/"+name+"/rate-limited", "")
	require.Equal(t, http.StatusOK, status, string(body))
	require.NoError(t, json.Unmarshal(body, &states))
	for _, st := range states {
		if st.Provider == name {
			require.Equal(t, "rate-limited", st.Mode)
		}
	}

	// The HubSpot stand-in's associations (contact to company) are listed for the developer.
	status, body = b.do(t, http.MethodGet, controlPrefix+"/hubspot/associations", "")
	require.Equal(t, http.StatusOK, status, string(body))
	var assocs []map[string]string
	require.NoError(t, json.Unmarshal(body, &assocs), "%s", body)

	require.NoError(t, b.stop(), "Ctrl-C ends the run without an error")
	_, err := http.Get(b.base + "/v1/account")
	require.Error(t, err, "nothing listens after the stop")
}

// The dev server talks to a Postgres on the same machine in plain text, as its default URL
// and env.json do, when the URL does not say otherwise: a URL of a loopback address without
// sslmode gets sslmode=disable (the side-by-side harness passes one), and any URL that names
// an sslmode, or another host, keeps what it says.
func TestDevDatabaseOnLoopbackIsPlainUnlessTheURLSaysOtherwise(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://postgres@127.0.0.1:5432/bench_project":                "postgres://postgres@127.0.0.1:5432/bench_project?sslmode=disable",
		"postgresql://u:p@localhost/pf_dev?application_name=x":            "postgresql://u:p@localhost/pf_dev?application_name=x&sslmode=disable",
		"postgres://postgres@[::1]:5432/pf_dev":                           "postgres://postgres@[::1]:5432/pf_dev?sslmode=disable",
		"postgres://postgres@127.0.0.1:5432/pf_dev?sslmode=require":       "postgres://postgres@127.0.0.1:5432/pf_dev?sslmode=require",
		"postgres://postgres.ref:pw@aws-0-eu.pooler.supabase.com:6543/db": "postgres://postgres.ref:pw@aws-0-eu.pooler.supabase.com:6543/db",
		"host=127.0.0.1 user=postgres dbname=pf_dev":                      "host=127.0.0.1 user=postgres dbname=pf_dev",
		DefaultDatabaseURL: DefaultDatabaseURL,
	} {
		require.Equal(t, want, plainOnLoopback(in), in)
	}
}

// make dev on a database that has nothing yet (a first `make dev`, or one after
// `supabase db reset`) applies every migration and then serves from the same connections:
// the demo tickets are queued through River's own insert on them, and a delivery is applied
// through the webhook's functions. A migration that changes what a connection has cached (a
// function an index predicate inlines, say) fails here, where the tests' databases, copied
// from a migrated template, never apply a migration on a connection that then serves.
func TestTheDevServerStartsOnAnEmptyDatabase(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.NewEmptyURL(t)
	_, stop := serve(t, options{DatabaseURL: dbURL, DBConns: 1})
	require.NoError(t, stop())

	conn, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var queued int
	require.NoError(t, conn.QueryRow(context.Background(), `select count(*) from private.river_job
		where kind = 'helpdesk_ticket'`).Scan(&queued))
	require.Equal(t, len(demo.Tickets), queued, "every demo ticket queued for the helpdesk")
}

// make dev keeps every connection of its pool open from the start, as a long-running server
// that takes bursts should: a fresh server's first burst had to start a dozen backends at once
// (each reading the catalog and compiling the webhook's PL/pgSQL), and its limiter refused
// deliveries at 200/s (db.Options.MinConns). The connections open in the background, so this
// waits for them, without sending a request.
func TestTheDevServerKeepsItsPoolOpenFromTheStart(t *testing.T) {
	t.Parallel()
	dbURL := dbtest.NewURL(t)
	serve(t, options{DatabaseURL: dbURL, DBConns: 3, WarmPool: true})

	conn, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	open := func() (n int) {
		require.NoError(t, conn.QueryRow(context.Background(), `select count(*) from pg_stat_activity
			where datname = current_database() and application_name = 'make-dev'`).Scan(&n))
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for open() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, 3, open(), "all of -db-conns open before any request")
}
