package function_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/function"
	"github.com/portal-functions/portal-functions/shared/web"
)

// A function's MaxBody is the limit its requests are held to before its handler runs: zero
// keeps web's default, a larger one lets bigger bodies reach the handler.
func TestHTTPMaxBody(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		maxBody int64
		size    int
		status  int
	}{
		{name: "default refuses over 64 KiB", maxBody: 0, size: web.DefaultMaxBody + 1, status: http.StatusRequestEntityTooLarge},
		{name: "default accepts 64 KiB", maxBody: 0, size: web.DefaultMaxBody, status: http.StatusOK},
		{name: "a larger limit lets the body through", maxBody: 4 * web.DefaultMaxBody, size: web.DefaultMaxBody + 1, status: http.StatusOK},
		{name: "a larger limit still refuses beyond it", maxBody: 4 * web.DefaultMaxBody, size: 4*web.DefaultMaxBody + 1, status: http.StatusRequestEntityTooLarge},
		{name: "a smaller limit refuses sooner", maxBody: 1 << 10, size: 1<<10 + 1, status: http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			def := function.HTTP[struct{}]{
				Name:    "echo",
				MaxBody: tc.maxBody,
				Build: func(context.Context, function.Deps, struct{}) (http.Handler, error) {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						n, err := io.Copy(io.Discard, r.Body)
						if err != nil {
							web.Error(w, r, err)
							return
						}
						web.JSON(w, http.StatusOK, map[string]int64{"read": n})
					}), nil
				},
			}
			h, err := def.Handler(context.Background(), function.Deps{
				Logger: slog.New(slog.DiscardHandler),
				Lookup: func(string) (string, bool) { return "", false },
			})
			require.NoError(t, err)
			for _, chunked := range []bool{false, true} {
				req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("a", tc.size)))
				if chunked {
					req.ContentLength = -1 // no declared length: the limit cuts the body while it is read
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				require.Equal(t, tc.status, rec.Code, "chunked=%v: %s", chunked, rec.Body.String())
			}
		})
	}
}

// An HTTP function's Lambda instance runs Go with one P unless its environment sets
// GOMAXPROCS, which then wins.
func TestHTTPInstancesRunOneProcUnlessGOMAXPROCSIsSet(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	require.True(t, function.OneProc(env(map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"})))
	require.False(t, function.OneProc(env(map[string]string{"GOMAXPROCS": "2"})))
}
