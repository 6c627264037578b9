package billing

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// The 200 body, written directly, reads as webhookResponse encoded by encoding/json does.
func TestReceivedBodyIsTheWebhookResponse(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"evt_1NG8Du2eZvKYlo2CUI79vXWy", `evt_"quoted"\<&>`, "evt_ü\u2028", "evt_\xff"} {
		rec := httptest.NewRecorder()
		writeReceived(rec, id, OutcomeProcessed)
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		var got, want webhookResponse
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got), rec.Body.String())
		encoded, err := json.Marshal(webhookResponse{Received: true, EventID: id, Outcome: OutcomeProcessed})
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(encoded, &want))
		require.Equal(t, want, got)
	}
}
