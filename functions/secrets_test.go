package functions_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/rie"
	"github.com/portal-functions/portal-functions/shared/sam"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

// failure is one way the world around a function goes wrong.
type failure struct {
	name string
	// env adjusts the function's environment (its secrets already set) for this failure.
	env func(t *testing.T, env map[string]string, secrets map[string]string)
}

// failures drives every function through what breaks in production: providers refusing our
// credentials (so jobs dead-letter and alert, and the alert post itself fails), providers down,
// providers that hang past our timeouts, and the database unreachable.
var failures = []failure{
	{name: "providers refuse", env: func(t *testing.T, env, secrets map[string]string) {
		if _, ok := env["HUBSPOT_BASE_URL"]; ok {
			env["HUBSPOT_BASE_URL"] = hubspotfake.NewTest(t).URL() // expects another token: 401
		}
		if _, ok := env["ZENDESK_BASE_URL"]; ok {
			env["ZENDESK_BASE_URL"] = zendeskfake.NewTest(t, "someone@example.test", "another-token").URL()
		}
		if _, ok := env["STRIPE_API_BASE"]; ok {
			env["STRIPE_API_BASE"] = stripeRefusing(t)
		}
	}},
	{name: "providers down", env: func(t *testing.T, env, _ map[string]string) {
		closed := closedURL(t)
		for _, k := range []string{"HUBSPOT_BASE_URL", "ZENDESK_BASE_URL", "STRIPE_API_BASE", "SUPABASE_URL"} {
			if _, ok := env[k]; ok {
				env[k] = closed
			}
		}
	}},
	{name: "providers hang", env: func(t *testing.T, env, _ map[string]string) {
		hang := hangingURL(t)
		for _, k := range []string{"ZENDESK_BASE_URL", "SUPABASE_URL"} {
			if _, ok := env[k]; ok {
				env[k] = hang
			}
		}
		env["ZENDESK_TIMEOUT"], env["STORAGE_TIMEOUT"] = "300ms", "300ms"
	}},
	{name: "database down", env: func(t *testing.T, env, secrets map[string]string) {
		env["DATABASE_URL"] = "postgres://postgres:" + secrets["DATABASE_URL"] + "@" + strings.TrimPrefix(closedURL(t), "http://") + "/postgres?sslmode=disable&connect_timeout=2"
	}},
}

// No log line of any function shows a secret, whatever fails. Every NoEcho parameter of
// template.yaml gets a distinctive value; each function runs as Lambda runs it (its bootstrap
// under the Runtime Interface Emulator, everything it prints captured) through every failure
// above, with its sample events and with bad input (a forged signature or token, a junk body).
func TestNoSecretInAnyLogLine(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range b.Template.Functions {
		for _, fail := range failures {
			t.Run(f.LogicalID+"/"+fail.name, func(t *testing.T) {
				t.Parallel()
				bin := binaries(t, b)
				env, secrets := secretEnv(t, b, f)
				fail.env(t, env, secrets)
				em, err := rie.Start(context.Background(), rie.Options{
					RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: filepath.Join(bin, filepath.Base(f.Folder())), Env: env,
					FunctionName: f.LogicalID, Timeout: 20 * time.Second, MemoryMB: f.MemorySize,
				})
				require.NoError(t, err)
				signer := demo.Signer{WebhookSecret: env["STRIPE_WEBHOOK_SECRET"], JWTSecret: env["SUPABASE_JWT_SECRET"],
					SupabaseURL: env["SUPABASE_URL"], TokenTTL: 10 * time.Minute}
				for _, payload := range sweepPayloads(t, b, f, signer) {
					_, err := em.Invoke(context.Background(), payload)
					require.NoError(t, err, em.Output())
				}
				em.Stop()
				out := em.Output()
				require.NotEmpty(t, out)
				_, pushes := env["HUBSPOT_BASE_URL"]
				if _, zd := env["ZENDESK_BASE_URL"]; zd {
					pushes = true
				}
				if _, alerts := secrets["ALERT_WEBHOOK_URL"]; alerts && pushes && fail.name == "providers refuse" {
					// The path that once logged the webhook's URL: a dead letter's alert post failing.
					require.Contains(t, out, `"msg":"alert webhook"`, "the sweep must reach the failing alert post")
				}
				telemetrytest.RequireNoSecret(t, out, secrets)
			})
		}
	}
}

