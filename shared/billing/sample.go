package billing

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// SampleRequest wraps a Stripe event payload in the API Gateway HTTP API (payload 2.0) request
// that delivers it to POST /v1/webhooks/stripe, signed with secret at at: the shape of the
// events/payment-webhook*.json samples.
func SampleRequest(payload []byte, secret string, at time.Time) events.APIGatewayV2HTTPRequest {
	req := events.APIGatewayV2HTTPRequest{
		Version:  "2.0",
		RouteKey: "POST /v1/webhooks/stripe",
		RawPath:  "/v1/webhooks/stripe",
		Headers: map[string]string{
			"content-type":      "application/json; charset=utf-8",
			"host":              "aaaaaaaaaa.execute-api.us-west-2.amazonaws.com",
			"user-agent":        "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
			"x-forwarded-for":   "3.18.12.63",
			"x-forwarded-port":  "443",
			"x-forwarded-proto": "https",
		},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			AccountID:    "123456789012",
			APIID:        "aaaaaaaaaa",
			DomainName:   "aaaaaaaaaa.execute-api.us-west-2.amazonaws.com",
			DomainPrefix: "aaaaaaaaaa",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: "POST", Path: "/v1/webhooks/stripe", Protocol: "HTTP/1.1",
				SourceIP: "3.18.12.63", UserAgent: "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
			},
			RequestID: "sample-payment-webhook",
			RouteKey:  "POST /v1/webhooks/stripe",
			Stage:     "$default",
		},
		Body: string(payload),
	}
	_ = ResignRequest(&req, secret, at)
	return req
}

// ResignRequest gives a sample webhook request a fresh Stripe-Signature for its body, signed
// with secret at at, and stamps its request time (`make events` runs it with the local
// development secret, because a signature older than 300 s is refused).
func ResignRequest(req *events.APIGatewayV2HTTPRequest, secret string, at time.Time) error {
	body := []byte(req.Body)
	if req.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(req.Body); err != nil {
			return fmt.Errorf("resign sample: decode body: %w", err)
		}
	}
	if req.Headers == nil {
		req.Headers = map[string]string{}
	}
	for k := range req.Headers {
		if strings.EqualFold(k, SignatureHeader) {
			delete(req.Headers, k)
		}
	}
	req.Headers[strings.ToLower(SignatureHeader)] = SignedTestEvent(secret, body, at)
	req.Headers["content-length"] = fmt.Sprint(len(body))
	req.RequestContext.TimeEpoch = at.UnixMilli()
	req.RequestContext.Time = at.UTC().Format("02/Jan/2006:15:04:05 -0700")
	return nil
}
