package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A profile as `go test -coverpkg` writes it: the same blocks reported by two test binaries.
const profile = `mode: set
github.com/portal-functions/portal-functions/shared/auth/verifier.go:10.2,12.3 8 1
github.com/portal-functions/portal-functions/shared/auth/verifier.go:14.2,16.3 2 0
github.com/portal-functions/portal-functions/shared/billing/webhook.go:10.2,12.3 5 0
github.com/portal-functions/portal-functions/shared/billing/webhook.go:14.2,16.3 5 1
github.com/portal-functions/portal-functions/shared/auth/verifier.go:10.2,12.3 8 0
github.com/portal-functions/portal-functions/shared/auth/verifier.go:14.2,16.3 2 1
github.com/portal-functions/portal-functions/shared/billing/webhook.go:10.2,12.3 5 0
`

func gate(t *testing.T, prof string, args ...string) (int, string, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "coverage.out")
	require.NoError(t, os.WriteFile(file, []byte(prof), 0o600))
	var out, errOut bytes.Buffer
	code := run(append([]string{"-profile", file}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestGatePrintsEachPackageAndFailsBelowTheMinimum(t *testing.T) {
	t.Parallel()
	code, out, errOut := gate(t, profile, "-min", "80", "./shared/auth", "./shared/billing")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, out, "shared/auth      100.0% of   10 statements  ok", "a block run by any test binary is covered")
	require.Contains(t, out, "shared/billing    50.0% of   10 statements  FAIL (below 80%)")

	code, out, _ = gate(t, profile, "-min", "50", "./shared/auth", "./shared/billing")
	require.Equal(t, 0, code, out)
}

func TestGateFailsOnAPackageTheProfileLacksOrABadProfile(t *testing.T) {
	t.Parallel()
	code, out, _ := gate(t, profile, "./shared/tenant")
	require.Equal(t, 1, code)
	require.True(t, strings.Contains(out, "shared/tenant") && strings.Contains(out, "FAIL"), out)

	code, _, errOut := gate(t, "mode: set\nnot a profile line\n", "./shared/auth")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "malformed")
	code, _, _ = gate(t, profile)
	require.Equal(t, 2, code, "no package named")
}