// secretEnv is the function's local environment with every NoEcho-backed variable set to a
// distinctive value (usable: the database accepts the password, the stand-ins the tokens), the
// alert webhook a URL whose path is its secret and which refuses connections, and jobs waiting
// on both queues so the pushers have work. It returns the environment and the secrets' values.
func secretEnv(t *testing.T, b *sam.Project, f sam.Function) (env, secrets map[string]string) {
	t.Helper()
	env = b.Env.For(f)
	dbURL := dbtest.NewURL(t)
	seedSweep(t, dbURL)
	secrets = map[string]string{}
	for name, param := range b.Template.SecretEnv(f) {
		secrets[name] = "zz" + param + "-" + randomHex(t, 16)
	}
	for name, secret := range secrets {
		switch name {
		case "DATABASE_URL":
			u, err := url.Parse(dbURL)
			require.NoError(t, err)
			u.User = url.UserPassword("postgres", secret) // trust auth: any password connects
			env[name] = u.String()
		case "ALERT_WEBHOOK_URL":
			env[name] = closedURL(t) + "/services/T00000000/B00000000/" + secret
		case "STRIPE_API_KEY":
			secrets[name] = "sk_test_" + secret
			env[name] = secrets[name]
		default:
			env[name] = secret
		}
	}
	if _, ok := env["SUPABASE_URL"]; ok {
		env["SUPABASE_URL"] = supabaseStandin(t, env["SUPABASE_SERVICE_ROLE_KEY"])
	}
	if _, ok := env["STRIPE_API_BASE"]; ok {
		env["STRIPE_API_BASE"] = closedURL(t)
	}
	if _, ok := env["HUBSPOT_BASE_URL"]; ok {
		hs := hubspotfake.NewTest(t)
		hs.SetAccessToken(env["HUBSPOT_ACCESS_TOKEN"])
		env["HUBSPOT_BASE_URL"] = hs.URL()
	}
	if _, ok := env["ZENDESK_BASE_URL"]; ok {
		env["ZENDESK_BASE_URL"] = zendeskfake.NewTest(t, env["ZENDESK_EMAIL"], env["ZENDESK_API_TOKEN"]).URL()
	}
	env["LOG_LEVEL"] = "debug"
	return env, secrets
}

// seedSweep is the demo tenant with a job waiting on every queue.
func seedSweep(t *testing.T, dbURL string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	require.NoError(t, demo.Seed(ctx, conn))
	require.NoError(t, conn.Close(ctx))
	pool, err := db.Open(ctx, dbURL, db.Options{})
	require.NoError(t, err)
	defer pool.Close()
	ins, err := jobs.NewInserter(pool)
	require.NoError(t, err)
	require.NoError(t, db.Tx(ctx, pool, func(tx pgx.Tx) error {
		if err := ins.EnqueueCRMSync(ctx, tx, demo.TenantID, "evt_sweep", 0); err != nil {
			return err
		}
		if err := ins.EnqueueBillingRefresh(ctx, tx, demo.TenantID, "sub_sweep", time.Now()); err != nil {
			return err
		}
		return ins.EnqueueHelpdeskTicket(ctx, tx, demo.TenantID, demo.TicketID)
	}))
}

// sweepPayloads are the function's sample events, signed with its secrets, and for HTTP
// functions the same requests with bad input: a forged signature or token, and a junk body.
func sweepPayloads(t *testing.T, b *sam.Project, f sam.Function, signer demo.Signer) [][]byte {
	t.Helper()
	var out [][]byte
	for _, sample := range sampleEvents(t, b, f) {
		raw, err := os.ReadFile(sample)
		require.NoError(t, err)
		signed, _, err := signer.Refresh(raw)
		if err != nil { // an invoked function's event
			out = append(out, raw)
			continue
		}
		out = append(out, signed)
		var ev map[string]any
		require.NoError(t, json.Unmarshal(signed, &ev))
		headers, _ := ev["headers"].(map[string]any)
		forged := map[string]any{}
		for k, v := range headers {
			switch strings.ToLower(k) {
			case "authorization":
				v = "Bearer eyJhbGciOiJIUzI1NiJ9.e30.forged"
			case "stripe-signature":
				v = "t=1,v1=" + strings.Repeat("0", 64)
			}
			forged[k] = v
		}
		for _, variant := range []map[string]any{{"headers": forged}, {"body": "{not json", "isBase64Encoded": false}} {
			ev2 := map[string]any{}
			for k, v := range ev {
				ev2[k] = v
			}
			for k, v := range variant {
				ev2[k] = v
			}
			p, err := json.Marshal(ev2)
			require.NoError(t, err)
			out = append(out, p)
		}
	}
	return out
}

// closedURL is an http URL on a loopback port nothing listens on (connections are refused).
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

// stripeRefusing answers every request as Stripe answers an API key it does not know: 401 with
// an invalid_request_error (the billing refresh dead-letters its job and alerts).
func stripeRefusing(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","message":"Invalid API Key provided."}}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// hangingURL is a server that accepts requests and answers none until the test ends.
func hangingURL(t *testing.T) string {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(done); srv.Close() })
	return srv.URL
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}
