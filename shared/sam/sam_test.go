package sam_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/telemetry"

	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// setup reads the project as the tools do: its root, template, build targets and env.json.
func setup(t *testing.T) *sam.Project {
	t.Helper()
	p, err := sam.Open(".")
	require.NoError(t, err)
	return p
}

// The functions, their triggers and their routes are a contract (DESIGN.md section 3): the
// portal, Stripe's endpoint settings and the dev server rely on them.
func TestTemplateDeclaresTheDesignedFunctionsAndRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)

	routes := map[string][]string{}
	schedules := map[string][]string{}
	for _, f := range b.Template.Functions {
		routes[f.LogicalID] = []string{}
		for _, r := range f.Routes {
			routes[f.LogicalID] = append(routes[f.LogicalID], r.Pattern())
		}
		sort.Strings(routes[f.LogicalID])
		schedules[f.LogicalID] = f.Schedules
	}
	require.Equal(t, map[string][]string{
		"PaymentWebhookFunction": {"POST /v1/webhooks/stripe"},
		"CheckoutCreateFunction": {"POST /v1/billing-portal-sessions", "POST /v1/checkout-sessions"},
		"TicketCreateFunction":   {"POST /v1/tickets"},
		"PortalReadFunction":     {"GET /v1/account", "GET /v1/health", "GET /v1/tickets", "GET /v1/tickets/{id}"},
		"CrmPushFunction":        {},
		"BillingRefreshFunction": {},
		"SupportPushFunction":    {},
		"ReconcileFunction":      {},
	}, routes)
	require.Equal(t, []string{"rate(1 minute)"}, schedules["CrmPushFunction"])
	require.Equal(t, []string{"rate(1 minute)"}, schedules["SupportPushFunction"])
	require.Equal(t, []string{"rate(1 minute)"}, schedules["BillingRefreshFunction"])
	require.Empty(t, schedules["ReconcileFunction"], "reconcile is invoked by ops only")
}

// `sam build` copies only CodeUri before it runs the Makefile target, so each function must
// build from the repository root, on the Lambda runtime and architecture of the design.
func TestEveryFunctionBuildsWithSAMsMakefileMethod(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range b.Template.Functions {
		t.Run(f.LogicalID, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, ".", f.CodeURI)
			require.Equal(t, "makefile", f.BuildMethod)
			require.Equal(t, "bootstrap", f.Handler)
			require.Equal(t, "provided.al2023", f.Runtime)
			require.Equal(t, []string{"arm64"}, f.Architectures)
			require.Positive(t, f.Timeout)
			require.Positive(t, f.MemorySize)

			target, ok := b.Targets[f.LogicalID]
			require.True(t, ok, "Makefile needs a build-%s target", f.LogicalID)
			require.Equal(t, "./"+f.Folder(), target.Package)
			require.Equal(t, []string{"$(GO_BUILD) -o $(ARTIFACTS_DIR)/bootstrap ./" + f.Folder()}, target.Recipe)
		})
	}
}

func TestMakefileBuildsStaticStrippedArm64Binaries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	mk := readFile(t, filepath.Join(b.Root, "Makefile"))
	def := regexp.MustCompile(`(?m)^GO_BUILD = (.*)$`).FindStringSubmatch(mk)
	require.NotNil(t, def, "Makefile defines GO_BUILD")
	for _, flag := range []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0", "-trimpath", "-tags lambda.norpc", `-ldflags="-s -w"`} {
		require.Contains(t, def[1], flag)
	}
	// No build target for a function the template does not have.
	for id := range b.Targets {
		_, err := b.Template.Function(id)
		require.NoError(t, err, "Makefile builds %s, which template.yaml does not declare", id)
	}
}

// Secrets reach a function only as NoEcho parameters, never as literals in the template.
func TestSecretsAreNoEchoParameters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secret := regexp.MustCompile(`SECRET|TOKEN|_KEY$|DATABASE_URL|ALERT_WEBHOOK_URL`)
	for _, f := range b.Template.Functions {
		for name, v := range f.Env {
			require.Equal(t, "!Ref", v.Tag, "%s %s must come from a parameter", f.LogicalID, name)
			if _, err := b.Template.Function(v.Value); err == nil && !secret.MatchString(name) {
				continue // another function's name (the pusher a request nudges)
			}
			p, ok := b.Template.Parameters[v.Value]
			require.True(t, ok, "%s %s refers to unknown parameter %s", f.LogicalID, name, v.Value)
			if secret.MatchString(name) {
				require.True(t, p.NoEcho, "parameter %s carries secret %s: it must be NoEcho", v.Value, name)
			}
			_, listed := b.Template.SecretEnv(f)[name]
			require.Equal(t, p.NoEcho, listed, "SecretEnv lists exactly the NoEcho-backed variables (%s %s)", f.LogicalID, name)
		}
	}
	crm, err := b.Template.Function("CrmPushFunction")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"DATABASE_URL": "DatabaseUrl", "HUBSPOT_ACCESS_TOKEN": "HubspotAccessToken",
		"ALERT_WEBHOOK_URL": "AlertWebhookUrl"}, b.Template.SecretEnv(crm))
}

