package billing_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing"
	"github.com/portal-functions/portal-functions/shared/demo"
	"github.com/portal-functions/portal-functions/shared/web"
)

// The sample events of `sam local invoke` / `make invoke` are real API Gateway payloads that
// the webhook processes once re-signed (as `make events` does), through the Lambda adapter.
func TestSampleWebhookEventsAreProcessed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, `insert into private.stripe_customers (customer_id, tenant_id) values ($1, $2)`, demo.CustomerID, b.tenantID)
	files, err := filepath.Glob("../../events/payment-webhook*.json")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 4)
	lambda := web.Lambda(b.handler)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var req events.APIGatewayV2HTTPRequest
		require.NoError(t, json.Unmarshal(raw, &req), f)
		require.NoError(t, billing.ResignRequest(&req, testSecret, time.Now()))
		res, err := lambda(t.Context(), req)
		require.NoError(t, err, f)
		require.Equal(t, http.StatusOK, res.StatusCode, "%s: %s", f, res.Body)
		var body struct{ Outcome string }
		require.NoError(t, json.Unmarshal([]byte(res.Body), &body))
		require.Equal(t, "processed", body.Outcome, f)
	}
	acct, err := billing.LoadAccount(t.Context(), b.pool, b.tenantID)
	require.NoError(t, err)
	require.Equal(t, "in_sample_paid", acct.LastInvoiceID)
	require.Equal(t, billing.StatusActive, acct.Status, "the subscription's own event says active; the later failed invoice is a payment fact")
	require.Equal(t, "in_sample_failed", acct.LastFailureInvoiceID)
}
