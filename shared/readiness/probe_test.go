package readiness_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/portal-functions/portal-functions/shared/db"
	"github.com/portal-functions/portal-functions/shared/readiness"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// canaryScript is the uptime probe's script exactly as template.yaml deploys it.
func canaryScript(t *testing.T) string {
	t.Helper()
	root, err := sam.Root(".")
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join(root, "template.yaml"))
	require.NoError(t, err)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	n := doc.Content[0]
	for _, key := range []string{"Resources", "UptimeCanary", "Properties", "Code", "Script"} {
		next := (*yaml.Node)(nil)
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		require.NotNil(t, next, "template.yaml has no %s on the way to the canary's script", key)
		n = next
	}
	return n.Value
}

// The canary's own script, run under Node against GET /v1/health as portal-read serves it,
// passes while the deploy is healthy and fails (naming the failing check in the run's error)
// on a 503: what the alarm counts is what the route answers. Synthetics' library is replaced
// by its two documented calls (executeStep runs the step and fails the run if it throws).
func TestTheDeployedProbeScriptPassesOnHealthAndFailsOn503(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the canary's script runs under Node.js (apt-get install nodejs)")
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "index.js"), []byte(canaryScript(t)), 0o600))
	lib := filepath.Join(dir, "node_modules", "@aws", "synthetics-puppeteer")
	require.NoError(t, os.MkdirAll(lib, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(lib, "index.js"), []byte(`
exports.executeStep = async (name, fn) => fn();
exports.getCanaryUserAgentString = () => 'CloudWatchSynthetics/probe-test';
`), 0o600))

	run := func(t *testing.T, h http.Handler) (bool, string) {
		t.Helper()
		var path, agent atomic.Value
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			path.Store(r.Method + " " + r.URL.Path)
			agent.Store(r.UserAgent())
			h.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "-e",
			`require('./index.js').handler().then(() => process.exit(0), (e) => { console.error(e.message); process.exit(3) })`)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HEALTH_URL="+srv.URL+"/v1/health")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil {
			require.ErrorAs(t, err, &exit, "%s", out)
			require.Equal(t, 3, exit.ExitCode(), "the script ran and threw: %s", out)
		}
		require.Equal(t, "GET /v1/health", path.Load())
		require.Equal(t, "CloudWatchSynthetics/probe-test", agent.Load())
		return err == nil, string(out)
	}

	t.Run("healthy", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		passed, out := run(t, b.handler)
		require.True(t, passed, out)
	})

	t.Run("database down", func(t *testing.T) {
		t.Parallel()
		b := setup(t, func(o *readiness.Options, _ *bundle) {
			pool, err := db.Open(context.Background(), "postgres://postgres@127.0.0.1:1/pf?sslmode=disable", db.Options{Lazy: true})
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			o.DB = pool
		})
		passed, out := run(t, b.handler)
		require.False(t, passed)
		require.Contains(t, out, "answered 503")
		require.Contains(t, out, `"failing_checks":["database"]`)
	})
}
