package zendeskfake_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

const (
	agentEmail = "agent@example.com"
	agentToken = "tok_live_6f2c1d"
)

type bundle struct {
	fake *zendeskfake.TestServer
}

func setup(t *testing.T) bundle {
	t.Helper()
	return bundle{fake: zendeskfake.NewTest(t, agentEmail, agentToken)}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// call sends one request to the fake with the agent's API-token credentials.
func (b bundle) call(t *testing.T, method, path, body string, header map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, b.fake.URL()+path, strings.NewReader(body))
	require.NoError(t, err)
	req.SetBasicAuth(agentEmail+"/token", agentToken)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := b.fake.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: raw}
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal(a.body, &v), "body: %s", a.body)
	return v
}

func ticketBody(externalID, comment, email string) string {
	return `{"ticket":{"subject":"Printer offline","comment":{"body":"` + comment + `"},` +
		`"requester":{"name":"Ada Lovelace","email":"` + email + `"},"external_id":"` + externalID + `",` +
		`"tags":["tenant_t1","billing"],"priority":"high","type":"question"}}`
}

func key(k string) map[string]string { return map[string]string{"Idempotency-Key": k} }

func TestCreateTicketAnswersWithZendeskTicketJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)

	a := b.call(t, http.MethodPost, "/api/v2/tickets", ticketBody("tk_1", "It is offline.", "ada@example.com"), key("k1"))

	require.Equal(t, http.StatusCreated, a.status, "%s", a.body)
	require.Equal(t, "miss", a.header.Get("X-Idempotency-Lookup"))
	ticket := a.json(t)["ticket"].(map[string]any)
	require.Equal(t, float64(1), ticket["id"])
	require.Equal(t, b.fake.URL()+"/api/v2/tickets/1.json", ticket["url"])
	require.Equal(t, ticket["url"], a.header.Get("Location"))
	require.Equal(t, "tk_1", ticket["external_id"])
	require.Equal(t, "new", ticket["status"])
	require.Equal(t, "Printer offline", ticket["subject"])
	require.Equal(t, "It is offline.", ticket["description"])
	require.Equal(t, "high", ticket["priority"])
	require.Equal(t, "question", ticket["type"])
	require.Equal(t, []any{"tenant_t1", "billing"}, ticket["tags"])
	require.Equal(t, "api", ticket["via"].(map[string]any)["channel"])
	require.Nil(t, ticket["assignee_id"])

	stored, ok := b.fake.Ticket("tk_1")
	require.True(t, ok)
	require.Equal(t, "ada@example.com", stored.RequesterEmail)
	require.Equal(t, "Ada Lovelace", stored.RequesterName)
	require.Equal(t, "k1", stored.IdempotencyKey)
	require.Equal(t, stored.RequesterID, int64(ticket["requester_id"].(float64)))
	require.Equal(t, 1, b.fake.Calls())
}

func TestCreateTicketAcceptsTheJSONSuffixedPath(t *testing.T) {
	t.Parallel()
	b := setup(t)

	a := b.call(t, http.MethodPost, "/api/v2/tickets.json", ticketBody("tk_1", "x", "ada@example.com"), nil)

	require.Equal(t, http.StatusCreated, a.status)
	require.Empty(t, a.header.Get("X-Idempotency-Lookup"), "no key, no lookup header")
	require.Len(t, b.fake.Tickets(), 1)
}

