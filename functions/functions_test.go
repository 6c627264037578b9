package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/db/dbtest"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
	"github.com/portal-functions/portal-functions/shared/rie"
	"github.com/portal-functions/portal-functions/shared/sam"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

// wantStatus is the HTTP status each HTTP function's sample events must get: reads and the
// webhook answer 200, creations 201.
var wantStatus = map[string]int{
	"PaymentWebhookFunction": 200,
	"CheckoutCreateFunction": 201,
	"TicketCreateFunction":   201,
	"PortalReadFunction":     200,
}

// wantError names the sample events that show a refusal: the function must answer them with
// this error type (reconcile refuses a run without a tenant or a date range).
var wantError = map[string]string{
	"reconcile-unscoped.json": "ScopeError",
}

// setup reads the project as the tools do: its root, template, build targets and env.json.
func setup(t *testing.T) *sam.Project {
	t.Helper()
	p, err := sam.Open(".")
	require.NoError(t, err)
	return p
}

// sampleEvents lists events/<folder>*.json for a function.
func sampleEvents(t *testing.T, b *sam.Project, f sam.Function) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(b.Root, "events", filepath.Base(f.Folder())+"*.json"))
	require.NoError(t, err)
	return matches
}

// Every function of the template has its folder with a main.go, its build target and at
// least one sample event: what `sam build` and `sam local invoke` need.
func TestEveryFunctionIsInPlace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range b.Template.Functions {
		t.Run(f.LogicalID, func(t *testing.T) {
			t.Parallel()
			_, err := os.Stat(filepath.Join(b.Root, f.Folder(), "main.go"))
			require.NoError(t, err, "%s needs %s/main.go", f.LogicalID, f.Folder())
			require.Equal(t, "./"+f.Folder(), b.Targets[f.LogicalID].Package, "Makefile build-%s", f.LogicalID)
			require.NotEmpty(t, sampleEvents(t, b, f), "%s needs a sample event events/%s*.json", f.LogicalID, filepath.Base(f.Folder()))
		})
	}
}

// Every sample event belongs to a function, so none is left behind when a function goes.
func TestEverySampleEventBelongsToAFunction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	files, err := filepath.Glob(filepath.Join(b.Root, "events", "*.json"))
	require.NoError(t, err)
	for _, file := range files {
		owner := ""
		for _, f := range b.Template.Functions {
			if strings.HasPrefix(filepath.Base(file), filepath.Base(f.Folder())) {
				owner = f.LogicalID
			}
		}
		require.NotEmpty(t, owner, "%s is named after no function folder", filepath.Base(file))
	}
}

// The sample events as committed, which `sam local invoke` sends as they are, carry
// credentials the functions accept with env.json's settings: every token verifies for the local
// project now, and every Stripe signature was made over the committed body with the local
// webhook secret. A stale token, or a body edited without `make events`, fails here. (Stripe
// accepts a signature for 300 s only, so its age cannot be committed: `make events` right before
// `sam local invoke` of the webhook.)
func TestCommittedSampleEventsAreSignedForTheLocalProject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range b.Template.Functions {
		if !f.IsHTTP() {
			continue
		}
		env := b.Env.For(f)
		for _, sample := range sampleEvents(t, b, f) {
			t.Run(filepath.Base(sample), func(t *testing.T) {
				t.Parallel()
				raw, err := os.ReadFile(sample)
				require.NoError(t, err)
				var ev events.APIGatewayV2HTTPRequest
				require.NoError(t, json.Unmarshal(raw, &ev))
				checked := false
				for name, value := range ev.Headers {
					switch strings.ToLower(name) {
					case "authorization":
						v, err := auth.NewVerifier(t.Context(), auth.Config{
							SupabaseURL: env["SUPABASE_URL"], JWTSecret: config.Secret(env["SUPABASE_JWT_SECRET"]), DisableJWKS: true,
						})
						require.NoError(t, err)
						id, err := v.Verify(t.Context(), strings.TrimPrefix(value, "Bearer "))
						require.NoError(t, err, "the committed token is refused: run `make events` and commit events/")
						require.Equal(t, demo.UserID, id.UserID, "the token is the demo owner's")
						checked = true
					case "stripe-signature":
						err := webhook.ValidatePayloadIgnoringTolerance([]byte(ev.Body), value, env["STRIPE_WEBHOOK_SECRET"])
						require.NoError(t, err, "the committed signature does not match the body: run `make events` and commit events/")
						checked = true
					}
				}
				require.True(t, checked, "every HTTP route needs a token or a Stripe signature; %s carries neither", filepath.Base(sample))
			})
		}
	}
}

