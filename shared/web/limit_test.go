package web

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// limitBundle serves two routes over real HTTP behind one Limiter of one slot: the webhook
// behind the limiter itself (refused at once while overloaded) and the portal behind an
// OverloadWait view of a minute. A request with ?hold=1 keeps its slot until release is
// called.
type limitBundle struct {
	limit   *Limiter
	url     string
	entered chan struct{}
	mu      sync.Mutex
	hold    chan struct{} // closed by release, which makes the next one
}

// release lets every held request finish.
func (b *limitBundle) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.hold)
	b.hold = make(chan struct{})
}

func setupLimit(t *testing.T, q Queue) *limitBundle {
	t.Helper()
	b := &limitBundle{limit: NewQueuedLimiter(1, 1, q), entered: make(chan struct{}, 16), hold: make(chan struct{})}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		hold := b.hold
		b.mu.Unlock()
		b.entered <- struct{}{}
		if r.URL.Query().Get("hold") == "1" {
			<-hold
		}
		w.WriteHeader(http.StatusCreated)
	})
	logger := slog.New(slog.DiscardHandler)
	mux := http.NewServeMux()
	mux.Handle("POST /v1/webhooks/stripe", Wrap(h, Options{Logger: logger, Limit: b.limit}))
	mux.Handle("POST /v1/tickets", Wrap(h, Options{Logger: logger, Limit: b.limit.OverloadWait(time.Minute)}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(b.release) // runs first: Close waits for the held request
	b.url = srv.URL
	return b
}

// send posts to path and returns the status, refusing anything but 201 and a well-formed 503.
// The client gives up after 30 s: a request the limiter should refuse at once while its wait
// is a minute fails the test instead of passing late.
func (b *limitBundle) send(t *testing.T, path string) int {
	t.Helper()
	status, err := b.sendContext(context.Background(), t, path)
	if err != nil {
		t.Error(err)
	}
	return status
}

func (b *limitBundle) sendContext(ctx context.Context, t *testing.T, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+path, nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusServiceUnavailable {
		var p problem.Problem
		require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
		require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
		require.Equal(t, "1", res.Header.Get("Retry-After"))
	}
	return res.StatusCode, nil
}

// goSend sends in the background; the status arrives on the returned channel.
func (b *limitBundle) goSend(t *testing.T, path string) <-chan int {
	out := make(chan int, 1)
	go func() { out <- b.send(t, path) }()
	return out
}

// goSendContext sends in the background until ctx is done; the channel closes when it ends.
func (b *limitBundle) goSendContext(ctx context.Context, t *testing.T, path string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := b.sendContext(ctx, t, path)
		assert.ErrorIs(t, err, context.Canceled)
	}()
	return done
}

// waiters waits until n requests wait for a slot.
func (b *limitBundle) waiters(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return b.limit.q.waiting.Load() == int32(n) }, 10*time.Second, time.Millisecond)
}

// While every slot is taken by a stall (here a held request), webhook deliveries and portal
// requests alike wait for a slot and are served once it frees: a stall the server drains
// within the wait (a slow WAL fsync holds every commit behind it) refuses nobody.
func TestAStallIsWaitedOutNotShed(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, Queue{Wait: time.Minute, Cooldown: time.Hour, PerSlot: 4})
	held := b.goSend(t, "/v1/webhooks/stripe?hold=1")
	<-b.entered

	webhook := b.goSend(t, "/v1/webhooks/stripe")
	ticket := b.goSend(t, "/v1/tickets")
	b.waiters(t, 2)

	b.release()
	require.Equal(t, http.StatusCreated, <-held)
	require.Equal(t, http.StatusCreated, <-webhook, "the waiting delivery got a slot")
	require.Equal(t, http.StatusCreated, <-ticket, "the waiting ticket got a slot")
}

// The wait is bounded: a request that gets no slot within it is refused (503 with Retry-After),
// and so is one arriving while PerSlot per slot already wait.
func TestARequestIsShedAfterItsWaitOrPastTheQueue(t *testing.T) {
	t.Parallel()
	short := setupLimit(t, Queue{Wait: 20 * time.Millisecond, Cooldown: time.Hour, PerSlot: 4})
	go short.send(t, "/v1/webhooks/stripe?hold=1")
	<-short.entered
	require.Equal(t, http.StatusServiceUnavailable, short.send(t, "/v1/webhooks/stripe"), "no slot came free within the wait")

	long := setupLimit(t, Queue{Wait: time.Minute, Cooldown: time.Hour, PerSlot: 4})
	held := long.goSend(t, "/v1/webhooks/stripe?hold=1")
	<-long.entered
	var queued []<-chan int
	for range 4 {
		queued = append(queued, long.goSend(t, "/v1/tickets"))
	}
	long.waiters(t, 4)
	require.Equal(t, http.StatusServiceUnavailable, long.send(t, "/v1/tickets"), "the queue is full: refused at once")

	long.release()
	require.Equal(t, http.StatusCreated, <-held)
	for i, q := range queued {
		require.Equal(t, http.StatusCreated, <-q, "queued request %d", i)
	}
}

// After a refusal the limiter is overloaded for its cooldown: a webhook delivery that finds no
// free slot is refused at once rather than queued (its wait would be a minute; the client
// gives up after 30 s), while a portal request still waits up to its view's overload wait and
// gets the next freed slot. Once the cooldown has passed without a refusal, deliveries queue
// again. A client that hangs up while it waits leaves the queue.
func TestAfterARefusalTheWebhookIsShedAtOnceUntilTheCooldownPasses(t *testing.T) {
	t.Parallel()
	const cooldown = 200 * time.Millisecond
	b := setupLimit(t, Queue{Wait: time.Minute, Cooldown: cooldown, PerSlot: 2})
	held := b.goSend(t, "/v1/webhooks/stripe?hold=1")
	<-b.entered
	ticket := b.goSend(t, "/v1/tickets")
	ctx, hangUp := context.WithCancel(context.Background())
	gone := b.goSendContext(ctx, t, "/v1/tickets")
	b.waiters(t, 2)
	require.Equal(t, http.StatusServiceUnavailable, b.send(t, "/v1/tickets"), "the queue is full: the first refusal")
	refused := time.Now()
	hangUp()
	<-gone
	b.waiters(t, 1)

	require.Equal(t, http.StatusServiceUnavailable, b.send(t, "/v1/webhooks/stripe"), "overloaded: the delivery is shed at once")
	b.release()
	require.Equal(t, http.StatusCreated, <-held)
	require.Equal(t, http.StatusCreated, <-ticket)

	held = b.goSend(t, "/v1/webhooks/stripe?hold=1")
	<-b.entered
	time.Sleep(time.Until(refused.Add(2 * cooldown))) // a slower machine only makes it later
	waiting := b.goSend(t, "/v1/webhooks/stripe")
	b.waiters(t, 1)
	b.release()
	require.Equal(t, http.StatusCreated, <-held)
	require.Equal(t, http.StatusCreated, <-waiting, "past the cooldown the delivery waited for the slot")
}
