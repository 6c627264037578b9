package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/telemetry"
)

func TestLoggerRedactsSensitiveKeys(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := telemetry.NewLogger(&buf, "payment-webhook", slog.LevelInfo)
	log.Info("request", "authorization", "Bearer eyJhbGciOi", "stripe_signature", "t=1,v1=abc", "route", "/v1/x")
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	require.Equal(t, "payment-webhook", line["function"])
	require.Equal(t, "/v1/x", line["route"])
	require.Equal(t, "[REDACTED]", line["authorization"])
	require.Equal(t, "[REDACTED]", line["stripe_signature"])
}

func TestMetricsAreEmbeddedMetricFormat(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	m := telemetry.NewMetrics(&buf, "crm-push")
	m.Count(context.Background(), "SyncFailures", 1, map[string]string{"Integration": "crm"})

	var doc struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		SyncFailures float64
		Integration  string
		Function     string
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &doc))
	require.Equal(t, float64(1), doc.SyncFailures)
	require.Equal(t, "crm", doc.Integration)
	require.Equal(t, "crm-push", doc.Function)
	require.NotZero(t, doc.AWS.Timestamp)
	require.Equal(t, telemetry.Namespace, doc.AWS.CloudWatchMetrics[0].Namespace)
	require.Equal(t, [][]string{{"Function", "Integration"}}, doc.AWS.CloudWatchMetrics[0].Dimensions)
	require.Equal(t, "SyncFailures", doc.AWS.CloudWatchMetrics[0].Metrics[0].Name)
}

func TestMetricsRollUpToEachSingleDimension(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	m := telemetry.NewMetrics(&buf, "payment-webhook")
	m.Count(context.Background(), "WebhookDeliveries", 1, map[string]string{"Outcome": "failed", "EventType": "invoice.paid"})

	var doc struct {
		AWS struct {
			CloudWatchMetrics []struct{ Dimensions [][]string }
		} `json:"_aws"`
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &doc))
	// template.yaml's webhook alarm watches {Function, Outcome}: that exact set must be published.
	require.Equal(t, [][]string{
		{"Function", "EventType", "Outcome"},
		{"Function", "EventType"},
		{"Function", "Outcome"},
	}, doc.AWS.CloudWatchMetrics[0].Dimensions)
}

func TestHashUserIsStableAndOpaque(t *testing.T) {
	t.Parallel()
	id := "8f14e45f-ceea-467f-a1a2-7a6d3f1b9c01"
	require.Equal(t, telemetry.HashUser(id), telemetry.HashUser(id))
	require.NotContains(t, telemetry.HashUser(id), "8f14e45f")
	require.Len(t, telemetry.HashUser(id), 16)
	require.Empty(t, telemetry.HashUser(""))
}

// A URL inside a logged error keeps its scheme and host (where the call went) and loses what
// can be a secret: a chat webhook's path, a query's key, a connection string's password.
func TestLoggerRedactsURLsInsideValues(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := telemetry.NewLogger(&buf, "crm-push", slog.LevelInfo)
	_, err := (&http.Client{}).Post("http://127.0.0.1:1/services/T0/B0/hook-path-secret?key=q-secret", "application/json", nil)
	require.Error(t, err)
	log.Error("alert webhook", "error", err.Error(), "cause", err, "db", "postgres://app:pw-secret@db.example.com:6543/postgres",
		"plain", "no url here", "host_only", "https://api.hubapi.com")
	out := buf.String()
	for _, secret := range []string{"hook-path-secret", "q-secret", "pw-secret", "app:"} {
		require.NotContains(t, out, secret)
	}
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	require.Contains(t, line["error"], "http://127.0.0.1:1/[REDACTED]")
	require.Contains(t, line["error"], "connection refused", "the error's cause stays readable")
	require.Contains(t, line["cause"], "http://127.0.0.1:1/[REDACTED]")
	require.Equal(t, "postgres://db.example.com:6543/[REDACTED]", line["db"])
	require.Equal(t, "no url here", line["plain"])
	require.Equal(t, "https://api.hubapi.com", line["host_only"])
}
