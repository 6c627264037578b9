package idempotency_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/portal-functions/portal-functions/shared/idempotency"
)

// created answers 201 without database work of its own, so the benchmarks measure the
// idempotency record: claim, business transaction, completion (or the replay).
func created(w http.ResponseWriter, _ *http.Request, _ pgx.Tx) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(`{"id":"4f0c6a8e-3b1d-4c2a-9e7f-5a6b7c8d9e0f"}`))
}

func benchRequest(b *testing.B, h http.Handler, key string) {
	req := httptest.NewRequest(http.MethodPost, "/v1/tickets", strings.NewReader(`{"subject":"Charged twice"}`))
	req.Header.Set(idempotency.DefaultHeader, key)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}

// BenchmarkIdempotentRequest is a first request on a warm pool: claim, run, complete, commit.
func BenchmarkIdempotentRequest(b *testing.B) {
	bb := setup(b)
	h := bb.store.Handler(bb.options(), created)
	benchRequest(b, h, "warm-up")
	for i := 0; b.Loop(); i++ {
		benchRequest(b, h, "key-"+strconv.Itoa(i))
	}
}

// BenchmarkReplay is a repeat of a completed request: one read, no write.
func BenchmarkReplay(b *testing.B) {
	bb := setup(b)
	h := bb.store.Handler(bb.options(), created)
	benchRequest(b, h, "key-1")
	for b.Loop() {
		benchRequest(b, h, "key-1")
	}
}
