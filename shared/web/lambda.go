package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-lambda-go/events"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// LambdaHandler is what lambda.Start receives for an HTTP function. Being a lambda.Handler
// (Invoke), it decodes the runtime's JSON event itself.
type LambdaHandler func(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error)

// Invoke answers one invocation as lambda.Start would through its reflection, decoding the
// event, calling f and encoding the answer, except that only the fields RequestFromEvent reads
// are decoded: HTTP API also sends the authorizer's claims, the query as a map, the stage
// variables and a dozen strings the request never needs, which encoding/json would allocate
// on every invocation. The event is decoded by encoding/json/v2's decoder
// (go-json-experiment/json), which validates as it decodes rather than scanning the event once
// more first, and unescapes the body (most of the event) in one pass. A name twice is read
// as encoding/json reads it (the last one wins), without tracking every object's names for
// duplicates; an event it refuses is decoded by encoding/json, as lambda.Start would.
func (f LambdaHandler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	var in invocation
	if err := jsonv2.Unmarshal(payload, &in, jsontext.AllowDuplicateNames(true)); err != nil {
		in = invocation{}
		if err := json.Unmarshal(payload, &in); err != nil {
			return nil, err
		}
	}
	res, err := f(ctx, events.APIGatewayV2HTTPRequest{
		RawPath: in.RawPath, RawQueryString: in.RawQueryString, Cookies: in.Cookies, Headers: in.Headers,
		PathParameters: in.PathParameters, Body: in.Body, IsBase64Encoded: in.IsBase64Encoded,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			Stage: in.RequestContext.Stage, RequestID: in.RequestContext.RequestID, DomainName: in.RequestContext.DomainName,
			HTTP: in.RequestContext.HTTP,
		},
	})
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

// invocation is the part of an API Gateway HTTP API event (events.APIGatewayV2HTTPRequest,
// same names) that RequestFromEvent reads.
type invocation struct {
	RawPath        string            `json:"rawPath"`
	RawQueryString string            `json:"rawQueryString"`
	Cookies        []string          `json:"cookies"`
	Headers        map[string]string `json:"headers"`
	PathParameters map[string]string `json:"pathParameters"`
	RequestContext struct {
		Stage      string                                               `json:"stage"`
		RequestID  string                                               `json:"requestId"`
		DomainName string                                               `json:"domainName"`
		HTTP       events.APIGatewayV2HTTPRequestContextHTTPDescription `json:"http"`
	} `json:"requestContext"`
	Body            string `json:"body"`
	IsBase64Encoded bool   `json:"isBase64Encoded"`
}

// Lambda adapts h to API Gateway HTTP API events (payload format 2.0): the request gets the
// Lambda context (and so its deadline), the raw path and query, headers, cookies, a decoded
// body and the route's path parameters; the response's headers, cookies and body (base64 when
// it is not text) go back in the event's shape. Errors become responses, never Lambda errors,
// so API Gateway never answers a bare 500.
func Lambda(h http.Handler) LambdaHandler {
	return func(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
		r, err := RequestFromEvent(ctx, ev)
		w := &lambdaWriter{header: http.Header{}}
		if err != nil {
			Error(w, r, err)
		} else {
			h.ServeHTTP(w, r)
		}
		return w.event(), nil
	}
}

// lambdaWriter is what the handler of one invocation writes its answer to: as
// httptest.ResponseRecorder records it (the status, the headers as they were when it was
// written, the body; a Content-Type sniffed from the body when the handler set none), without
// the http.Response that ResponseToEvent would read it back from.
type lambdaWriter struct {
	header http.Header
	sent   http.Header // header when the status was written
	status int
	body   bytes.Buffer
}

func (w *lambdaWriter) Header() http.Header { return w.header }

func (w *lambdaWriter) WriteHeader(code int) {
	if w.sent == nil {
		w.status, w.sent = code, w.header.Clone()
	}
}

func (w *lambdaWriter) Write(b []byte) (int, error) {
	if w.sent == nil {
		if _, typed := w.header["Content-Type"]; !typed && w.header.Get("Transfer-Encoding") == "" {
			w.header.Set("Content-Type", http.DetectContentType(b))
		}
		w.WriteHeader(http.StatusOK)
	}
	return w.body.Write(b)
}

// Flush is a no-op: the answer goes back whole, as the invocation's result.
func (w *lambdaWriter) Flush() {}

func (w *lambdaWriter) event() events.APIGatewayV2HTTPResponse {
	w.WriteHeader(http.StatusOK)
	return responseEvent(w.status, w.sent, w.body.Bytes())
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
	return responseEvent(res.StatusCode, res.Header, body), nil
}

// responseEvent is the event API Gateway expects for an answer: headers joined as HTTP API
// joins them, cookies apart, the body base64 when it is not text.
func responseEvent(status int, header http.Header, body []byte) events.APIGatewayV2HTTPResponse {
	out := events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    make(map[string]string, len(header)),
	}
	var cookieKeys []string // "Set-Cookie", and any spelling of it set on the map directly
	for k, vs := range header {
		if http.CanonicalHeaderKey(k) == "Set-Cookie" {
			cookieKeys = append(cookieKeys, k)
			continue
		}
		out.Headers[k] = strings.Join(vs, ", ")
	}
	slices.Sort(cookieKeys)
	for _, k := range cookieKeys {
		out.Cookies = append(out.Cookies, header[k]...)
	}
	if isText(header.Get("Content-Type")) || len(body) == 0 {
		out.Body = string(body)
	} else {
		out.Body = base64.StdEncoding.EncodeToString(body)
		out.IsBase64Encoded = true
	}
	return out
}

// textTypes remembers isText's answer per Content-Type: a function answers with a handful of
// them, and parsing one costs a map and a few strings per response.
var textTypes sync.Map // string -> bool

func isText(contentType string) bool {
	if v, ok := textTypes.Load(contentType); ok {
		return v.(bool)
	}
	text := false
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		text = strings.HasPrefix(mt, "text/") || mt == "application/json" ||
			strings.HasSuffix(mt, "+json") || mt == "application/xml" || strings.HasSuffix(mt, "+xml") ||
			mt == "application/yaml" || mt == "application/javascript"
	}
	if len(contentType) <= 256 {
		textTypes.Store(contentType, text)
	}
	return text
}
