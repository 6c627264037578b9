package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"

	"github.com/aws/aws-lambda-go/events"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// LambdaHandler is what lambda.Start receives for an HTTP function.
type LambdaHandler func(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error)

// Lambda adapts h to API Gateway HTTP API events (payload format 2.0): the request gets the
// Lambda context (and so its deadline), the raw path and query, headers, cookies, a decoded
// body and the route's path parameters; the response's headers, cookies and body (base64 when
// it is not text) go back in the event's shape. Errors become responses, never Lambda errors,
// so API Gateway never answers a bare 500.
func Lambda(h http.Handler) LambdaHandler {
	return func(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
		r, err := RequestFromEvent(ctx, ev)
		if err != nil {
			rec := httptest.NewRecorder()
			Error(rec, r, err)
			return ResponseToEvent(rec.Result())
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return ResponseToEvent(rec.Result())
	}
}

// RequestFromEvent builds the http.Request an API Gateway HTTP API event describes.
func RequestFromEvent(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (*http.Request, error) {
	method := ev.RequestContext.HTTP.Method
	if method == "" {
		method = http.MethodGet
	}
	path := ev.RawPath
	if path == "" {
		path = ev.RequestContext.HTTP.Path
	}
	// Under a named stage the raw path starts with it; routes do not.
	if st := ev.RequestContext.Stage; st != "" && st != "$default" {
		path = strings.TrimPrefix(path, "/"+st)
	}
	if path == "" {
		path = "/"
	}
	u := &url.URL{Path: path, RawQuery: ev.RawQueryString}
	if p, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = p, path
	}

	var body []byte
	var bodyErr error
	if ev.IsBase64Encoded {
		body, bodyErr = base64.StdEncoding.DecodeString(ev.Body)
	} else {
		body = []byte(ev.Body)
	}
	r, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		r = httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
		return r, fmt.Errorf("build request from event: %w", err)
	}
	r.RequestURI = u.RequestURI()
	for k, v := range ev.Headers {
		// HTTP API joins repeated headers with commas; keep them as one value as net/http would.
		r.Header.Set(k, v)
	}
	if len(ev.Cookies) > 0 {
		r.Header.Set("Cookie", strings.Join(ev.Cookies, "; "))
	}
	if h := r.Header.Get("Host"); h != "" {
		r.Host = h
	} else {
		r.Host = ev.RequestContext.DomainName
	}
	r.ContentLength = int64(len(body))
	r.RemoteAddr = ev.RequestContext.HTTP.SourceIP
	if ev.RequestContext.RequestID != "" && r.Header.Get(HeaderRequestID) == "" {
		r.Header.Set(HeaderRequestID, ev.RequestContext.RequestID)
	}
	for k, v := range ev.PathParameters {
		r.SetPathValue(k, v)
	}
	if bodyErr != nil {
		// The caller's body is malformed: a 400, never a 500.
		return r, problem.BadRequest("the request body is not valid base64").WithCause(bodyErr)
	}
	return r, nil
}

// ResponseToEvent turns a recorded response into the event API Gateway expects.
func ResponseToEvent(res *http.Response) (events.APIGatewayV2HTTPResponse, error) {
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return events.APIGatewayV2HTTPResponse{}, fmt.Errorf("read response: %w", err)
	}
	out := events.APIGatewayV2HTTPResponse{
		StatusCode: res.StatusCode,
		Headers:    map[string]string{},
	}
	keys := make([]string, 0, len(res.Header))
	for k := range res.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vs := res.Header[k]
		if http.CanonicalHeaderKey(k) == "Set-Cookie" {
			out.Cookies = append(out.Cookies, vs...)
			continue
		}
		out.Headers[k] = strings.Join(vs, ", ")
	}
	if isText(res.Header.Get("Content-Type")) || len(body) == 0 {
		out.Body = string(body)
	} else {
		out.Body = base64.StdEncoding.EncodeToString(body)
		out.IsBase64Encoded = true
	}
	return out, nil
}

func isText(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "text/") || mt == "application/json" ||
		strings.HasSuffix(mt, "+json") || mt == "application/xml" || strings.HasSuffix(mt, "+xml") ||
		mt == "application/yaml" || mt == "application/javascript"
}