// env.json gives each function exactly the variables the template declares for it (SAM
// ignores the others, and a missing one would only show at invoke time), with local values only.
func TestEnvFileMatchesTheTemplateWithLocalValuesOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range b.Template.Functions {
		t.Run(f.LogicalID, func(t *testing.T) {
			t.Parallel()
			local, ok := b.Env[f.LogicalID]
			require.True(t, ok, "env.json needs an entry for %s", f.LogicalID)
			names := make([]string, 0, len(local))
			for k := range local {
				names = append(names, k)
			}
			sort.Strings(names)
			require.Equal(t, f.EnvNames(), names)
			for name, v := range local {
				if strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://") || strings.HasPrefix(v, "postgres://") {
					require.Regexp(t, `^[a-z]+://([^@/]+@)?(127\.0\.0\.1|localhost)[:/]`, v, "%s must point at this machine", name)
				}
			}
		})
	}
	require.Equal(t, "whsec_local_development_secret", b.Env["PaymentWebhookFunction"]["STRIPE_WEBHOOK_SECRET"])
	require.Equal(t, "local-development-jwt-secret-at-least-32-characters", b.Env["PortalReadFunction"]["SUPABASE_JWT_SECRET"])
}

// Every function has an alarm on Lambda's own Errors and Throttles: a function that fails at
// cold start (a bad token variable) or is throttled emits none of our metrics at all.
func TestEveryFunctionHasErrorAndThrottleAlarms(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, f := range b.Template.Functions {
		for _, metric := range []string{"Errors", "Throttles"} {
			found := false
			for _, a := range b.Template.Alarms {
				if a.Namespace == "AWS/Lambda" && a.MetricName == metric &&
					a.Dimensions["FunctionName"] == (sam.Value{Tag: "!Ref", Value: f.LogicalID}) {
					found = true
					require.Equal(t, "Sum", a.Statistic, a.LogicalID)
					require.Equal(t, "GreaterThanOrEqualToThreshold", a.ComparisonOperator, a.LogicalID)
					require.EqualValues(t, 1, a.Threshold, a.LogicalID)
					require.Len(t, a.Dimensions, 1, a.LogicalID)
				}
			}
			require.True(t, found, "%s needs an alarm on AWS/Lambda %s", f.LogicalID, metric)
		}
	}
}

func TestAlarmsWatchTheMetricsTheFunctionsEmit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tmpl := readFile(t, filepath.Join(b.Root, "template.yaml"))
	for _, metric := range []string{"SyncFailuresInWindow", "SyncDeadLettered", "QueueOldestWaitingSeconds", "WebhookDeliveries"} {
		require.Contains(t, tmpl, "MetricName: "+metric)
	}
	require.Contains(t, tmpl, "Namespace: PortalFunctions")
	require.Contains(t, tmpl, "Endpoint: !Ref AlertEmail")

	// The unmatched-events alarm reads the gauge billing-refresh emits, by the name and the
	// one dimension (Function) the code gives it, over the hour the issue names.
	var alarm sam.Alarm
	for _, a := range b.Template.Alarms {
		if a.LogicalID == "UnmatchedEventsAlarm" {
			alarm = a
		}
	}
	require.Equal(t, billing.MetricOldestUnmatchedAge, alarm.MetricName)
	require.Equal(t, telemetry.Namespace, alarm.Namespace)
	require.Len(t, alarm.Dimensions, 1)
	require.Equal(t, billing.Refresh.Name, alarm.Dimensions["Function"].Value)
	require.Equal(t, "Maximum", alarm.Statistic)
	require.Equal(t, time.Hour.Seconds(), alarm.Threshold)
}

