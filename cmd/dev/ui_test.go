package main

import (
	"bytes"
	"context"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/rie"
	"github.com/portal-functions/portal-functions/shared/sam"
)

// uiMarkers are strings only the browser UI carries, one per kind of file.
var uiMarkers = map[string]string{
	"ui/portal.js": "Your client portal, running on this machine",
	"ui/ops.js":    "requeue what gave up, and watch what HubSpot and Zendesk received",
	"ui/style.css": "The dev portal's one stylesheet",
}

// The portal and ops console are embedded in the dev server only: a Lambda bootstrap carries
// none of them. It is built as functions_test builds every bootstrap (rie.Build: the
// Makefile's flags for Lambda, static, lambda.norpc, stripped, for this machine's
// architecture, which changes no embedded byte), so the build cache is shared and the check
// costs seconds in make test.
func TestLambdaBootstrapCarriesNoPortalUI(t *testing.T) {
	t.Parallel()
	p, err := sam.Open(".")
	require.NoError(t, err)
	for file, marker := range uiMarkers {
		raw, err := ui.ReadFile(file)
		require.NoError(t, err)
		require.Contains(t, string(raw), marker, "the marker must be in the UI for this test to mean anything")
	}

	const fn = "PortalReadFunction"
	target, ok := p.Targets[fn]
	require.True(t, ok, "the Makefile builds %s", fn)
	out := t.TempDir()
	require.NoError(t, rie.Build(context.Background(), p.Root, out, target.Package))
	bootstrap, err := os.ReadFile(filepath.Join(out, path.Base(target.Package)))
	require.NoError(t, err)
	require.Greater(t, len(bootstrap), 1<<20, "a real Go binary")
	for file, marker := range uiMarkers {
		require.False(t, bytes.Contains(bootstrap, []byte(marker)), "%s's bootstrap carries %s (%q)", fn, file, marker)
	}
	require.False(t, bytes.Contains(bootstrap, []byte("<script type=\"module\" src=\"/ui/app.js\">")), "the page itself")
}
