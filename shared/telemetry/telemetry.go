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
	"math"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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
			if sensitiveKey(a.Key) {
				return slog.String(a.Key, "[REDACTED]")
			}
			switch a.Value.Kind() {
			case slog.KindString:
				if v := a.Value.String(); strings.Contains(v, "://") {
					return slog.String(a.Key, RedactURLs(v))
				}
			case slog.KindAny:
				if err, ok := a.Value.Any().(error); ok {
					return slog.String(a.Key, RedactURLs(err.Error()))
				}
			}
			return a
		},
	})
	return slog.New(h).With("function", function)
}

// sensitiveKey reports whether key names one of sensitiveKeys, in any case. It runs for every
// attribute of every line, so it compares in place rather than lower-casing a copy, and only
// where one of the words could start (sensitiveStarts).
func sensitiveKey(key string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] >= utf8.RuneSelf {
			lower := strings.ToLower(key) // Unicode case folding can change lengths
			return slices.ContainsFunc(sensitiveKeys, func(s string) bool { return strings.Contains(lower, s) })
		}
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		for _, s := range sensitiveStarts[c] {
			if i+len(s) <= len(key) && strings.EqualFold(key[i:i+len(s)], s) {
				return true
			}
		}
	}
	return false
}

// sensitiveStarts lists sensitiveKeys by their first byte (all are lower-case ASCII).
var sensitiveStarts = func() (by [utf8.RuneSelf][]string) {
	for _, s := range sensitiveKeys {
		by[s[0]] = append(by[s[0]], s)
	}
	return by
}()

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
	names := make([]string, 0, 4)
	for k := range dims {
		if k == "Function" || k == "_aws" || k == name {
			m.countSlow(name, n, dims) // a dimension shadows a field of the line
			return
		}
		names = append(names, k)
	}
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return // not a JSON number: no line, as json.Marshal would refuse it
	}
	sort.Strings(names)
	// The line json.Marshal would write for the document countSlow builds, written directly:
	// it goes out once per delivery, and the map, its sorting and reflection cost more than
	// the rest of the metric.
	line := make([]byte, 0, 384)
	line = append(line, `{"Function":`...)
	line = appendJSONString(line, m.function)
	line = append(line, ',')
	line = appendJSONString(line, name)
	line = append(line, ':')
	line = appendJSONFloat(line, n)
	for _, k := range names {
		line = append(line, ',')
		line = appendJSONString(line, k)
		line = append(line, ':')
		line = appendJSONString(line, dims[k])
	}
	line = append(line, `,"_aws":{"CloudWatchMetrics":[{"Dimensions":[["Function"`...)
	for _, k := range names {
		line = append(line, ',')
		line = appendJSONString(line, k)
	}
	line = append(line, ']')
	if len(names) > 1 {
		for _, k := range names {
			line = append(line, `,["Function",`...)
			line = appendJSONString(line, k)
			line = append(line, ']')
		}
	}
	line = append(line, `],"Metrics":[{"Name":`...)
	line = appendJSONString(line, name)
	line = append(line, `,"Unit":"Count"}],"Namespace":"`+Namespace+`"}],"Timestamp":`...)
	line = strconv.AppendInt(line, m.now().UnixMilli(), 10)
	line = append(line, "}}\n"...)
	m.write(line)
}

// countSlow is Count through a map and json.Marshal, for dimensions named like the line's own
// fields (the later key wins, as in a map).
func (m *Metrics) countSlow(name string, n float64, dims map[string]string) {
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
	m.write(append(line, '\n'))
}

func (m *Metrics) write(line []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, _ = m.w.Write(line)
}

// appendJSONString appends s as a JSON string, escaped as encoding/json escapes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always marshals
			return append(b, quoted...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONFloat appends n as encoding/json writes a float64.
func appendJSONFloat(b []byte, n float64) []byte {
	if a := math.Abs(n); a != 0 && (a < 1e-6 || a >= 1e21) {
		num, _ := json.Marshal(n) // finite: always marshals
		return append(b, num...)
	}
	return strconv.AppendFloat(b, n, 'f', -1, 64)
}