func TestParseAppliesGlobalsAndKeepsIntrinsics(t *testing.T) {
	t.Parallel()
	tmpl, err := sam.Parse([]byte(`
Transform: AWS::Serverless-2016-10-31
Parameters:
  Secret: {Type: String, NoEcho: true}
Globals:
  Function:
    Runtime: provided.al2023
    Handler: bootstrap
    Timeout: 10
    Architectures: [arm64]
    Environment:
      Variables:
        SHARED: global
        OVERRIDDEN: global
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  OneFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: makefile}
    Properties:
      CodeUri: .
      Timeout: 60
      Environment:
        Variables:
          OVERRIDDEN: local
          SECRET: !Ref Secret
          LONG: {"Fn::Sub": "x-${Secret}"}
      Events:
        Get:
          Type: HttpApi
          Properties: {Method: get, Path: "/v1/things/{id}"}
        Any:
          Type: HttpApi
          Properties: {Method: ANY, Path: "/v1/files/{path+}"}
        Tick:
          Type: Schedule
          Properties: {Schedule: rate(5 minutes)}
`))
	require.NoError(t, err)
	f, err := tmpl.Function("OneFunction")
	require.NoError(t, err)
	require.Equal(t, "provided.al2023", f.Runtime)
	require.Equal(t, "bootstrap", f.Handler)
	require.Equal(t, 60, f.Timeout)
	require.Equal(t, []string{"arm64"}, f.Architectures)
	require.Equal(t, map[string]sam.Value{
		"SHARED":     {Value: "global"},
		"OVERRIDDEN": {Value: "local"},
		"SECRET":     {Tag: "!Ref", Value: "Secret"},
		"LONG":       {Tag: "!Sub", Value: "x-${Secret}"},
	}, f.Env)
	require.Equal(t, []string{"/v1/files/{path...}", "GET /v1/things/{id}"}, []string{f.Routes[0].Pattern(), f.Routes[1].Pattern()})
	require.Equal(t, []string{"rate(5 minutes)"}, f.Schedules)
	require.Equal(t, "functions/one", f.Folder())

	_, err = tmpl.Function("Missing")
	require.ErrorIs(t, err, sam.ErrUnknownFunction)
}

func TestParseRejectsTemplatesItCannotServe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want error
	}{
		{"no functions", "Resources:\n  Api:\n    Type: AWS::Serverless::HttpApi\n", sam.ErrNoFunctions},
		{"route without path", "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      Events:\n        E:\n          Type: HttpApi\n          Properties: {Method: GET}\n", sam.ErrBadRoute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := sam.Parse([]byte(tc.yaml))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestEnvFileForPassesOnlyDeclaredVariables(t *testing.T) {
	t.Parallel()
	f := sam.Function{LogicalID: "AFunction", Env: map[string]sam.Value{"A": {}, "B": {}, "C": {}}}
	env := sam.EnvFile{
		"Parameters": {"A": "all", "B": "all"},
		"AFunction":  {"B": "mine", "UNDECLARED": "x"},
	}
	require.Equal(t, map[string]string{"A": "all", "B": "mine"}, env.For(f))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// Pooler clients of Supabase's smallest compute sizes (Nano and Micro: "Connections: Pooler
// 200", supabase.com/docs/guides/platform/compute-add-ons). The functions may take at most
// three quarters of them, leaving the rest to the portal's own clients and ops tools.
const (
	smallestPoolerClients = 200
	functionsShare        = smallestPoolerClients * 3 / 4
)

// Every function reserves its concurrency, and all of them at full concurrency, each instance
// holding its DB_MAX_CONNS connections (its parameter's default, else Base's), fit the
// smallest compute's pooler.
func TestReservedConcurrencyFitsTheSmallestPooler(t *testing.T) {
	t.Parallel()
	b := setup(t)
	field, ok := reflect.TypeOf(function.Base{}).FieldByName("DBMaxConns")
	require.True(t, ok)
	defaultConns, err := strconv.Atoi(field.Tag.Get("default"))
	require.NoError(t, err)
	reserved := map[int]int{} // connections per instance -> instances
	for _, f := range b.Template.Functions {
		require.Positive(t, f.ReservedConcurrency, "%s needs ReservedConcurrentExecutions", f.LogicalID)
		conns := defaultConns
		if v, ok := f.Env["DB_MAX_CONNS"]; ok {
			p := b.Template.Parameters[v.Value]
			require.NotNil(t, p.Default, "%s: DB_MAX_CONNS's parameter %s needs a default", f.LogicalID, v.Value)
			conns, err = strconv.Atoi(*p.Default)
			require.NoError(t, err)
		}
		reserved[conns] += f.ReservedConcurrency
	}
	var terms []string
	sum := 0
	for _, conns := range slices.Sorted(maps.Keys(reserved)) {
		terms = append(terms, fmt.Sprintf("%d × %d", reserved[conns], conns))
		sum += reserved[conns] * conns
	}
	stated := fmt.Sprintf("%s = %d", strings.Join(terms, " + "), sum)
	t.Logf("reserved concurrency x DB_MAX_CONNS: %s pooler clients of %d", stated, smallestPoolerClients)
	require.LessOrEqual(t, sum, functionsShare)
	readme := readFile(t, filepath.Join(b.Root, "README.md"))
	require.Contains(t, readme, stated, "the README states the sum")
}
