package nudge_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/nudge"
)

// received is one request as a server got it.
type received struct {
	method, uri, host string
	header            http.Header
	body              []byte
}

// A nudge's invoke is the request the AWS SDK's Lambda client sends for the same call: the same
// path (an ARN's colons escaped), body, content type, invocation type, session token and
// credential scope, and its Signature Version 4 verifies over the bytes the server received,
// as the SDK client's does under the same check.
func TestInvokeIsTheSDKClientsRequest(t *testing.T) {
	t.Parallel()
	got := make(chan received, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{method: r.Method, uri: r.RequestURI, host: r.Host, header: r.Header.Clone(), body: body}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	env := map[string]string{"AWS_ENDPOINT_URL_LAMBDA": srv.URL, "AWS_REGION": "eu-west-1",
		"AWS_ACCESS_KEY_ID": "AKIDLOCAL", "AWS_SECRET_ACCESS_KEY": "local-secret", "AWS_SESSION_TOKEN": "local-token"}
	fn := "arn:aws:lambda:eu-west-1:123456789012:function:crm-push"
	payload := []byte(`{"detail":{"cover_ms":5100},"detail-type":"nudge","source":"portal-functions"}`)

	ours := nudge.NewLambdaClient(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	require.NoError(t, ours.InvokeEvent(t.Context(), fn, payload))
	sdk := lambda.New(lambda.Options{
		Region:           env["AWS_REGION"],
		Credentials:      aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds(env), nil }),
		BaseEndpoint:     aws.String(srv.URL),
		RetryMaxAttempts: 1,
	})
	_, err := sdk.Invoke(t.Context(), &lambda.InvokeInput{FunctionName: aws.String(fn), InvocationType: types.InvocationTypeEvent, Payload: payload})
	require.NoError(t, err)

	mine, theirs := <-got, <-got
	require.Equal(t, theirs.method, mine.method)
	require.Equal(t, theirs.uri, mine.uri)
	require.Equal(t, "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Acrm-push/invocations", mine.uri)
	require.Equal(t, theirs.body, mine.body)
	for _, h := range []string{"Content-Type", "X-Amz-Invocation-Type", "X-Amz-Security-Token", "Content-Length"} {
		require.Equal(t, theirs.header.Get(h), mine.header.Get(h), h)
	}
	scope := regexp.MustCompile(`Credential=([^,]+),`)
	require.Equal(t, scope.FindStringSubmatch(theirs.header.Get("Authorization"))[1], scope.FindStringSubmatch(mine.header.Get("Authorization"))[1])
	for name, r := range map[string]received{"ours": mine, "the SDK's": theirs} {
		verifySignature(t, name, r, creds(env))
	}
}

// Lambda's refusal comes back as an *InvokeError naming its error type, and a client without a
// region (nor an endpoint) refuses to send rather than guessing one.
func TestInvokeErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Amzn-ErrorType", "TooManyRequestsException:http://internal.amazon.com/coral/com.amazonaws.awslambda/")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"Type":"User","message":"Rate Exceeded."}`))
	}))
	t.Cleanup(srv.Close)
	env := map[string]string{"AWS_ENDPOINT_URL_LAMBDA": srv.URL, "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDLOCAL", "AWS_SECRET_ACCESS_KEY": "local"}
	err := nudge.NewLambdaClient(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil).InvokeEvent(t.Context(), "crm-push", nil)
	var ie *nudge.InvokeError
	require.ErrorAs(t, err, &ie)
	require.Equal(t, nudge.InvokeError{Status: http.StatusTooManyRequests, Type: "TooManyRequestsException", Message: "Rate Exceeded."}, *ie)

	err = nudge.NewLambdaClient(func(string) (string, bool) { return "", false }, nil).InvokeEvent(t.Context(), "crm-push", nil)
	require.ErrorContains(t, err, "AWS_REGION")
}

func creds(env map[string]string) aws.Credentials {
	return aws.Credentials{AccessKeyID: env["AWS_ACCESS_KEY_ID"], SecretAccessKey: env["AWS_SECRET_ACCESS_KEY"], SessionToken: env["AWS_SESSION_TOKEN"]}
}

// verifySignature checks r's SigV4 signature as the service would: it signs a request made of
// exactly what r's Authorization says was signed (its headers as received, its path, its body's
// hash) at r's X-Amz-Date, and compares. Every x-amz-* header (and the content type) must be
// among the signed ones.
func verifySignature(t *testing.T, name string, r received, c aws.Credentials) {
	t.Helper()
	auth := regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$`).
		FindStringSubmatch(r.header.Get("Authorization"))
	require.NotNil(t, auth, "%s: Authorization %q", name, r.header.Get("Authorization"))
	region, service, signed, signature := auth[1], auth[2], strings.Split(auth[3], ";"), auth[4]
	require.Equal(t, [2]string{"eu-west-1", "lambda"}, [2]string{region, service}, name)
	for h := range r.header {
		if lower := strings.ToLower(h); strings.HasPrefix(lower, "x-amz-") || lower == "content-type" {
			require.Contains(t, signed, lower, "%s: AWS requires every x-amz-* header to be signed", name)
		}
	}
	at, err := time.Parse("20060102T150405Z", r.header.Get("X-Amz-Date"))
	require.NoError(t, err, name)

	req, err := http.NewRequest(r.method, "http://"+r.host+r.uri, bytes.NewReader(r.body))
	require.NoError(t, err)
	req.Host = r.host
	for _, h := range signed {
		switch h {
		case "host", "x-amz-date", "x-amz-security-token", "content-length": // the signer's own
		default:
			req.Header[http.CanonicalHeaderKey(h)] = r.header.Values(h)
		}
	}
	sum := sha256.Sum256(r.body)
	require.NoError(t, v4.NewSigner().SignHTTP(context.Background(), c, req, hex.EncodeToString(sum[:]), service, region, at))
	again := regexp.MustCompile(`SignedHeaders=([^,]+), Signature=([0-9a-f]{64})`).FindStringSubmatch(req.Header.Get("Authorization"))
	require.Equal(t, auth[3], again[1], "%s: signed headers", name)
	require.Equal(t, signature, again[2], "%s: signature", name)
}
