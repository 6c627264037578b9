package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/stripe/stripe-go/v76/webhook"
)

// answered is n deliveries of one second answered with status after latency.
func answered(at time.Duration, n, status int, latency time.Duration) []shot {
	out := make([]shot, n)
	for i := range out {
		out[i] = shot{due: at + time.Duration(i)*time.Second/time.Duration(n), status: status, latency: latency}
	}
	return out
}

func second(parts ...[]shot) window {
	var all []shot
	for _, p := range parts {
		all = append(all, p...)
	}
	return judge(all, 0, time.Second)
}

// A second is healthy only with every delivery answered 2xx in time: one refusal, one
// transport error, a slow p95 or too few answers make it unhealthy.
func TestASecondIsHealthyOnlyWhenEveryDeliveryIsAnsweredInTime(t *testing.T) {
	t.Parallel()
	fast, slow := 5*time.Millisecond, 150*time.Millisecond
	cases := []struct {
		name string
		w    window
		want bool
	}{
		{"all fast", second(answered(0, 100, 200, fast)), true},
		{"one shed", second(answered(0, 99, 200, fast), []shot{{due: 999 * time.Millisecond, status: 503}}), false},
		{"one timeout", second(answered(0, 99, 200, fast), []shot{{due: 999 * time.Millisecond, errKind: "timeout"}}), false},
		{"slow p95", second(answered(0, 90, 200, fast), answered(0, 10, 200, slow)), false},
		{"slow beyond the p95", second(answered(0, 96, 200, fast), answered(0, 4, 200, slow)), true},
		{"nothing offered", window{seconds: 1}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, c.w.healthy())
		})
	}
}

// The knee is the last rate healthy before the first that is not, and recovery counts the
// seconds from the drop until every later second is healthy (a relapse restarts it).
func TestKneeAndRecoveryReadTheVerdicts(t *testing.T) {
	t.Parallel()
	ok, bad := second(answered(0, 10, 200, time.Millisecond)), second(answered(0, 10, 503, time.Millisecond))
	require.Equal(t, 1, kneeOf([]window{ok, ok, bad, ok}), "a healthy rate after a failed one is not the knee")
	require.Equal(t, -1, kneeOf([]window{bad, ok}))
	require.Equal(t, 2, kneeOf([]window{ok, ok, ok}))

	require.Equal(t, 0, recoveredAfter([]window{bad, bad, ok, ok}, 2), "healthy from the drop on")
	require.Equal(t, 3, recoveredAfter([]window{bad, bad, bad, ok, bad, ok, ok}, 2), "the relapse at +2 counts")
	require.Equal(t, -1, recoveredAfter([]window{bad, ok, bad}, 1), "still unhealthy at the end")
}

func TestScheduleParses(t *testing.T) {
	t.Parallel()
	s, err := parseSchedule("900x15s, 150x20s")
	require.NoError(t, err)
	require.Equal(t, []phase{{900, 15 * time.Second}, {150, 20 * time.Second}}, s)
	require.Equal(t, "900x15s,150x20s", scheduleFlag(s))
	for _, bad := range []string{"900", "x15s", "900x", "0x15s", "900x100ms"} {
		_, err := parseSchedule(bad)
		require.ErrorIs(t, err, ErrBadSchedule, bad)
	}
}

// The driver sends the schedule's deliveries signed with the webhook's secret, each a Stripe
// event for one of the tenants (a share of them redeliveries of an earlier event), and records
// each answer.
func TestDriverSendsSignedDeliveriesOfTheTenants(t *testing.T) {
	t.Parallel()
	o := webhookOptions{tenants: 3, tenantFormat: "00000000-0000-4000-8000-%012d", dup: 0.3}
	ev, err := newWebhookEvents(o)
	require.NoError(t, err)
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			_, err = webhook.ConstructEventWithOptions(body, r.Header.Get("Stripe-Signature"), ev.secret, webhook.ConstructEventOptions{IgnoreAPIVersionMismatch: true})
		}
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if served.Add(1)%4 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)

	shots, err := drive(context.Background(), srv.URL, []phase{{200, time.Second}}, ev)
	require.NoError(t, err)
	require.Len(t, shots, 200)
	w := judge(shots, 0, time.Second)
	require.Equal(t, 200, w.offered)
	require.Equal(t, 150, w.ok, "every delivery verified")
	require.Equal(t, 50, w.shed)

	ids := map[string]bool{}
	for _, s := range shots {
		var e struct {
			ID   string
			Data struct {
				Object struct {
					Metadata map[string]string
				}
			}
		}
		require.NoError(t, json.Unmarshal(s.body, &e))
		require.Equal(t, s.id, e.ID)
		require.Contains(t, []string{"00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"},
			e.Data.Object.Metadata["tenant_id"])
		ids[s.id] = true
	}
	require.Less(t, len(ids), 180, "some deliveries are redeliveries")
	require.Greater(t, len(ids), 100)
}