// binaries builds every function that has a folder and the emulator, once, in
// one `go build` (shared packages compile once; two cores cannot build in parallel anyway).
var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func binaries(t testing.TB, b *sam.Project) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "functions-test-")
		if buildErr != nil {
			return
		}
		pkgs := []string{rie.ToolPackage}
		for _, f := range b.Template.Functions {
			if _, err := os.Stat(filepath.Join(b.Root, f.Folder(), "main.go")); err == nil {
				pkgs = append(pkgs, "./"+f.Folder())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		buildErr = rie.Build(ctx, b.Root, buildDir, pkgs...)
	})
	require.NoError(t, buildErr)
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// localEnv is the function's env.json environment with the database and the providers
// pointed at this test's own throwaway database and local stand-ins.
func localEnv(t *testing.T, b *sam.Project, f sam.Function) map[string]string {
	t.Helper()
	env := b.Env.For(f)
	dbURL := dbtest.NewURL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	require.NoError(t, demo.Seed(ctx, conn))
	require.NoError(t, conn.Close(ctx))
	env["DATABASE_URL"] = dbURL
	if _, ok := env["SUPABASE_URL"]; ok {
		// Tokens are re-minted for this issuer, so the project can live on a test port.
		env["SUPABASE_URL"] = supabaseStandin(t, env["SUPABASE_SERVICE_ROLE_KEY"])
	}
	if _, ok := env["STRIPE_API_BASE"]; ok {
		env["STRIPE_API_BASE"] = stripemock.Start(t)
	}
	if _, ok := env["HUBSPOT_BASE_URL"]; ok {
		hs := hubspotfake.NewTest(t)
		hs.SetAccessToken(env["HUBSPOT_ACCESS_TOKEN"])
		env["HUBSPOT_BASE_URL"] = hs.URL()
	}
	if _, ok := env["ZENDESK_BASE_URL"]; ok {
		zd := zendeskfake.NewTest(t, env["ZENDESK_EMAIL"], env["ZENDESK_API_TOKEN"])
		env["ZENDESK_BASE_URL"] = zd.URL()
	}
	return env
}

// supabaseStandin runs the local Supabase stand-in on a test port and returns its URL.
func supabaseStandin(t *testing.T, serviceKey string) string {
	t.Helper()
	srv := httptest.NewServer(demo.NewSupabase(serviceKey))
	t.Cleanup(srv.Close)
	return srv.URL
}

