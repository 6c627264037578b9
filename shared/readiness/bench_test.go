package readiness_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/portal-functions/portal-functions/shared/readiness"
)

// BenchmarkHealth measures GET /v1/health as portal-read serves it (web.Wrap included): from
// the cache, and with every request running the checks (one statement on the local
// PostgreSQL, the JWKS keys cached). stmts/op is the database's share.
func BenchmarkHealth(b *testing.B) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{
		{name: "cached", ttl: readiness.DefaultTTL},
		{name: "uncached", ttl: time.Nanosecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			bb := setup(b, func(o *readiness.Options, _ *bundle) { o.TTL = tc.ttl; o.Now = time.Now })
			n := 0
			for b.Loop() {
				if code := bb.get(b).Code; code != http.StatusOK {
					b.Fatalf("status %d", code)
				}
				n++
			}
			b.ReportMetric(float64(len(bb.db.statements()))/float64(n), "stmts/op")
		})
	}
}
