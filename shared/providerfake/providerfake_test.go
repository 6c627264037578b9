package providerfake_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/providerfake"
)

func TestParseModeReadsWhatStringWrites(t *testing.T) {
	t.Parallel()
	for _, m := range []providerfake.Mode{providerfake.ModeUp, providerfake.ModeDown, providerfake.ModeRateLimited} {
		got, err := providerfake.ParseMode(" " + strings.ToUpper(m.String()) + "\n")
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
	_, err := providerfake.ParseMode("flaky")
	require.ErrorIs(t, err, providerfake.ErrUnknownMode)
}

// A stand-in (here a bare one) answers in the mode it is switched to, counts every request,
// and a request held back by latency ends when the client gives up or the fake closes.
type standin struct{ providerfake.Switch }

func (s *standin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode, ok := s.Enter(r)
	if !ok {
		return
	}
	switch mode {
	case providerfake.ModeDown:
		w.WriteHeader(http.StatusServiceUnavailable)
	case providerfake.ModeRateLimited:
		w.WriteHeader(http.StatusTooManyRequests)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

func TestSwitchModesAndCalls(t *testing.T) {
	t.Parallel()
	var s standin
	srv := httptest.NewServer(&s)
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		mode providerfake.Mode
		want int
	}{
		{providerfake.ModeUp, http.StatusOK},
		{providerfake.ModeDown, http.StatusServiceUnavailable},
		{providerfake.ModeRateLimited, http.StatusTooManyRequests},
		{providerfake.ModeUp, http.StatusOK},
	} {
		s.SetMode(tc.mode)
		res, err := http.Get(srv.URL)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, tc.want, res.StatusCode, tc.mode.String())
	}
	require.Equal(t, 4, s.Calls())
}

func TestSwitchLatencyEndsWhenTheClientGivesUp(t *testing.T) {
	t.Parallel()
	var s standin
	s.SetLatency(time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	_, ok := s.Enter(r)
	require.False(t, ok, "a client that left gets nothing")
	require.Equal(t, 1, s.Calls())
}

func TestSwitchCloseReleasesHeldRequests(t *testing.T) {
	t.Parallel()
	var s standin
	s.SetLatency(time.Hour)
	done := make(chan bool)
	go func() {
		_, ok := s.Enter(httptest.NewRequest(http.MethodGet, "/", nil))
		done <- ok
	}()
	s.Close()
	require.False(t, <-done)
	s.Close() // twice is fine
}

func TestControlListsAndSwitches(t *testing.T) {
	t.Parallel()
	var hub, desk standin
	srv := httptest.NewServer(providerfake.Control("/_dev/providers",
		providerfake.Provider{Name: "hubspot", URL: "http://127.0.0.1:3011", Switch: &hub},
		providerfake.Provider{Name: "zendesk", URL: "http://127.0.0.1:3012", Switch: &desk},
		providerfake.Provider{Name: "stripe", Note: "the real service (STRIPE_API_KEY is set)"},
	))
	t.Cleanup(srv.Close)
	call := func(method, path string) (int, string) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(body)
	}

	for _, tc := range []struct {
		name, path string
		want       int
	}{
		{"switch a stand-in down", "/_dev/providers/zendesk/down", http.StatusOK},
		{"unknown mode", "/_dev/providers/zendesk/sideways", http.StatusBadRequest},
		{"unknown provider", "/_dev/providers/salesforce/down", http.StatusNotFound},
		{"the real service cannot be switched", "/_dev/providers/stripe/down", http.StatusConflict},
	} {
		status, body := call(http.MethodPost, tc.path)
		require.Equal(t, tc.want, status, "%s: %s", tc.name, body)
	}
	require.Equal(t, providerfake.ModeDown, desk.Mode())
	require.Equal(t, providerfake.ModeUp, hub.Mode(), "only the named stand-in switched")

	status, body := call(http.MethodGet, "/_dev/providers")
	require.Equal(t, http.StatusOK, status)
	var states []providerfake.State
	require.NoError(t, json.Unmarshal([]byte(body), &states))
	require.Equal(t, []providerfake.State{
		{Provider: "hubspot", Standin: true, URL: "http://127.0.0.1:3011", Mode: "up"},
		{Provider: "zendesk", Standin: true, URL: "http://127.0.0.1:3012", Mode: "down"},
		{Provider: "stripe", Note: "the real service (STRIPE_API_KEY is set)"},
	}, states)
}
