package ticket_test

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/portal-functions/portal-functions/shared/ticket"
	"github.com/portal-functions/portal-functions/shared/ticket/tickettest"
)

// BenchmarkTicketCreate measures POST /v1/tickets end to end on the real database, warm: token
// verification, membership, idempotency claim, validation, one attachment's signed URL from the
// Storage fake, the ticket, attachment and job rows and the completed idempotency record in one
// transaction. It reports p50 and p95 besides ns/op.
func BenchmarkTicketCreate(b *testing.B) {
	env := tickettest.New(b)
	m := env.Seed(b, "Bench", "member")
	body := ticket.CreateRequest{Subject: "Benchmark", Body: "Measuring the request path.", Category: "technical", Priority: "normal",
		Attachments: []ticket.AttachmentRequest{{Name: "trace.txt", Size: 1024, ContentType: "text/plain"}}}
	for i := range 20 { // warm the pool, caches and the verifier's key lookups
		if w := env.Post(b, m, "warm-"+strconv.Itoa(i), body); w.Code != http.StatusCreated {
			b.Fatalf("warm-up: %d %s", w.Code, w.Body.String())
		}
	}
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		w := env.Post(b, m, "bench-"+strconv.Itoa(i), body)
		durations = append(durations, time.Since(start))
		if w.Code != http.StatusCreated {
			b.Fatalf("create: %d %s", w.Code, w.Body.String())
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	pct := func(p float64) float64 {
		return float64(durations[int(float64(len(durations)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
}
