package web_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/web"
)

// seen is what a handler behind the adapter received.
type seen struct {
	Method, Path, RawQuery, Host, RemoteAddr string
	Query                                    map[string][]string
	Header                                   http.Header
	Cookies                                  []string
	Body                                     string
	Proxy, ID                                string
}

type lambdaBundle struct {
	got     *seen
	handler web.LambdaHandler
}

// setupLambda puts a recording handler behind the adapter; respond writes its answer.
func setupLambda(t *testing.T, respond func(w http.ResponseWriter)) lambdaBundle {
	t.Helper()
	got := &seen{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		*got = seen{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, RemoteAddr: r.RemoteAddr,
			Query: r.URL.Query(), Header: r.Header.Clone(), Body: string(body),
			Proxy: r.PathValue("proxy"), ID: r.PathValue("id"),
		}
		for _, c := range r.Cookies() {
			got.Cookies = append(got.Cookies, c.Name+"="+c.Value)
		}
		if respond != nil {
			respond(w)
		}
	})
	return lambdaBundle{got: got, handler: web.Lambda(h)}
}

// realPayloads are aws-lambda-go's own recorded API Gateway HTTP API (2.0) requests.
func realPayloads(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aws/aws-lambda-go").Output()
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "events", "testdata", "apigw-v2-request-*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return files
}

// readEvent reads a recorded event: its JSON, and the event it decodes to.
func readEvent(t *testing.T, file string) ([]byte, events.APIGatewayV2HTTPRequest) {
	t.Helper()
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	var ev events.APIGatewayV2HTTPRequest
	require.NoError(t, json.Unmarshal(raw, &ev))
	return raw, ev
}

func TestLambdaHandsRealAPIGatewayRequestsToTheHandlerIntact(t *testing.T) {
	t.Parallel()
	for _, file := range realPayloads(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			b := setupLambda(t, nil)
			_, ev := readEvent(t, file)

			res, err := b.handler(context.Background(), ev)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, res.StatusCode)

			require.Equal(t, ev.RequestContext.HTTP.Method, b.got.Method)
			require.Equal(t, ev.RawPath, b.got.Path)
			require.Equal(t, ev.RawQueryString, b.got.RawQuery)
			require.Equal(t, ev.RequestContext.HTTP.SourceIP, b.got.RemoteAddr)
			require.Equal(t, ev.Body, b.got.Body)
			for k, v := range ev.Headers {
				require.Equal(t, v, b.got.Header.Get(k), "header %s", k)
			}
			wantHost := ev.Headers["host"]
			if wantHost == "" {
				wantHost = ev.RequestContext.DomainName
			}
			require.Equal(t, wantHost, b.got.Host)
			require.Equal(t, ev.PathParameters["proxy"], b.got.Proxy)
			if ev.RawQueryString != "" {
				require.Equal(t, []string{"value1", "value2"}, b.got.Query["parameter1"], "repeated query parameters keep every value")
			}
			require.Len(t, b.got.Header.Values("Cookie"), min(1, len(ev.Cookies)), "cookies arrive as one Cookie header")
			if len(ev.Cookies) > 0 {
				require.Equal(t, strings.Join(ev.Cookies, "; "), b.got.Header.Get("Cookie"))
			}
			require.Equal(t, ev.RequestContext.RequestID, b.got.Header.Get(web.HeaderRequestID), "API Gateway's request id carries through")
		})
	}
}