func TestIdempotencyKeyFollowsZendeskContract(t *testing.T) {
	t.Parallel()
	same := ticketBody("tk_1", "body", "ada@example.com")
	// Same content, other key order and spacing: still the same request.
	reordered := `{ "ticket": {"external_id":"tk_1", "type":"question", "priority":"high",
		"tags":["tenant_t1","billing"], "requester":{"email":"ada@example.com","name":"Ada Lovelace"},
		"comment":{"body":"body"}, "subject":"Printer offline"} }`

	tests := []struct {
		name        string
		advance     time.Duration
		secondBody  string
		secondKey   string
		wantStatus  int
		wantLookup  string
		wantTickets int
		wantError   string
	}{
		{name: "same key same body replays", secondBody: same, secondKey: "k1", wantStatus: 201, wantLookup: "hit", wantTickets: 1},
		{name: "same key reordered body replays", secondBody: reordered, secondKey: "k1", wantStatus: 201, wantLookup: "hit", wantTickets: 1},
		{name: "still remembered just inside two hours", advance: 2*time.Hour - time.Minute, secondBody: same, secondKey: "k1", wantStatus: 201, wantLookup: "hit", wantTickets: 1},
		{name: "same key other body is refused", secondBody: ticketBody("tk_1", "changed", "ada@example.com"), secondKey: "k1", wantStatus: 400, wantTickets: 1, wantError: "IdempotentRequestError"},
		{name: "forgotten after two hours", advance: 2*time.Hour + time.Second, secondBody: same, secondKey: "k1", wantStatus: 201, wantLookup: "miss", wantTickets: 2},
		{name: "other key creates again", secondBody: same, secondKey: "k2", wantStatus: 201, wantLookup: "miss", wantTickets: 2},
		{name: "no key creates again", secondBody: same, wantStatus: 201, wantTickets: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			first := b.call(t, http.MethodPost, "/api/v2/tickets", same, key("k1"))
			require.Equal(t, http.StatusCreated, first.status)
			b.fake.Advance(tt.advance)

			second := b.call(t, http.MethodPost, "/api/v2/tickets", tt.secondBody, key(tt.secondKey))

			require.Equal(t, tt.wantStatus, second.status, "%s", second.body)
			require.Equal(t, tt.wantLookup, second.header.Get("X-Idempotency-Lookup"))
			require.Len(t, b.fake.Tickets(), tt.wantTickets)
			if tt.wantLookup == "hit" {
				require.Equal(t, first.body, second.body, "a replay is the original answer")
				require.Equal(t, first.header.Get("Location"), second.header.Get("Location"))
			}
			if tt.wantError != "" {
				require.Equal(t, map[string]any{
					"error":       tt.wantError,
					"description": "Request parameters don't match the given idempotency key",
				}, second.json(t))
			}
		})
	}
}

func TestCreateTicketRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantBody   string
	}{
		{
			name:       "blank comment body",
			body:       ticketBody("tk_1", "  ", "ada@example.com"),
			wantStatus: http.StatusUnprocessableEntity,
			wantBody:   `{"error":"RecordInvalid","description":"Record validation errors","details":{"description":[{"description":"Description: cannot be blank","error":"BlankValue"}]}}`,
		},
		{
			name:       "requester email invalid",
			body:       ticketBody("tk_1", "hello", "not-an-email"),
			wantStatus: http.StatusUnprocessableEntity,
			wantBody:   `{"error":"RecordInvalid","description":"Record validation errors","details":{"requester":[{"description":"Requester: Email is invalid","error":"InvalidValue"}]}}`,
		},
		{
			name:       "both at once",
			body:       ticketBody("tk_1", "", "ada@"),
			wantStatus: http.StatusUnprocessableEntity,
			wantBody:   `{"error":"RecordInvalid","description":"Record validation errors","details":{"description":[{"description":"Description: cannot be blank","error":"BlankValue"}],"requester":[{"description":"Requester: Email is invalid","error":"InvalidValue"}]}}`,
		},
		{
			name:       "no ticket root",
			body:       `{"subject":"x"}`,
			wantStatus: http.StatusBadRequest,
			wantBody:   `{"error":"ParameterMissing","description":"param is missing or the value is empty: ticket"}`,
		},
		{
			name:       "not JSON",
			body:       `ticket=1`,
			wantStatus: http.StatusBadRequest,
			wantBody:   `{"error":"ParameterMissing","description":"param is missing or the value is empty: ticket"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)

			a := b.call(t, http.MethodPost, "/api/v2/tickets", tt.body, key("k1"))

			require.Equal(t, tt.wantStatus, a.status)
			require.JSONEq(t, tt.wantBody, string(a.body))
			require.Empty(t, b.fake.Tickets())

			// A refused request does not burn its key: the corrected request goes through.
			fixed := b.call(t, http.MethodPost, "/api/v2/tickets", ticketBody("tk_1", "ok", "ada@example.com"), key("k1"))
			require.Equal(t, http.StatusCreated, fixed.status)
			require.Equal(t, "miss", fixed.header.Get("X-Idempotency-Lookup"))
		})
	}
}

func TestAuthenticationRequiresTheAPITokenForm(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		set  func(r *http.Request)
	}{
		{name: "no credentials", set: func(r *http.Request) {}},
		{name: "wrong token", set: func(r *http.Request) { r.SetBasicAuth(agentEmail+"/token", "nope") }},
		{name: "token used as password without /token", set: func(r *http.Request) { r.SetBasicAuth(agentEmail, agentToken) }},
		{name: "other agent", set: func(r *http.Request) { r.SetBasicAuth("eve@example.com/token", agentToken) }},
		{name: "bearer instead of basic", set: func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+agentToken) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			req, err := http.NewRequest(http.MethodPost, b.fake.URL()+"/api/v2/tickets", strings.NewReader(ticketBody("tk_1", "x", "ada@example.com")))
			require.NoError(t, err)
			tt.set(req)

			resp, err := b.fake.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			require.JSONEq(t, `{"error":"Couldn't authenticate you"}`, string(raw))
			require.Empty(t, b.fake.Tickets())
		})
	}
}

func TestModesSwitchAtRunTime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := ticketBody("tk_1", "x", "ada@example.com")

	b.fake.SetMode(zendeskfake.ModeDown)
	down := b.call(t, http.MethodPost, "/api/v2/tickets", body, key("k1"))
	require.Equal(t, http.StatusServiceUnavailable, down.status)
	require.Empty(t, down.header.Get("Retry-After"))

	b.fake.SetMode(zendeskfake.ModeRateLimited)
	b.fake.SetRetryAfter(3 * time.Second)
	limited := b.call(t, http.MethodPost, "/api/v2/tickets", body, key("k1"))
	require.Equal(t, http.StatusTooManyRequests, limited.status)
	require.Equal(t, "3", limited.header.Get("Retry-After"))
	require.Empty(t, b.fake.Tickets(), "neither outage nor rate limit creates anything")

	b.fake.SetMode(zendeskfake.ModeUp)
	up := b.call(t, http.MethodPost, "/api/v2/tickets", body, key("k1"))
	require.Equal(t, http.StatusCreated, up.status)
	require.Equal(t, "miss", up.header.Get("X-Idempotency-Lookup"))
	require.Len(t, b.fake.Tickets(), 1)
	require.Equal(t, 3, b.fake.Calls())
}

// post sends a keyed create with a client deadline, returning the transport error if any.
func post(t *testing.T, b bundle, timeout time.Duration, body, idemKey string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.fake.URL()+"/api/v2/tickets", strings.NewReader(body))
	require.NoError(t, err)
	req.SetBasicAuth(agentEmail+"/token", agentToken)
	req.Header.Set("Idempotency-Key", idemKey)
	resp, err := b.fake.Client().Do(req)
	if err == nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return resp, err
}

func TestTimeoutNextCreatesCommitsButNeverAnswers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.TimeoutNextCreates(1)
	body := ticketBody("tk_1", "x", "ada@example.com")

	_, err := post(t, b, 200*time.Millisecond, body, "k1")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	stored, ok := b.fake.Ticket("tk_1")
	require.True(t, ok, "the create committed although the client heard nothing")

	retry := b.call(t, http.MethodPost, "/api/v2/tickets", body, key("k1"))
	require.Equal(t, http.StatusCreated, retry.status)
	require.Equal(t, "hit", retry.header.Get("X-Idempotency-Lookup"))
	require.Equal(t, float64(stored.ID), retry.json(t)["ticket"].(map[string]any)["id"])
	require.Len(t, b.fake.Tickets(), 1)

	next := b.call(t, http.MethodPost, "/api/v2/tickets", ticketBody("tk_2", "x", "ada@example.com"), key("k2"))
	require.Equal(t, http.StatusCreated, next.status, "only the next n creates are withheld")
}

func TestLatencyThatOutlastsTheClientCreatesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.SetLatency(time.Minute)

	_, err := post(t, b, 100*time.Millisecond, ticketBody("tk_1", "x", "ada@example.com"), "k1")

	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Empty(t, b.fake.Tickets())
	b.fake.SetLatency(0)
	ok := b.call(t, http.MethodPost, "/api/v2/tickets", ticketBody("tk_1", "x", "ada@example.com"), key("k1"))
	require.Equal(t, "miss", ok.header.Get("X-Idempotency-Lookup"))
}

func TestListAndShowTickets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, ext := range []string{"tk_a", "tk_b", "tk_a"} {
		a := b.call(t, http.MethodPost, "/api/v2/tickets", ticketBody(ext, "x", "ada@example.com"), nil)
		require.Equal(t, http.StatusCreated, a.status)
	}

	tests := []struct {
		name    string
		path    string
		wantIDs []any
	}{
		{name: "by external_id", path: "/api/v2/tickets?external_id=tk_a", wantIDs: []any{float64(1), float64(3)}},
		{name: "by external_id with json suffix", path: "/api/v2/tickets.json?external_id=tk_b", wantIDs: []any{float64(2)}},
		{name: "unknown external_id", path: "/api/v2/tickets?external_id=tk_zzz", wantIDs: []any{}},
		{name: "all", path: "/api/v2/tickets", wantIDs: []any{float64(1), float64(2), float64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := b.call(t, http.MethodGet, tt.path, "", nil)
			require.Equal(t, http.StatusOK, a.status)
			v := a.json(t)
			ids := []any{}
			for _, tk := range v["tickets"].([]any) {
				ids = append(ids, tk.(map[string]any)["id"])
			}
			require.Equal(t, tt.wantIDs, ids)
			require.Equal(t, float64(len(tt.wantIDs)), v["count"])
			require.Nil(t, v["next_page"])
		})
	}

	show := b.call(t, http.MethodGet, "/api/v2/tickets/2.json", "", nil)
	require.Equal(t, http.StatusOK, show.status)
	require.Equal(t, "tk_b", show.json(t)["ticket"].(map[string]any)["external_id"])
	missing := b.call(t, http.MethodGet, "/api/v2/tickets/99", "", nil)
	require.Equal(t, http.StatusNotFound, missing.status)
	require.JSONEq(t, `{"error":"RecordNotFound","description":"Not found"}`, string(missing.body))
}

func TestConcurrentCreatesWithOneKeyMakeOneTicket(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := ticketBody("tk_1", "x", "ada@example.com")
	const n = 16

	var wg sync.WaitGroup
	answers := make([]answer, n)
	for i := range n {
		wg.Go(func() { answers[i] = b.call(t, http.MethodPost, "/api/v2/tickets", body, key("k1")) })
	}
	wg.Wait()

	misses := 0
	for _, a := range answers {
		require.Equal(t, http.StatusCreated, a.status)
		require.Equal(t, answers[0].body, a.body)
		if a.header.Get("X-Idempotency-Lookup") == "miss" {
			misses++
		}
	}
	require.Equal(t, 1, misses)
	require.Len(t, b.fake.Tickets(), 1)
	require.Equal(t, n, b.fake.Calls())
}
