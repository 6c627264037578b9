package auth_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/auth"
	"github.com/portal-functions/portal-functions/shared/auth/authtest"
	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/telemetry"
	"github.com/portal-functions/portal-functions/shared/telemetry/telemetrytest"
	"github.com/portal-functions/portal-functions/shared/web"
)

type routeBundle struct {
	bundle
	srv  *httptest.Server
	logs *telemetrytest.Buffer
}

// setupRoute serves a route behind web.Wrap and Require, answering the identity it saw.
func setupRoute(t *testing.T, opts ...auth.Option) routeBundle {
	t.Helper()
	b := setup(t)
	logs := &telemetrytest.Buffer{}
	route := auth.Require(b.v, opts...)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := auth.FromContext(r.Context())
		if !ok {
			web.Error(w, r, problem.Internal(nil))
			return
		}
		web.JSON(w, http.StatusOK, map[string]any{"user_id": id.UserID, "email": id.Email, "anonymous": id.IsAnonymous})
	}))
	srv := httptest.NewServer(web.Wrap(route, web.Options{Logger: telemetry.NewLogger(logs, "test", slog.LevelDebug)}))
	t.Cleanup(srv.Close)
	return routeBundle{bundle: b, srv: srv, logs: logs}
}

func (b routeBundle) get(t *testing.T, authorization string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.srv.URL+"/v1/account", nil)
	require.NoError(t, err)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := b.srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, body
}

func TestRequireLetsSignedInUsersThrough(t *testing.T) {
	t.Parallel()
	b := setupRoute(t)
	for _, alg := range []string{auth.ES256, auth.RS256, auth.HS256} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			user := uuid.New()
			tok := b.iss.Token(t, user, authtest.WithAlg(alg), authtest.WithEmail("ada@example.com"))

			res, body := b.get(t, "Bearer "+tok)

			require.Equal(t, http.StatusOK, res.StatusCode, string(body))
			require.JSONEq(t, `{"user_id":"`+user.String()+`","email":"ada@example.com","anonymous":false}`, string(body))
			// The request's log line names the user by hash only.
			require.Contains(t, b.logs.String(), `"user":"`+telemetry.HashUser(user.String())+`"`)
			require.NotContains(t, b.logs.String(), user.String())
		})
	}
}

func TestRequireAcceptsTheSchemeInAnyCase(t *testing.T) {
	t.Parallel()
	b := setupRoute(t)

	res, body := b.get(t, "bearer "+b.iss.Token(t, b.user))

	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
}

func TestRequireRefusesWithoutSayingWhy(t *testing.T) {
	t.Parallel()
	b := setupRoute(t)
	expired := b.iss.Token(t, b.user, authtest.WithExpiry(time.Now().Add(-time.Hour)))
	tests := []struct {
		name          string
		authorization string
		status        int
		reason        string // logged, never sent
	}{
		{"no header", "", http.StatusUnauthorized, auth.ErrMissingToken.Error()},
		{"basic scheme", "Basic dXNlcjpwYXNz", http.StatusUnauthorized, auth.ErrMalformedToken.Error()},
		{"bearer without token", "Bearer ", http.StatusUnauthorized, auth.ErrMalformedToken.Error()},
		{"token with spaces", "Bearer a b", http.StatusUnauthorized, auth.ErrMalformedToken.Error()},
		{"garbage", "Bearer not.a.jwt", http.StatusUnauthorized, auth.ErrMalformedToken.Error()},
		{"expired", "Bearer " + expired, http.StatusUnauthorized, auth.ErrExpired.Error()},
		{"wrong audience", "Bearer " + b.iss.Token(t, b.user, authtest.WithAudience("anon")), http.StatusUnauthorized, auth.ErrWrongAudience.Error()},
		{"anon role", "Bearer " + b.iss.Token(t, b.user, authtest.WithRole("anon"), authtest.WithAudience("anon", "authenticated")), http.StatusUnauthorized, auth.ErrWrongRole.Error()},
		{"service_role", "Bearer " + b.iss.Token(t, b.user, authtest.WithRole("service_role"), authtest.WithAlg(auth.HS256)), http.StatusUnauthorized, auth.ErrWrongRole.Error()},
		{"no role", "Bearer " + b.iss.Token(t, b.user, authtest.WithClaims(map[string]any{"role": nil})), http.StatusUnauthorized, auth.ErrWrongRole.Error()},
		{"anonymous user", "Bearer " + b.iss.Token(t, b.user, authtest.WithAnonymous()), http.StatusForbidden, auth.ErrAnonymous.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			res, body := b.get(t, tc.authorization)

			require.Equal(t, tc.status, res.StatusCode, string(body))
			require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
			if tc.status == http.StatusUnauthorized {
				require.Equal(t, `Bearer error="invalid_token"`, res.Header.Get("WWW-Authenticate"))
			}
			var p problem.Problem
			require.NoError(t, json.Unmarshal(body, &p))
			require.Equal(t, tc.status, p.Status)
			require.NotEmpty(t, p.RequestID)
			require.Equal(t, res.Header.Get(web.HeaderRequestID), p.RequestID)
			require.NotContains(t, strings.ToLower(string(body)), tc.reason)
			// The reason is in the log, on a line with the request id.
			var found bool
			for line := range strings.Lines(b.logs.String()) {
				if strings.Contains(line, p.RequestID) && strings.Contains(line, `"reason":"`+tc.reason+`"`) {
					found = true
				}
			}
			require.True(t, found, "no log line with the reason %q for request %s:\n%s", tc.reason, p.RequestID, b.logs.String())
		})
	}
}

func TestRequireAllowAnonymousLetsAnonymousUsersThrough(t *testing.T) {
	t.Parallel()
	b := setupRoute(t, auth.AllowAnonymous())

	res, body := b.get(t, "Bearer "+b.iss.Token(t, b.user, authtest.WithAnonymous()))
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))
	require.JSONEq(t, `{"user_id":"`+b.user.String()+`","email":"","anonymous":true}`, string(body))

	// Opting in to anonymous users does not open the route to other roles.
	res, _ = b.get(t, "Bearer "+b.iss.Token(t, b.user, authtest.WithRole("service_role")))
	require.Equal(t, http.StatusUnauthorized, res.StatusCode)
}

func TestBearerTokenRefusesRepeatedHeaders(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Add("Authorization", "Bearer a")
	r.Header.Add("Authorization", "Bearer b")

	_, err := auth.BearerToken(r)

	require.ErrorIs(t, err, auth.ErrMalformedToken)
}
