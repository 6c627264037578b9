package billing_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/config"
	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/jobs"
	"github.com/portal-functions/portal-functions/shared/telemetry"
)

// stripeFake is a scripted stand-in for GET /v1/subscriptions/{id} (stripe-mock answers fixed
// fixtures and cannot say a subscription's current state). It answers as Stripe documents:
// the subscription object, 404 with a resource_missing error for an unknown id, and, while
// limited > 0, 429 with a rate_limit error and Retry-After.
type stripeFake struct {
	*httptest.Server
	mu         sync.Mutex
	subs       map[string]map[string]any
	limited    int
	retryAfter string
	reads      map[string]int
}

func newStripeFake(t testing.TB) *stripeFake {
	t.Helper()
	f := &stripeFake{subs: map[string]map[string]any{}, reads: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *stripeFake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	id, ok := strings.CutPrefix(r.URL.Path, "/v1/subscriptions/")
	if r.Method != http.MethodGet || !ok || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer sk_test_") {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","message":"Unrecognized request URL."}}`))
		return
	}
	f.reads[id]++
	if f.limited > 0 {
		f.limited--
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Request rate limit exceeded."}}`))
		return
	}
	sub, ok := f.subs[id]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","code":"resource_missing","param":"id","message":"No such subscription: '` + id + `'"}}`))
		return
	}
	_ = json.NewEncoder(w).Encode(sub)
}

// set makes obj the subscription's state at Stripe.
func (f *stripeFake) set(obj map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[obj["id"].(string)] = obj
}

func (f *stripeFake) readsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads[id]
}

// refresh runs one scheduled invocation of BillingRefreshFunction, as Lambda does (its
// config from the environment names, the measurement, then the billing queue), with its
// Stripe client pointed at f.
func (b *bundle) refresh(t testing.TB, f *stripeFake) jobs.Summary {
	t.Helper()
	env := map[string]string{"STRIPE_API_KEY": "sk_test_refresh", "STRIPE_API_BASE": f.URL}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var cfg billing.RefreshConfig
	require.NoError(t, config.LoadFrom(lookup, &cfg))
	invoke, err := billing.RefreshFunction.Build(t.Context(), function.Deps{
		Name:       "billing-refresh",
		Pool:       b.pool,
		Logger:     telemetry.NewLogger(b.logs, "billing-refresh", slog.LevelInfo),
		Metrics:    telemetry.NewMetrics(b.metrics, "billing-refresh"),
		HTTPClient: http.DefaultClient,
		Lookup:     lookup,
	}, cfg)
	require.NoError(t, err)
	sum, err := invoke(t.Context(), events.EventBridgeEvent{DetailType: "Scheduled Event", Source: "aws.events"})
	require.NoError(t, err)
	return sum
}
