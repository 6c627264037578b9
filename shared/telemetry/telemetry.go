// Package telemetry makes every function's logs and metrics look the same: JSON lines from
// log/slog with the function's name, and metrics as CloudWatch Embedded Metric Format lines on
// the same stream, so CloudWatch turns them into metrics (and alarms) with no agent and no call.
package telemetry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Namespace is the CloudWatch namespace of every metric; template.yaml's alarms use it.
const Namespace = "PortalFunctions"

// sensitiveKeys are attribute names whose values are always redacted, whatever their type: a
// second wall behind config.Secret for values that arrive as plain strings (headers, tokens).
var sensitiveKeys = []string{"authorization", "password", "secret", "token", "api_key", "apikey", "cookie", "signature"}

// urlPattern finds URLs inside a longer text (an error message quoting the URL it called).
var urlPattern = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+`)

// RedactURLs keeps only the scheme and host of every URL in s: the path, query and user info
// of a URL can be the secret itself (a chat webhook's path, a connection string's password, a
// key in a query), and Go's *url.Error quotes the whole URL it failed to reach.
func RedactURLs(s string) string {
	return urlPattern.ReplaceAllStringFunc(s, func(raw string) string {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return "[REDACTED URL]"
		}
		if u.User == nil && (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == "" {
			return raw
		}
		return u.Scheme + "://" + u.Host + "/[REDACTED]"
	})
}

// NewLogger returns a JSON logger that stamps every line with the function's name, redacts
// sensitive attributes by key, and redacts the secret-bearing parts of URLs in any string or
// error value (RedactURLs).
func NewLogger(w io.Writer, function string, level slog.Leveler) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			k := strings.ToLower(a.Key)
			for _, s := range sensitiveKeys {
				if strings.Contains(k, s) {
					return slog.String(a.Key, "[REDACTED]")
				}
			}
			switch v := a.Value.Any().(type) {
			case string:
				if strings.Contains(v, "://") {
					return slog.String(a.Key, RedactURLs(v))
				}
			case error:
				return slog.String(a.Key, RedactURLs(v.Error()))
			}
			return a
		},
	})
	return slog.New(h).With("function", function)
}

// HashUser turns a user id into a stable, non-reversible tag for logs: enough to follow one
// user's requests, not enough to identify them.
func HashUser(userID string) string {
	if userID == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("portal-functions:" + userID))
	return hex.EncodeToString(sum[:8])
}

// Metrics writes CloudWatch Embedded Metric Format lines. Safe for concurrent use.
type Metrics struct {
	mu       sync.Mutex
	w        io.Writer
	function string
	now      func() time.Time
}

// NewMetrics writes EMF lines for function to w (stdout in Lambda).
func NewMetrics(w io.Writer, function string) *Metrics {
	return &Metrics{w: w, function: function, now: time.Now}
}

// Count records n of a counter metric with the given dimensions (e.g. integration, outcome).
// CloudWatch keys a metric by its exact dimension set, so besides the full set the line also
// publishes Function plus each single dimension: an alarm on {Function, Outcome} then sees
// lines that also carry EventType. Dimension values are plain properties too, so Logs
// Insights can filter on them.
func (m *Metrics) Count(_ context.Context, name string, n float64, dims map[string]string) {
	if m == nil {
		return
	}
	names := make([]string, 0, len(dims))
	doc := map[string]any{"Function": m.function, name: n}
	for k, v := range dims {
		names = append(names, k)
		doc[k] = v
	}
	sort.Strings(names)
	sets := [][]string{append([]string{"Function"}, names...)}
	if len(names) > 1 {
		for _, k := range names {
			sets = append(sets, []string{"Function", k})
		}
	}
	doc["_aws"] = map[string]any{
		"Timestamp": m.now().UnixMilli(),
		"CloudWatchMetrics": []map[string]any{{
			"Namespace":  Namespace,
			"Dimensions": sets,
			"Metrics":    []map[string]string{{"Name": name, "Unit": "Count"}},
		}},
	}
	line, err := json.Marshal(doc)
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, _ = m.w.Write(append(line, '\n'))
}
