package nudge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go/encoding/httpbinding"
)

// LambdaClient sends Lambda's Invoke API call with InvocationType Event, the one call a nudge
// makes: a POST to /2015-03-31/functions/{FunctionName}/invocations signed with Signature
// Version 4 by the AWS SDK's own signer, with the headers and path escaping the SDK's Lambda
// client sends.
//
// It stands in for the SDK's service client (service/lambda) because that package's
// initialisation (its operation schemas and endpoint tables: about 1.1 ms and 4,700
// allocations) ran at every cold start of every function that imports this package, whether
// or not it ever nudges, for one call whose wire format is small and stable. The signer
// (aws/signer/v4) is the part worth not rewriting, and it is kept.
type LambdaClient struct {
	http     *http.Client
	endpoint string
	region   string
	lookup   func(string) (string, bool)
	signer   *v4.Signer
	// now is the signing clock (time.Now); tests fix it.
	now func() time.Time
}

var _ Invoker = (*LambdaClient)(nil)

// InvokeError is an invoke Lambda answered with an error status: the status, Lambda's error
// type (X-Amzn-ErrorType, e.g. ResourceNotFoundException, TooManyRequestsException) and its
// message.
type InvokeError struct {
	Status  int
	Type    string
	Message string
}

func (e *InvokeError) Error() string {
	return fmt.Sprintf("lambda invoke: %d %s: %s", e.Status, e.Type, e.Message)
}

// emptySHA256 is the hex SHA-256 of an empty body.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// NewLambdaClient builds the Lambda client from the function's own environment, as Lambda sets
// it: AWS_REGION and the execution role's temporary credentials (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), read at each call. AWS_ENDPOINT_URL_LAMBDA (the
// SDKs' standard override) points it at a local stand-in. It never retries: a nudge that
// fails is not worth a second try on a request's time (the schedule is the safety net).
func NewLambdaClient(lookup func(string) (string, bool), httpClient *http.Client) *LambdaClient {
	get := func(k string) string {
		v, _ := lookup(k)
		return v
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	c := &LambdaClient{http: httpClient, region: get("AWS_REGION"), lookup: lookup, signer: v4.NewSigner(), now: time.Now}
	c.endpoint = strings.TrimSuffix(get("AWS_ENDPOINT_URL_LAMBDA"), "/")
	if c.endpoint == "" && c.region != "" {
		c.endpoint = "https://lambda." + c.region + ".amazonaws.com"
		if strings.HasPrefix(c.region, "cn-") {
			c.endpoint += ".cn"
		}
	}
	return c
}

// InvokeEvent queues payload for function (a name, a partial ARN or an ARN) and returns once
// Lambda accepted it (202).
func (c *LambdaClient) InvokeEvent(ctx context.Context, function string, payload []byte) error {
	if c.endpoint == "" {
		return errors.New("lambda invoke: no AWS_REGION (nor AWS_ENDPOINT_URL_LAMBDA) to send it to")
	}
	escaped := httpbinding.EscapePath(function, true)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		c.endpoint+"/2015-03-31/functions/"+escaped+"/invocations", bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("lambda invoke: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Amz-Invocation-Type", "Event")
	hash := emptySHA256
	if len(payload) > 0 {
		sum := sha256.Sum256(payload)
		hash = hex.EncodeToString(sum[:])
	}
	get := func(k string) string {
		v, _ := c.lookup(k)
		return v
	}
	creds := aws.Credentials{AccessKeyID: get("AWS_ACCESS_KEY_ID"), SecretAccessKey: get("AWS_SECRET_ACCESS_KEY"),
		SessionToken: get("AWS_SESSION_TOKEN"), Source: "environment"}
	if err := c.signer.SignHTTP(ctx, creds, req, hash, "lambda", c.region, c.now()); err != nil {
		return fmt.Errorf("lambda invoke: sign: %w", err)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("lambda invoke: %w", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // so the connection is reused
	if res.StatusCode/100 == 2 {
		return nil
	}
	return invokeError(res, body)
}

// invokeError reads Lambda's error answer: the type from X-Amzn-ErrorType (or the body's
// __type), without the ":uri" suffix it may carry, and the body's message.
func invokeError(res *http.Response, body []byte) *InvokeError {
	var doc struct {
		Type     string `json:"__type"`
		Message  string `json:"message"`
		MessageU string `json:"Message"`
	}
	_ = json.Unmarshal(body, &doc)
	e := &InvokeError{Status: res.StatusCode, Type: res.Header.Get("X-Amzn-ErrorType"), Message: doc.Message}
	if e.Type == "" {
		e.Type = doc.Type
	}
	if i := strings.IndexByte(e.Type, ':'); i >= 0 {
		e.Type = e.Type[:i]
	}
	if i := strings.LastIndexByte(e.Type, '#'); i >= 0 {
		e.Type = e.Type[i+1:]
	}
	if e.Type == "" {
		e.Type = http.StatusText(res.StatusCode)
	}
	if e.Message == "" {
		e.Message = doc.MessageU
	}
	return e
}
