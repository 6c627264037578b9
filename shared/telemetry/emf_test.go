package telemetry

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Count writes by hand the line json.Marshal writes for its document: the same JSON, one line.
func TestCountWritesWhatMarshalWould(t *testing.T) {
	t.Parallel()
	at := time.UnixMilli(1764460800123)
	cases := []struct {
		name string
		n    float64
		dims map[string]string
	}{
		{"WebhookDeliveries", 1, map[string]string{"Outcome": "processed", "EventType": "invoice.paid"}},
		{"SyncFailures", 2.5, map[string]string{"Integration": "crm"}},
		{"Queued", 0, nil},
		{"Tiny", 1e-9, map[string]string{"Note": `quote " backslash \ <tag> & é ` + "\x01"}},
		{"Huge", -3e22, map[string]string{"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"}},
		{"Shadowed", 1, map[string]string{"Function": "other", "Reason": "x"}},
	}
	for _, c := range cases {
		var fast, slow bytes.Buffer
		(&Metrics{w: &fast, function: "payment-webhook", now: func() time.Time { return at }}).Count(t.Context(), c.name, c.n, c.dims)
		(&Metrics{w: &slow, function: "payment-webhook", now: func() time.Time { return at }}).countSlow(c.name, c.n, c.dims)
		require.Equal(t, 1, bytes.Count(fast.Bytes(), []byte("\n")), c.name)
		require.True(t, bytes.HasSuffix(fast.Bytes(), []byte("\n")), c.name)
		var got, want any
		require.NoError(t, json.Unmarshal(fast.Bytes(), &got), fast.String())
		require.NoError(t, json.Unmarshal(slow.Bytes(), &want))
		require.Equal(t, want, got, c.name)
	}
	var none bytes.Buffer
	(&Metrics{w: &none, function: "f", now: time.Now}).Count(t.Context(), "NaN", math.NaN(), nil)
	require.Zero(t, none.Len(), "a value JSON cannot carry writes no line")
}

// Redaction by key ignores case, in ASCII and beyond.
func TestSensitiveKeyIgnoresCase(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"authorization", "X_Api_Key", "STRIPE_SIGNATURE", "refresh_Token", "db_PASSWORD", "to\u212Aen"} {
		require.True(t, sensitiveKey(k), k)
	}
	for _, k := range []string{"route", "event_id", "tenant_id", "ték", ""} {
		require.False(t, sensitiveKey(k), k)
	}
}