// lambda.Start hands the adapter the runtime's JSON (LambdaHandler.Invoke decodes only what the
// request needs): the handler sees what it sees given the whole decoded event, and the runtime
// gets the same answer.
func TestLambdaInvokedByTheRuntimeSeesTheWholeEvent(t *testing.T) {
	t.Parallel()
	for _, file := range realPayloads(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			raw, ev := readEvent(t, file)
			respond := func(w http.ResponseWriter) {
				w.Header().Add("Set-Cookie", "a=1")
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"ok":true}`))
			}

			direct := setupLambda(t, respond)
			want, err := direct.handler(context.Background(), ev)
			require.NoError(t, err)

			invoked := setupLambda(t, respond)
			out, err := lambda.NewHandler(invoked.handler).Invoke(context.Background(), raw)
			require.NoError(t, err)
			var got events.APIGatewayV2HTTPResponse
			require.NoError(t, json.Unmarshal(out, &got))

			require.Equal(t, *direct.got, *invoked.got)
			require.Equal(t, want, got)
		})
	}
	_, err := lambda.NewHandler(web.Lambda(http.NotFoundHandler())).Invoke(context.Background(), []byte(`{"rawPath": 5}`))
	require.Error(t, err, "an event that is not an HTTP API event fails the invocation, as lambda.Start's decoding would")

	// A name twice is read as encoding/json reads it (the last one wins), and so are
	// headers whose names differ only in case.
	twice := setupLambda(t, nil)
	_, err = lambda.NewHandler(twice.handler).Invoke(context.Background(), []byte(
		`{"rawPath":"/a","rawPath":"/b","headers":{"x-one":"1","X-One":"2"},"requestContext":{"http":{"method":"POST"}},"body":"x"}`))
	require.NoError(t, err)
	require.Equal(t, [3]string{"POST", "/b", "x"}, [3]string{twice.got.Method, twice.got.Path, twice.got.Body})
	require.Len(t, twice.got.Header.Values("X-One"), 1)
}

func TestLambdaDecodesRequestsAsAPIGatewaySendsThem(t *testing.T) {
	t.Parallel()
	binary := []byte{0x00, 0xff, 0x10, 'P', 'K'}
	tests := []struct {
		name  string
		ev    events.APIGatewayV2HTTPRequest
		check func(t *testing.T, got *seen)
	}{
		{
			name: "base64 body",
			ev: events.APIGatewayV2HTTPRequest{RawPath: "/v1/tickets", IsBase64Encoded: true,
				Body: base64.StdEncoding.EncodeToString(binary)},
			check: func(t *testing.T, got *seen) { require.Equal(t, string(binary), got.Body) },
		},
		{
			name: "cookies",
			ev:   events.APIGatewayV2HTTPRequest{RawPath: "/", Cookies: []string{"sb-access=abc", "theme=dark"}},
			check: func(t *testing.T, got *seen) {
				require.Equal(t, []string{"sb-access=abc", "theme=dark"}, got.Cookies)
			},
		},
		{
			name: "repeated header joined by API Gateway",
			ev:   events.APIGatewayV2HTTPRequest{RawPath: "/", Headers: map[string]string{"accept": "application/json,text/plain"}},
			check: func(t *testing.T, got *seen) {
				require.Equal(t, []string{"application/json,text/plain"}, got.Header.Values("Accept"))
			},
		},
		{
			name: "path parameter",
			ev: events.APIGatewayV2HTTPRequest{RawPath: "/v1/tickets/3b7e1d2c-9f8a-4b6c-8d5e-2f1a0b9c8d7e",
				PathParameters: map[string]string{"id": "3b7e1d2c-9f8a-4b6c-8d5e-2f1a0b9c8d7e"}},
			check: func(t *testing.T, got *seen) { require.Equal(t, "3b7e1d2c-9f8a-4b6c-8d5e-2f1a0b9c8d7e", got.ID) },
		},
		{
			name: "named stage prefix is not part of the route",
			ev: func() events.APIGatewayV2HTTPRequest {
				ev := events.APIGatewayV2HTTPRequest{RawPath: "/prod/v1/account"}
				ev.RequestContext.Stage = "prod"
				return ev
			}(),
			check: func(t *testing.T, got *seen) { require.Equal(t, "/v1/account", got.Path) },
		},
		{
			name: "default stage keeps the path",
			ev: func() events.APIGatewayV2HTTPRequest {
				ev := events.APIGatewayV2HTTPRequest{RawPath: "/v1/account"}
				ev.RequestContext.Stage = "$default"
				return ev
			}(),
			check: func(t *testing.T, got *seen) { require.Equal(t, "/v1/account", got.Path) },
		},
		{
			name: "escaped path",
			ev:   events.APIGatewayV2HTTPRequest{RawPath: "/v1/files/a%2Fb%20c"},
			check: func(t *testing.T, got *seen) {
				require.Equal(t, "/v1/files/a/b c", got.Path)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupLambda(t, nil)
			res, err := b.handler(context.Background(), tc.ev)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, res.StatusCode)
			tc.check(t, b.got)
		})
	}
}

func TestLambdaAnswersAMalformedBase64BodyWithAProblem(t *testing.T) {
	t.Parallel()
	b := setupLambda(t, nil)
	res, err := b.handler(context.Background(), events.APIGatewayV2HTTPRequest{RawPath: "/v1/tickets", IsBase64Encoded: true, Body: "%%%not base64"})
	require.NoError(t, err, "a bad request is a response, never a Lambda error")
	require.Equal(t, http.StatusBadRequest, res.StatusCode, "the caller's malformed body is a 400, not our 500")
	require.Equal(t, "application/problem+json", res.Headers["Content-Type"])
	require.NotContains(t, res.Body, "illegal base64", "no internals in the body")
}

func TestLambdaEncodesResponsesAsAPIGatewayExpects(t *testing.T) {
	t.Parallel()
	png := []byte{0x89, 'P', 'N', 'G', 0x00, 0x01}
	tests := []struct {
		name    string
		respond func(w http.ResponseWriter)
		check   func(t *testing.T, res events.APIGatewayV2HTTPResponse)
	}{
		{
			name: "json stays text",
			respond: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte(`{"id":"1"}`))
			},
			check: func(t *testing.T, res events.APIGatewayV2HTTPResponse) {
				require.Equal(t, http.StatusCreated, res.StatusCode)
				require.False(t, res.IsBase64Encoded)
				require.JSONEq(t, `{"id":"1"}`, res.Body)
			},
		},
		{
			name: "problem json stays text",
			respond: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(`{"status":404}`))
			},
			check: func(t *testing.T, res events.APIGatewayV2HTTPResponse) {
				require.False(t, res.IsBase64Encoded)
				require.Equal(t, `{"status":404}`, res.Body)
			},
		},
		{
			name: "binary goes base64",
			respond: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "image/png")
				_, _ = w.Write(png)
			},
			check: func(t *testing.T, res events.APIGatewayV2HTTPResponse) {
				require.True(t, res.IsBase64Encoded)
				got, err := base64.StdEncoding.DecodeString(res.Body)
				require.NoError(t, err)
				require.Equal(t, png, got)
			},
		},
		{
			name: "set-cookie goes to cookies, repeated headers are joined",
			respond: func(w http.ResponseWriter) {
				w.Header().Add("Set-Cookie", "a=1; HttpOnly")
				w.Header().Add("Set-Cookie", "b=2; Secure")
				w.Header().Add("Vary", "Authorization")
				w.Header().Add("Vary", "Accept-Encoding")
			},
			check: func(t *testing.T, res events.APIGatewayV2HTTPResponse) {
				require.Equal(t, []string{"a=1; HttpOnly", "b=2; Secure"}, res.Cookies)
				require.NotContains(t, res.Headers, "Set-Cookie")
				require.Equal(t, "Authorization, Accept-Encoding", res.Headers["Vary"])
			},
		},
		{
			name: "an untyped body is sniffed, and headers set after the status are not sent",
			respond: func(w http.ResponseWriter) {
				_, _ = w.Write([]byte("plain words"))
				w.Header().Set("X-Too-Late", "1")
				w.WriteHeader(http.StatusTeapot) // the status is already 200
			},
			check: func(t *testing.T, res events.APIGatewayV2HTTPResponse) {
				require.Equal(t, http.StatusOK, res.StatusCode)
				require.Equal(t, "text/plain; charset=utf-8", res.Headers["Content-Type"])
				require.NotContains(t, res.Headers, "X-Too-Late")
				require.False(t, res.IsBase64Encoded)
				require.Equal(t, "plain words", res.Body)
			},
		},
		{
			name: "nothing written is an empty 200",
			respond: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/octet-stream")
			},
			check: func(t *testing.T, res events.APIGatewayV2HTTPResponse) {
				require.Equal(t, http.StatusOK, res.StatusCode)
				require.False(t, res.IsBase64Encoded)
				require.Empty(t, res.Body)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupLambda(t, tc.respond)
			res, err := b.handler(context.Background(), events.APIGatewayV2HTTPRequest{RawPath: "/"})
			require.NoError(t, err)
			tc.check(t, res)
		})
	}
}
