package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/demo"
)

// send makes one request to the dev server with a content type and a bearer token (both
// optional) and returns the status and body.
func (b bundle) send(t *testing.T, method, path, contentType, body, token string, headers ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, b.base+path, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, out
}

// The console's endpoints behind the page: the page itself under a strict CSP; sign-in mints
// a token the functions accept for exactly that seeded user (a member gets no health section,
// the consultant must pick a tenant); "send a Stripe event" builds, signs and delivers a real
// event the webhook applies to the chosen tenant only; and a POST that is not JSON, which a
// page of another origin could send without a CORS preflight, is refused.
func TestDevConsoleSignsInSendsEventsAndRefusesCrossSiteForms(t *testing.T) {
	t.Parallel()
	b := setup(t)

	status, page := b.send(t, http.MethodGet, "/", "", "", "")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(page), `<script type="module" src="/ui/app.js">`)
	res, err := http.Get(b.base + "/")
	require.NoError(t, err)
	_ = res.Body.Close()
	csp := res.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self';")
	require.Contains(t, csp, "style-src 'self';")
	require.NotContains(t, csp, "unsafe-inline")
	require.NotContains(t, csp, "unsafe-eval")
	require.NotContains(t, string(page), "<script>", "no inline script")
	require.NotContains(t, string(page), "style=", "no inline style")

	signIn := func(email string) string {
		t.Helper()
		var id string
		for _, u := range demo.Users {
			if u.Email == email {
				id = u.ID.String()
			}
		}
		status, body := b.send(t, http.MethodPost, "/_dev/sign-in", "application/json", `{"user_id":"`+id+`"}`, "")
		require.Equal(t, http.StatusOK, status, "%s", body)
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		require.NoError(t, json.Unmarshal(body, &tok))
		return tok.AccessToken
	}
	member := signIn("member@demo.test")
	status, body := b.send(t, http.MethodGet, "/v1/account", "", "", member)
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.Contains(t, string(body), `"role":"member"`)
	require.NotContains(t, string(body), `"health"`, "a member's account has no health section")

	consultant := signIn("consultant@both.test")
	status, _ = b.send(t, http.MethodGet, "/v1/account", "", "", consultant)
	require.Equal(t, http.StatusBadRequest, status, "several tenants and none picked")
	status, body = b.send(t, http.MethodGet, "/v1/account", "", "", consultant, "X-Tenant-Id", demo.SecondTenantID.String())
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.Contains(t, string(body), `"name":"Harbor Ltd"`)

	status, _ = b.send(t, http.MethodPost, "/_dev/sign-in", "application/json", `{"user_id":"00000000-0000-0000-0000-000000000001"}`, "")
	require.Equal(t, http.StatusNotFound, status)

	// A cancelled subscription for Harbor Ltd, built from stripe-mock's fixture and signed.
	status, body = b.send(t, http.MethodPost, "/_dev/stripe-events", "application/json",
		`{"tenant_id":"`+demo.SecondTenantID.String()+`","kind":"subscription_cancelled"}`, "")
	require.Equal(t, http.StatusOK, status, "%s", body)
	var sent struct {
		EventID       string `json:"event_id"`
		WebhookStatus int    `json:"webhook_status"`
		WebhookAnswer struct {
			Outcome string `json:"outcome"`
		} `json:"webhook_answer"`
	}
	require.NoError(t, json.Unmarshal(body, &sent))
	require.Equal(t, http.StatusOK, sent.WebhookStatus, "%s", body)
	require.Equal(t, "processed", sent.WebhookAnswer.Outcome)
	require.True(t, strings.HasPrefix(sent.EventID, "evt_"))
	harbor := signIn("owner@harbor.test")
	status, body = b.send(t, http.MethodGet, "/v1/account", "", "", harbor)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(body), `"status":"canceled"`)
	status, body = b.send(t, http.MethodGet, "/v1/account", "", "", b.token)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(body), `"status":"none"`, "Demo Co is untouched")

	status, _ = b.send(t, http.MethodPost, "/_dev/stripe-events", "application/json",
		`{"tenant_id":"`+demo.SecondTenantID.String()+`","kind":"refund_everything"}`, "")
	require.Equal(t, http.StatusUnprocessableEntity, status)

	// What a cross-site form could send: refused before anything happens.
	for _, path := range []string{"/_dev/stripe-events", "/_dev/sign-in", "/_dev/dead-letters/1/requeue"} {
		status, _ = b.send(t, http.MethodPost, path, "application/x-www-form-urlencoded", "tenant_id=x&kind=payment_failed", "")
		require.Equal(t, http.StatusUnsupportedMediaType, status, path)
		status, _ = b.send(t, http.MethodPost, path, "text/plain", `{"tenant_id":"x"}`, "")
		require.Equal(t, http.StatusUnsupportedMediaType, status, path)
	}
}

