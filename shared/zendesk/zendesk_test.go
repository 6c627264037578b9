package zendesk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/zendesk"
	"github.com/portal-functions/portal-functions/shared/zendesk/zendeskfake"
)

const (
	agentEmail = "agent@example.com"
	agentToken = "tok_live_6f2c1d"
	// base64("agent@example.com/token:tok_live_6f2c1d"), computed outside the code under test.
	wantAuthorization = "Basic YWdlbnRAZXhhbXBsZS5jb20vdG9rZW46dG9rX2xpdmVfNmYyYzFk"
)

type bundle struct {
	fake   *zendeskfake.TestServer
	client *zendesk.Client
}

func setup(t testing.TB) bundle {
	t.Helper()
	fake := zendeskfake.NewTest(t, agentEmail, agentToken)
	return bundle{fake: fake, client: newClient(fake.URL(), 5*time.Second)}
}

func newClient(baseURL string, timeout time.Duration) *zendesk.Client {
	return zendesk.New(zendesk.Config{BaseURL: baseURL, Email: agentEmail, APIToken: agentToken, Timeout: timeout})
}

// stub serves handler on a local server and returns a client pointed at it.
func stub(t *testing.T, handler http.HandlerFunc) *zendesk.Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return newClient(srv.URL, 5*time.Second)
}

func sampleTicket(externalID string) zendesk.NewTicket {
	return zendesk.NewTicket{
		Subject:    "Invoice is wrong",
		Body:       "The March invoice charges two seats; we have one.",
		Requester:  zendesk.Requester{Name: "Ada Lovelace", Email: "ada@example.com"},
		ExternalID: externalID,
		Tags:       []string{"tenant_t1", "billing"},
		Priority:   zendesk.PriorityHigh,
		Type:       zendesk.TypeQuestion,
	}
}

// asError returns the *zendesk.Error inside err, failing the test if there is none.
func asError(t *testing.T, err error) *zendesk.Error {
	t.Helper()
	var zerr *zendesk.Error
	require.ErrorAs(t, err, &zerr)
	return zerr
}

// requireNoSecret checks the error text carries neither the token nor the auth header.
func requireNoSecret(t *testing.T, err error) {
	t.Helper()
	require.NotContains(t, err.Error(), agentToken)
	require.NotContains(t, err.Error(), strings.TrimPrefix(wantAuthorization, "Basic "))
}

func TestCreateTicketSendsTheDocumentedRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ticket   zendesk.NewTicket
		key      string
		wantBody string
	}{
		{
			name:   "every field",
			ticket: sampleTicket("tk_1"),
			key:    "helpdesk:tk_1",
			wantBody: `{"ticket":{"subject":"Invoice is wrong",
				"comment":{"body":"The March invoice charges two seats; we have one."},
				"requester":{"name":"Ada Lovelace","email":"ada@example.com"},
				"external_id":"tk_1","tags":["tenant_t1","billing"],"priority":"high","type":"question"}}`,
		},
		{
			name:     "optional fields left out, no key",
			ticket:   zendesk.NewTicket{Subject: "Hi", Body: "Hello", ExternalID: "tk_2"},
			wantBody: `{"ticket":{"subject":"Hi","comment":{"body":"Hello"},"external_id":"tk_2"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *http.Request
			var gotBody []byte
			client := stub(t, func(w http.ResponseWriter, r *http.Request) {
				got = r
				gotBody, _ = io.ReadAll(r.Body)
				w.Header().Set("Location", "https://acme.zendesk.com/api/v2/tickets/35436.json")
				w.Header().Set("X-Idempotency-Lookup", "miss")
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, `{"ticket":{"url":"https://acme.zendesk.com/api/v2/tickets/35436.json",
					"id":35436,"external_id":"tk_1","status":"new","subject":"Invoice is wrong","priority":"high",
					"type":"question","tags":["tenant_t1","billing"],"requester_id":20978392,
					"created_at":"2009-07-20T22:55:29Z","updated_at":"2011-05-05T10:38:52Z","assignee_id":null}}`)
			})

			ticket, err := client.CreateTicket(context.Background(), tt.ticket, tt.key)

			require.NoError(t, err)
			require.Equal(t, http.MethodPost, got.Method)
			require.Equal(t, "/api/v2/tickets", got.URL.Path)
			require.Equal(t, wantAuthorization, got.Header.Get("Authorization"))
			require.Equal(t, "application/json", got.Header.Get("Content-Type"))
			require.Equal(t, "application/json", got.Header.Get("Accept"))
			require.Equal(t, tt.key, got.Header.Get("Idempotency-Key"))
			_, hasKey := got.Header["Idempotency-Key"]
			require.Equal(t, tt.key != "", hasKey)
			require.JSONEq(t, tt.wantBody, string(gotBody))

			require.Equal(t, zendesk.Ticket{
				ID: 35436, URL: "https://acme.zendesk.com/api/v2/tickets/35436.json", ExternalID: "tk_1",
				Status: "new", Subject: "Invoice is wrong", Priority: zendesk.PriorityHigh, Type: zendesk.TypeQuestion,
				Tags: []string{"tenant_t1", "billing"}, RequesterID: 20978392,
				CreatedAt: time.Date(2009, 7, 20, 22, 55, 29, 0, time.UTC),
				UpdatedAt: time.Date(2011, 5, 5, 10, 38, 52, 0, time.UTC),
			}, ticket)
		})
	}
}

func TestCreateTicketAgainstFakeReplaysWithTheSameKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	first, err := b.client.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1")
	require.NoError(t, err)
	require.False(t, first.Replayed)
	require.NotZero(t, first.ID)
	require.Equal(t, "tk_1", first.ExternalID)
	require.Equal(t, "new", first.Status)
	require.Equal(t, fmt.Sprintf("%s/api/v2/tickets/%d.json", b.fake.URL(), first.ID), first.URL)

	again, err := b.client.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1")
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, first.ID, again.ID)
	require.Len(t, b.fake.Tickets(), 1, "a replay creates no second ticket")

	stored, ok := b.fake.Ticket("tk_1")
	require.True(t, ok)
	require.Equal(t, "ada@example.com", stored.RequesterEmail)
	require.Equal(t, "The March invoice charges two seats; we have one.", stored.Description)
}

func TestCreateTicketKeyReusedWithOtherPayloadIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.client.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1")
	require.NoError(t, err)

	changed := sampleTicket("tk_1")
	changed.Subject = "Invoice is very wrong"
	_, err = b.client.CreateTicket(ctx, changed, "helpdesk:tk_1")

	require.ErrorIs(t, err, zendesk.ErrIdempotencyKeyReused)
	zerr := asError(t, err)
	require.Equal(t, http.StatusBadRequest, zerr.StatusCode)
	require.False(t, zerr.Retryable())
	require.False(t, zerr.Ambiguous())
	require.Contains(t, err.Error(), "Request parameters don't match the given idempotency key")
	require.Len(t, b.fake.Tickets(), 1)
}

func TestCreateTicketClassifiesZendeskErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		status          int
		header          map[string]string
		body            string
		wantRetryable   bool
		wantAmbiguous   bool
		wantRetryAfter  time.Duration
		wantTitle       string
		wantDescription string
		wantInMessage   string
		wantDetails     map[string][]zendesk.FieldError
	}{
		{
			name: "429 with Retry-After seconds", status: 429,
			header: map[string]string{"Retry-After": "7"}, body: "Too Many Requests",
			wantRetryable: true, wantRetryAfter: 7 * time.Second,
			wantDescription: "Too Many Requests", wantInMessage: "retry after 7s",
		},
		{
			name: "422 RecordInvalid keeps the field errors", status: 422,
			body: `{"error":"RecordInvalid","description":"Record validation errors",
				"details":{"requester":[{"description":"Requester: Email is invalid","error":"InvalidValue"}]}}`,
			wantTitle: "RecordInvalid", wantDescription: "Record validation errors",
			wantInMessage: "requester: Requester: Email is invalid (InvalidValue)",
			wantDetails: map[string][]zendesk.FieldError{
				"requester": {{Description: "Requester: Email is invalid", Error: "InvalidValue"}},
			},
		},
		{
			name: "401 bad credentials", status: 401,
			header:    map[string]string{"WWW-Authenticate": `Basic realm="Web Password"`},
			body:      `{"error":"Couldn't authenticate you"}`,
			wantTitle: "Couldn't authenticate you", wantInMessage: "HTTP 401 Couldn't authenticate you",
		},
		{
			name: "403 in Zendesk's object form", status: 403,
			body:      `{"error":{"title":"Forbidden","message":"You do not have access to this page."}}`,
			wantTitle: "Forbidden", wantDescription: "You do not have access to this page.",
		},
		{
			name: "404", status: 404, body: `{"error":"RecordNotFound","description":"Not found"}`,
			wantTitle: "RecordNotFound", wantDescription: "Not found",
		},
		{
			name: "409 concurrent update", status: 409, body: `{"error":"Conflict","description":"try again"}`,
			wantRetryable: true, wantTitle: "Conflict",
		},
		{
			name: "503 with Retry-After", status: 503, header: map[string]string{"Retry-After": "30"},
			body:          "<html>Service Unavailable</html>",
			wantRetryable: true, wantAmbiguous: true, wantRetryAfter: 30 * time.Second,
			wantDescription: "<html>Service Unavailable</html>",
		},
		{
			name: "500 without body", status: 500,
			wantRetryable: true, wantAmbiguous: true, wantDescription: "Internal Server Error",
		},
		{
			name: "201 that is not the documented JSON", status: 201, body: "<html>ok</html>",
			wantRetryable: true, wantAmbiguous: true, wantDescription: "response is not the documented JSON",
		},
		{
			name: "201 without a ticket", status: 201, body: `{"ticket":{}}`,
			wantRetryable: true, wantAmbiguous: true, wantDescription: "response carried no ticket id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := stub(t, func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})

			_, err := client.CreateTicket(context.Background(), sampleTicket("tk_1"), "helpdesk:tk_1")

			zerr := asError(t, err)
			require.Equal(t, tt.status, zerr.StatusCode)
			require.Equal(t, tt.wantRetryable, zerr.Retryable(), "retryable")
			require.Equal(t, tt.wantAmbiguous, zerr.Ambiguous(), "ambiguous")
			require.Equal(t, tt.wantRetryAfter, zerr.RetryAfter)
			require.Equal(t, tt.wantTitle, zerr.Title)
			if tt.wantDescription != "" {
				require.Equal(t, tt.wantDescription, zerr.Description)
			}
			require.Equal(t, tt.wantDetails, zerr.Details)
			require.Contains(t, err.Error(), tt.wantInMessage)
			require.NotErrorIs(t, err, zendesk.ErrIdempotencyKeyReused)
			requireNoSecret(t, err)
		})
	}
}

func TestCreateTicketReadsRetryAfterAsHTTPDate(t *testing.T) {
	t.Parallel()
	client := stub(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusTooManyRequests)
	})

	_, err := client.CreateTicket(context.Background(), sampleTicket("tk_1"), "k")

	zerr := asError(t, err)
	require.Greater(t, zerr.RetryAfter, 100*time.Second)
	require.LessOrEqual(t, zerr.RetryAfter, 2*time.Minute)
}

func TestCreateTicketAgainstFakeFailureModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		arrange       func(b bundle)
		client        func(b bundle) *zendesk.Client
		ticket        zendesk.NewTicket
		wantStatus    int
		wantRetryable bool
		wantAmbiguous bool
		wantInMessage string
	}{
		{
			name:       "down",
			arrange:    func(b bundle) { b.fake.SetMode(zendeskfake.ModeDown) },
			wantStatus: 503, wantRetryable: true, wantAmbiguous: true,
		},
		{
			name: "rate limited",
			arrange: func(b bundle) {
				b.fake.SetMode(zendeskfake.ModeRateLimited)
				b.fake.SetRetryAfter(4 * time.Second)
			},
			wantStatus: 429, wantRetryable: true, wantInMessage: "retry after 4s",
		},
		{
			name: "wrong token",
			client: func(b bundle) *zendesk.Client {
				return zendesk.New(zendesk.Config{BaseURL: b.fake.URL(), Email: agentEmail, APIToken: "revoked"})
			},
			wantStatus: 401, wantInMessage: "Couldn't authenticate you",
		},
		{
			name: "invalid requester email",
			ticket: func() zendesk.NewTicket {
				t := sampleTicket("tk_1")
				t.Requester.Email = "ada-at-example"
				return t
			}(),
			wantStatus: 422, wantInMessage: "RecordInvalid: Record validation errors [requester: Requester: Email is invalid (InvalidValue)]",
		},
		{
			name:       "blank body",
			ticket:     zendesk.NewTicket{Subject: "x", ExternalID: "tk_1", Requester: zendesk.Requester{Email: "ada@example.com"}},
			wantStatus: 422, wantInMessage: "description: Description: cannot be blank (BlankValue)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if tt.arrange != nil {
				tt.arrange(b)
			}
			client := b.client
			if tt.client != nil {
				client = tt.client(b)
			}
			ticket := tt.ticket
			if ticket.ExternalID == "" {
				ticket = sampleTicket("tk_1")
			}

			_, err := client.CreateTicket(context.Background(), ticket, "helpdesk:tk_1")

			zerr := asError(t, err)
			require.Equal(t, tt.wantStatus, zerr.StatusCode)
			require.Equal(t, tt.wantRetryable, zerr.Retryable())
			require.Equal(t, tt.wantAmbiguous, zerr.Ambiguous())
			require.Contains(t, err.Error(), tt.wantInMessage)
			require.Empty(t, b.fake.Tickets())
			requireNoSecret(t, err)
		})
	}
}

// The ambiguous failure end to end: Zendesk creates the ticket, the answer never arrives, the
// worker looks the ticket up by external_id and a keyed retry replays instead of duplicating.
func TestCreateTicketTimeoutIsAmbiguousAndRecoverable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.TimeoutNextCreates(1)
	impatient := newClient(b.fake.URL(), 200*time.Millisecond)
	ctx := context.Background()

	_, err := impatient.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1")

	require.ErrorIs(t, err, context.DeadlineExceeded)
	zerr := asError(t, err)
	require.Zero(t, zerr.StatusCode)
	require.True(t, zerr.Retryable())
	require.True(t, zerr.Ambiguous(), "the request was sent; Zendesk may have acted")
	requireNoSecret(t, err)

	found, err := b.client.FindByExternalID(ctx, "tk_1")
	require.NoError(t, err)
	require.Len(t, found, 1)

	retry, err := b.client.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1")
	require.NoError(t, err)
	require.True(t, retry.Replayed)
	require.Equal(t, found[0].ID, retry.ID)
	require.Len(t, b.fake.Tickets(), 1)
}

func TestCreateTicketRefusedConnectionIsClear(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	client := newClient("http://"+addr, 2*time.Second)

	_, err = client.CreateTicket(context.Background(), sampleTicket("tk_1"), "helpdesk:tk_1")

	zerr := asError(t, err)
	require.True(t, zerr.Retryable())
	require.False(t, zerr.Ambiguous(), "nothing was sent, so nothing was created")
	requireNoSecret(t, err)
}

func TestCreateTicketDroppedConnectionIsAmbiguous(t *testing.T) {
	t.Parallel()
	client := stub(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})

	_, err := client.CreateTicket(context.Background(), sampleTicket("tk_1"), "helpdesk:tk_1")

	zerr := asError(t, err)
	require.True(t, zerr.Retryable())
	require.True(t, zerr.Ambiguous())
}

func TestCreateTicketHonoursTheCallersContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	_, err := b.client.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1")

	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, b.fake.Tickets())
}

func TestCreateTicketRefusesAKeyZendeskWouldRefuse(t *testing.T) {
	t.Parallel()
	b := setup(t)

	_, err := b.client.CreateTicket(context.Background(), sampleTicket("tk_1"), strings.Repeat("k", 256))

	require.ErrorIs(t, err, zendesk.ErrIdempotencyKeyTooLong)
	require.Zero(t, b.fake.Calls())
}

func TestFindByExternalIDAgainstFake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	odd := "tk 1&external_id=tk_2"
	for i, ext := range []string{"tk_1", "tk_2", odd, "tk_1"} {
		_, err := b.client.CreateTicket(ctx, sampleTicket(ext), fmt.Sprintf("k%d", i))
		require.NoError(t, err)
	}

	tests := []struct {
		name       string
		externalID string
		wantIDs    []int64
	}{
		{name: "two tickets share an external id", externalID: "tk_1", wantIDs: []int64{1, 4}},
		{name: "one ticket", externalID: "tk_2", wantIDs: []int64{2}},
		{name: "query characters are escaped", externalID: odd, wantIDs: []int64{3}},
		{name: "none", externalID: "tk_404", wantIDs: []int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			found, err := b.client.FindByExternalID(ctx, tt.externalID)
			require.NoError(t, err)
			ids := []int64{}
			for _, tk := range found {
				require.Equal(t, tt.externalID, tk.ExternalID)
				ids = append(ids, tk.ID)
			}
			require.Equal(t, tt.wantIDs, ids)
		})
	}
}

func TestFindByExternalIDFollowsPagesOnlyWithinTheAccount(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var foreignHits int
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		foreignHits++
		mu.Unlock()
		_, _ = io.WriteString(w, `{"tickets":[],"next_page":null}`)
	}))
	t.Cleanup(foreign.Close)

	var srvURL string
	var authHeaders []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		authHeaders = append(authHeaders, r.Header.Get("Authorization"))
		mu.Unlock()
		switch r.URL.Query().Get("page") {
		case "":
			fmt.Fprintf(w, `{"tickets":[{"id":1,"external_id":"tk_1"}],"next_page":"%s/api/v2/tickets.json?external_id=tk_1&page=2"}`, srvURL)
		case "2":
			fmt.Fprintf(w, `{"tickets":[{"id":2,"external_id":"tk_1"}],"next_page":"%s/api/v2/tickets.json?page=3"}`, foreign.URL)
		}
	}))
	t.Cleanup(srv.Close)
	srvURL = srv.URL
	client := newClient(srv.URL, 5*time.Second)

	_, err := client.FindByExternalID(context.Background(), "tk_1")

	require.Error(t, err)
	require.Contains(t, err.Error(), "next_page points outside the configured account")
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, foreignHits, "our token must never go to another host")
	require.Equal(t, []string{wantAuthorization, wantAuthorization}, authHeaders, "both account pages were fetched")
}

func TestFindByExternalIDReturnsAllPages(t *testing.T) {
	t.Parallel()
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("page") == "2" {
			_, _ = io.WriteString(w, `{"tickets":[{"id":2,"external_id":"tk_1"}],"next_page":null}`)
			return
		}
		fmt.Fprintf(w, `{"tickets":[{"id":1,"external_id":"tk_1"}],"next_page":"%s/api/v2/tickets.json?external_id=tk_1&page=2"}`, srvURL)
	}))
	t.Cleanup(srv.Close)
	srvURL = srv.URL

	found, err := newClient(srv.URL, 5*time.Second).FindByExternalID(context.Background(), "tk_1")

	require.NoError(t, err)
	require.Len(t, found, 2)
	require.Equal(t, int64(2), found[1].ID)
}

func TestFindByExternalIDErrorsAreClassified(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.SetMode(zendeskfake.ModeRateLimited)

	_, err := b.client.FindByExternalID(context.Background(), "tk_1")

	zerr := asError(t, err)
	require.Equal(t, http.StatusTooManyRequests, zerr.StatusCode)
	require.True(t, zerr.Retryable())
	require.Contains(t, err.Error(), "find tickets by external_id")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     zendesk.Config
		wantErr error
		wantMsg string
	}{
		{name: "complete", cfg: zendesk.Config{BaseURL: "https://acme.zendesk.com", Email: agentEmail, APIToken: agentToken}},
		{name: "empty", cfg: zendesk.Config{}, wantErr: zendesk.ErrMissingConfig, wantMsg: "BaseURL, Email, APIToken"},
		{name: "no token", cfg: zendesk.Config{BaseURL: "https://acme.zendesk.com", Email: agentEmail}, wantErr: zendesk.ErrMissingConfig, wantMsg: "APIToken"},
		{name: "relative URL", cfg: zendesk.Config{BaseURL: "acme.zendesk.com", Email: agentEmail, APIToken: agentToken}, wantErr: zendesk.ErrInvalidConfig},
		{name: "credentials in URL", cfg: zendesk.Config{BaseURL: "https://a:" + agentToken + "@acme.zendesk.com", Email: agentEmail, APIToken: agentToken}, wantErr: zendesk.ErrInvalidConfig},
		{name: "negative timeout", cfg: zendesk.Config{BaseURL: "https://acme.zendesk.com", Email: agentEmail, APIToken: agentToken, Timeout: -time.Second}, wantErr: zendesk.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			require.Contains(t, err.Error(), tt.wantMsg)
			requireNoSecret(t, err)

			// A client built from a bad config fails every call the same way, without a request.
			_, err = zendesk.New(tt.cfg).CreateTicket(context.Background(), sampleTicket("tk_1"), "k")
			require.ErrorIs(t, err, tt.wantErr)
			_, err = zendesk.New(tt.cfg).FindByExternalID(context.Background(), "tk_1")
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
}

func TestConfigNeverPrintsTheToken(t *testing.T) {
	t.Parallel()
	cfg := zendesk.Config{BaseURL: "https://acme.zendesk.com", Email: agentEmail, APIToken: agentToken}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("zendesk", "config", cfg)

	for _, printed := range []string{
		fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", &cfg), logged.String(),
	} {
		require.NotContains(t, printed, agentToken)
		require.Contains(t, printed, "[REDACTED]")
		require.Contains(t, printed, "acme.zendesk.com")
	}
}

func TestErrorHelpersSeeThroughWrapping(t *testing.T) {
	t.Parallel()
	limited := fmt.Errorf("push ticket tk_1: %w", &zendesk.Error{StatusCode: 429, RetryAfter: 9 * time.Second})
	down := fmt.Errorf("push ticket tk_1: %w", &zendesk.Error{StatusCode: 503})
	invalid := fmt.Errorf("push ticket tk_1: %w", &zendesk.Error{StatusCode: 422, RetryAfter: time.Second})
	tests := []struct {
		name           string
		err            error
		wantRetryable  bool
		wantAmbiguous  bool
		wantRetryAfter time.Duration
	}{
		{name: "rate limited", err: limited, wantRetryable: true, wantRetryAfter: 9 * time.Second},
		{name: "down", err: down, wantRetryable: true, wantAmbiguous: true},
		{name: "invalid ignores a stray Retry-After", err: invalid},
		{name: "not a Zendesk error", err: zendesk.ErrMissingConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.wantRetryable, zendesk.IsRetryable(tt.err))
			require.Equal(t, tt.wantAmbiguous, zendesk.IsAmbiguous(tt.err))
			wait, ok := zendesk.RetryAfter(tt.err)
			require.Equal(t, tt.wantRetryAfter, wait)
			require.Equal(t, tt.wantRetryAfter > 0, ok)
		})
	}
}

func TestBasicAuthIsZendesksTokenForm(t *testing.T) {
	t.Parallel()
	require.Equal(t, wantAuthorization, zendesk.BasicAuth(agentEmail, agentToken))
}

func TestErrorIsOnlyTheIdempotencyConflict(t *testing.T) {
	t.Parallel()
	conflict := &zendesk.Error{StatusCode: 400, Title: "IdempotentRequestError"}
	other := &zendesk.Error{StatusCode: 400, Title: "BadRequest"}
	require.True(t, errors.Is(fmt.Errorf("push ticket: %w", conflict), zendesk.ErrIdempotencyKeyReused))
	require.False(t, errors.Is(other, zendesk.ErrIdempotencyKeyReused))
}

func BenchmarkCreateTicket(b *testing.B) {
	bundle := setup(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ext := fmt.Sprintf("tk_%d", i)
		if _, err := bundle.client.CreateTicket(ctx, sampleTicket(ext), "helpdesk:"+ext); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateTicketReplay(b *testing.B) {
	bundle := setup(b)
	ctx := context.Background()
	if _, err := bundle.client.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bundle.client.CreateTicket(ctx, sampleTicket("tk_1"), "helpdesk:tk_1"); err != nil {
			b.Fatal(err)
		}
	}
}