// Every built bootstrap answers each of its sample events under the real Lambda Runtime
// Interface Emulator: the binary Lambda runs, speaking the Runtime API, with env.json's
// environment. HTTP functions must answer with their expected status; invoked ones must
// return a result, not an error.
func TestEveryFunctionAnswersItsSampleEventsUnderTheRIE(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range b.Template.Functions {
		t.Run(f.LogicalID, func(t *testing.T) {
			t.Parallel()
			samples := sampleEvents(t, b, f)
			require.NotEmpty(t, samples, "%s has no sample event", f.LogicalID)
			bin := binaries(t, b)
			bootstrap := filepath.Join(bin, filepath.Base(f.Folder()))
			_, err := os.Stat(bootstrap)
			require.NoError(t, err, "%s was not built: is %s/main.go there?", f.LogicalID, f.Folder())

			env := localEnv(t, b, f)
			em, err := rie.Start(context.Background(), rie.Options{
				RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: bootstrap, Env: env,
				FunctionName: f.LogicalID, Timeout: time.Duration(f.Timeout) * time.Second, MemoryMB: f.MemorySize,
			})
			require.NoError(t, err)
			t.Cleanup(em.Stop)

			signer := demo.Signer{
				WebhookSecret: env["STRIPE_WEBHOOK_SECRET"], JWTSecret: env["SUPABASE_JWT_SECRET"],
				SupabaseURL: env["SUPABASE_URL"], TokenTTL: 10 * time.Minute,
			}
			for _, sample := range samples {
				raw, err := os.ReadFile(sample)
				require.NoError(t, err)
				payload, _, err := signer.Refresh(raw)
				if f.IsHTTP() {
					require.NoError(t, err, "%s must be an API Gateway HTTP API (2.0) event", filepath.Base(sample))
				}
				res, err := em.Invoke(context.Background(), payload)
				require.NoError(t, err, em.Output())
				require.Equal(t, 200, res.StatusCode, "%s: the runtime failed:\n%s", filepath.Base(sample), em.Output())
				if want, ok := wantError[filepath.Base(sample)]; ok {
					var fnErr struct {
						ErrorType string `json:"errorType"`
					}
					require.NoError(t, json.Unmarshal(res.Body, &fnErr), string(res.Body))
					require.Equal(t, want, fnErr.ErrorType, "%s answered %s", filepath.Base(sample), res.Body)
					continue
				}
				require.NotContains(t, string(res.Body), `"errorType"`, "%s: the function returned an error:\n%s", filepath.Base(sample), em.Output())
				if f.IsHTTP() {
					var out events.APIGatewayV2HTTPResponse
					require.NoError(t, json.Unmarshal(res.Body, &out), string(res.Body))
					require.Equal(t, wantStatus[f.LogicalID], out.StatusCode, "%s answered %s\nlog:\n%s", filepath.Base(sample), out.Body, em.Output())
					require.Equal(t, "private, no-store", out.Headers["Cache-Control"])
					require.NotEmpty(t, out.Headers["X-Request-Id"])
				}
				t.Logf("%s %s: %s in %s (%s)", f.LogicalID, filepath.Base(sample), http.StatusText(res.StatusCode), res.Elapsed.Round(time.Millisecond), res.Report.Line)
			}
		})
	}
}

// A missing secret stops the cold start with an error that names the variable and prints no
// value (the database URL here carries a password that must not show).
func TestMissingSecretFailsTheColdStartNamingIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	f, err := b.Template.Function("PaymentWebhookFunction")
	require.NoError(t, err)
	bin := binaries(t, b)
	bootstrap := filepath.Join(bin, filepath.Base(f.Folder()))
	_, err = os.Stat(bootstrap)
	require.NoError(t, err, "payment-webhook was not built")

	env := b.Env.For(f)
	delete(env, "STRIPE_WEBHOOK_SECRET")
	const password = "pw-that-must-never-be-printed"
	env["DATABASE_URL"] = fmt.Sprintf("postgres://postgres:%s@127.0.0.1:5432/postgres?sslmode=disable", password)
	em, err := rie.Start(context.Background(), rie.Options{
		RIE: filepath.Join(bin, "aws-lambda-rie"), Bootstrap: bootstrap, Env: env, FunctionName: f.LogicalID,
	})
	require.NoError(t, err)
	t.Cleanup(em.Stop)

	res, err := em.Invoke(context.Background(), []byte(`{}`))
	require.NoError(t, err)
	require.Equal(t, 502, res.StatusCode, "the runtime must refuse to start")
	// The RIE answers the invoke before it has necessarily copied the runtime's last output.
	require.Eventually(t, func() bool {
		return strings.Contains(em.Output(), "missing required environment variables")
	}, 10*time.Second, 20*time.Millisecond, "output: %s", em.Output())
	out := em.Output()
	require.Contains(t, out, "STRIPE_WEBHOOK_SECRET")
	require.Contains(t, out, "missing required environment variables")
	require.NotContains(t, out, password)
}