// A ticket whose push gave up shows in the ops console's dead letters, and its Requeue button
// puts it back on the queue (once: a second requeue is refused): Zendesk, up again, receives
// it exactly once and the list is empty.
func TestDevConsoleRequeuesADeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, body := b.send(t, http.MethodPost, controlPrefix+"/zendesk/down", "", "", "")
	require.Equal(t, http.StatusOK, status, "%s", body)
	status, body = b.send(t, http.MethodPost, "/v1/tickets", "application/json",
		`{"subject":"Lost in the outage","body":"Please find me.","category":"other"}`, b.token, "Idempotency-Key", "dead-letter-test")
	require.Equal(t, http.StatusCreated, status, "%s", body)
	var created struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(body, &created))

	// The push fails against the outage and waits for its retry; ops give up on it (River's
	// cancel of a job that is not running: state cancelled, finalized now), making it a dead
	// letter as a permanent error would.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var jobID int64
	eventually(t, "the push to fail and wait for a retry", pushWithin, func() bool {
		err := conn.QueryRow(ctx, `select id from private.river_job where kind = 'helpdesk_ticket'
			and args->>'ticket_id' = $1 and state = 'retryable'`, created.ID).Scan(&jobID)
		return err == nil
	})
	_, err = conn.Exec(ctx, `update private.river_job set state = 'cancelled', finalized_at = now() where id = $1`, jobID)
	require.NoError(t, err)

	var letters []struct {
		JobID       int64  `json:"job_id"`
		Integration string `json:"integration"`
		Subject     string `json:"subject"`
	}
	getJSON(t, b.base+"/_dev/dead-letters", &letters)
	require.Len(t, letters, 1)
	require.Equal(t, jobID, letters[0].JobID)
	require.Equal(t, "helpdesk", letters[0].Integration)

	status, body = b.send(t, http.MethodPost, controlPrefix+"/zendesk/up", "", "", "")
	require.Equal(t, http.StatusOK, status, "%s", body)

	// In the ops console: the dead letter is listed with its requeue button.
	br := newBrowser(t, b.base, b.project.Root)
	br.resize(1280)
	br.open("#/ops")
	button := fmt.Sprintf(`document.querySelector('#dead-letters button[aria-label="Requeue job %d"]')`, jobID)
	br.until("the dead letter's requeue button", "!!"+button, 10*time.Second)
	br.check("ops-dead-letter")
	br.eval(button+".click(), true", nil)
	br.see(fmt.Sprintf("Job %d is back on the helpdesk queue.", jobID), 10*time.Second)
	br.noProblems()

	status, _ = b.send(t, http.MethodPost, "/_dev/dead-letters/"+jsonNumber(jobID)+"/requeue", "application/json", `{}`, "")
	require.Equal(t, http.StatusConflict, status, "a requeued job is no dead letter any more")

	eventually(t, "Zendesk to receive the requeued ticket", pushWithin, func() bool { return b.received(t).zendeskTickets(created.ID) == 1 })
	getJSON(t, b.base+"/_dev/dead-letters", &letters)
	require.Empty(t, letters)
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, 1, b.received(t).zendeskTickets(created.ID), "delivered once")
}

func jsonNumber(n int64) string {
	raw, _ := json.Marshal(n)
	return string(raw)
}
