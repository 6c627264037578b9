package portal

import (
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// SampleEvent builds an API Gateway HTTP API (payload 2.0) request for the portal's routes, in
// the shape of aws-lambda-go's events/testdata payloads, carrying token as a Bearer token.
// routeKey is the template's route ("GET /v1/tickets/{id}"); target is the concrete path and
// query ("/v1/tickets/3b7e…?limit=5"). `make events` and the sample-event tests use it; the
// token is refreshed in place by demo.Signer.Refresh, so the files keep their layout.
func SampleEvent(routeKey, target, token string, headers map[string]string, body string) events.APIGatewayV2HTTPRequest {
	method, route, _ := strings.Cut(routeKey, " ")
	u, _ := url.Parse(target)
	h := map[string]string{
		"accept":            "application/json",
		"authorization":     "Bearer " + token,
		"host":              "aaaaaaaaaa.execute-api.us-east-1.amazonaws.com",
		"user-agent":        "Mozilla/5.0 (portal)",
		"x-forwarded-for":   "203.0.113.10",
		"x-forwarded-port":  "443",
		"x-forwarded-proto": "https",
	}
	for k, v := range headers {
		h[strings.ToLower(k)] = v
	}
	ev := events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       routeKey,
		RawPath:        u.Path,
		RawQueryString: u.RawQuery,
		Headers:        h,
		Body:           body,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:     routeKey,
			AccountID:    "123456789012",
			Stage:        "$default",
			RequestID:    "sample-" + strings.ToLower(strings.NewReplacer("/", "-", "{", "", "}", "", " ", "").Replace(routeKey)),
			APIID:        "aaaaaaaaaa",
			DomainName:   "aaaaaaaaaa.execute-api.us-east-1.amazonaws.com",
			DomainPrefix: "aaaaaaaaaa",
			Time:         "27/Nov/2026:12:00:00 +0000",
			TimeEpoch:    time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: method, Path: u.Path, Protocol: "HTTP/1.1", SourceIP: "203.0.113.10", UserAgent: "Mozilla/5.0 (portal)",
			},
		},
	}
	if q := u.Query(); len(q) > 0 {
		ev.QueryStringParameters = map[string]string{}
		for k, v := range q {
			ev.QueryStringParameters[k] = strings.Join(v, ",")
		}
	}
	if strings.Contains(route, "{id}") {
		ev.PathParameters = map[string]string{"id": u.Path[strings.LastIndex(u.Path, "/")+1:]}
	}
	return ev
}
