// Package telemetrytest gives tests one sink for what the functions log and measure: JSON lines
// written concurrently by servers, workers and the test itself, read back decoded.
package telemetrytest

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Buffer collects JSON lines (slog lines, EMF metric lines). Safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines decodes every line written so far; a line that is not JSON fails the test.
func (b *Buffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	return decode(t, b.buf.String())
}

// Take is Lines, then forgets them, so the next call sees only what came after.
func (b *Buffer) Take(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := decode(t, b.buf.String())
	b.buf.Reset()
	return out
}

func decode(t testing.TB, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// RequireNoSecret fails the test when any line of output contains one of the secrets' values
// (secrets maps a name to its value), naming the secret and the line's start but never
// printing the value itself.
func RequireNoSecret(t testing.TB, output string, secrets map[string]string) {
	t.Helper()
	for i, line := range strings.Split(output, "\n") {
		for name, value := range secrets {
			if value != "" && strings.Contains(line, value) {
				t.Errorf("line %d shows the value of %s: %.80s...", i+1, name, strings.ReplaceAll(line, value, "<"+name+">"))
			}
		}
	}
}

// RequireMetric fails the test unless one of the EMF lines publishes metric in namespace under
// exactly the dimension set dims (names and values), the set a CloudWatch alarm on it reads.
func RequireMetric(t testing.TB, lines []map[string]any, namespace, metric string, dims map[string]string) {
	t.Helper()
	want := make([]string, 0, len(dims))
	for k := range dims {
		want = append(want, k)
	}
	sort.Strings(want)
	for _, l := range lines {
		if _, ok := l[metric]; !ok {
			continue
		}
		values := true
		for k, v := range dims {
			if l[k] != v {
				values = false
			}
		}
		aws, _ := l["_aws"].(map[string]any)
		cms, _ := aws["CloudWatchMetrics"].([]any)
		for _, cm := range cms {
			cm, _ := cm.(map[string]any)
			if cm["Namespace"] != namespace || !values {
				continue
			}
			sets, _ := cm["Dimensions"].([]any)
			for _, set := range sets {
				var names []string
				for _, n := range set.([]any) {
					names = append(names, n.(string))
				}
				sort.Strings(names)
				if strings.Join(names, ",") == strings.Join(want, ",") {
					return
				}
			}
		}
	}
	t.Errorf("no EMF line publishes %s/%s with dimensions %v", namespace, metric, dims)
}
