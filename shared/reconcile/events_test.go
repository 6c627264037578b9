package reconcile_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/reconcile"
)

// The sample events of ReconcileFunction decode strictly into its input, and the unscoped one
// is refused as the function would refuse it.
func TestSampleEvents(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../events/reconcile*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var req reconcile.Request
		require.NoError(t, dec.Decode(&req), f)
		_, err = req.Options()
		if filepath.Base(f) == "reconcile-unscoped.json" {
			require.ErrorIs(t, err, reconcile.ErrUnscoped, f)
			continue
		}
		require.NoError(t, err, f)
	}
}
