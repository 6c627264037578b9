package web

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// limitBundle serves two routes over real HTTP behind one Limiter of one slot: the webhook
// behind the limiter itself (refused at once) and the portal behind a Waiting view. A
// request with ?hold=1 keeps its slot until release is called.
type limitBundle struct {
	limit   *Limiter
	url     string
	entered chan struct{}
	release func()
}

func setupLimit(t *testing.T, wait time.Duration) limitBundle {
	t.Helper()
	b := limitBundle{limit: NewLimiter(1, 1), entered: make(chan struct{}, 16)}
	hold := make(chan struct{})
	released := false
	b.release = func() {
		if !released {
			released = true
			close(hold)
		}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.entered <- struct{}{}
		if r.URL.Query().Get("hold") == "1" {
			<-hold
		}
		w.WriteHeader(http.StatusCreated)
	})
	logger := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	mux.Handle("POST /v1/webhooks/stripe", Wrap(h, Options{Logger: logger, Limit: b.limit}))
	mux.Handle("POST /v1/tickets", Wrap(h, Options{Logger: logger, Limit: b.limit.Waiting(wait)}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(b.release) // runs first: Close waits for the held request
	b.url = srv.URL
	return b
}

// send posts to path and returns the status, refusing anything but 201 and a well-formed 503.
func (b limitBundle) send(t *testing.T, path string) int {
	t.Helper()
	res, err := http.Post(b.url+path, "application/json", nil)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusServiceUnavailable {
		var p problem.Problem
		require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
		require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
		require.Equal(t, "1", res.Header.Get("Retry-After"))
	}
	return res.StatusCode
}

// goSend sends in the background; the status arrives on the returned channel.
func (b limitBundle) goSend(t *testing.T, path string) <-chan int {
	out := make(chan int, 1)
	go func() { out <- b.send(t, path) }()
	return out
}

// While every slot is taken, a webhook delivery is refused at once with 503 and Retry-After
// (Stripe retries it), but a portal request waits for the slot and is served when it frees:
// a user's ticket is not lost to a burst that the server drains within the wait.
func TestPortalRequestsWaitForASlotWhileTheWebhookIsShedAtOnce(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, time.Minute)
	held := b.goSend(t, "/v1/webhooks/stripe?hold=1")
	<-b.entered

	require.Equal(t, http.StatusServiceUnavailable, b.send(t, "/v1/webhooks/stripe"), "the webhook is shed at once")
	waiting := b.goSend(t, "/v1/tickets")
	require.Eventually(t, func() bool { return b.limit.waiting.Load() == 1 }, 10*time.Second, time.Millisecond)
	require.Equal(t, http.StatusServiceUnavailable, b.send(t, "/v1/webhooks/stripe"), "the slot is still taken for everyone")

	b.release()
	require.Equal(t, http.StatusCreated, <-held)
	require.Equal(t, http.StatusCreated, <-waiting, "the waiting ticket got the freed slot")
}

// The wait is bounded: a portal request that gets no slot within it is refused like any
// other (503 with Retry-After), and so is one arriving while 4 per slot already wait.
func TestPortalRequestsAreShedAfterTheirWaitOrPastTheQueue(t *testing.T) {
	t.Parallel()
	short := setupLimit(t, 20*time.Millisecond)
	go short.send(t, "/v1/webhooks/stripe?hold=1")
	<-short.entered
	require.Equal(t, http.StatusServiceUnavailable, short.send(t, "/v1/tickets"), "no slot came free within the wait")

	long := setupLimit(t, time.Minute)
	held := long.goSend(t, "/v1/webhooks/stripe?hold=1")
	<-long.entered
	var queued []<-chan int
	for range waitersPerSlot {
		queued = append(queued, long.goSend(t, "/v1/tickets"))
	}
	require.Eventually(t, func() bool { return long.limit.waiting.Load() == waitersPerSlot }, 10*time.Second, time.Millisecond)
	require.Equal(t, http.StatusServiceUnavailable, long.send(t, "/v1/tickets"), "the queue is full: refused at once")

	long.release()
	require.Equal(t, http.StatusCreated, <-held)
	for i, q := range queued {
		require.Equal(t, http.StatusCreated, <-q, "queued request %d", i)
	}
}
