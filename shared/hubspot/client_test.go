package hubspot_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/hubspot"
	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
)

const token = "pat-na1-test-secret-token"

type bundle struct {
	fake   *hubspotfake.Server
	client *hubspot.Client
}

// setup returns a client pointed at a fresh fake HubSpot.
func setup(t testing.TB) bundle {
	t.Helper()
	fake := hubspotfake.NewTest(t)
	fake.SetAccessToken(token)
	return bundle{fake: fake, client: hubspot.New(hubspot.Config{BaseURL: fake.URL(), AccessToken: token})}
}

// captured is one request a hand-written handler received.
type captured struct {
	method, path, auth, contentType string
	body                            []byte
}

// serve starts a hand-written HubSpot for edge cases and returns a client for it plus the
// requests it saw.
func serve(t *testing.T, handler http.HandlerFunc) (*hubspot.Client, func() []captured) {
	t.Helper()
	var mu sync.Mutex
	var seen []captured
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, captured{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body})
		mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(ts.Close)
	client := hubspot.New(hubspot.Config{BaseURL: ts.URL + "/", AccessToken: token, Timeout: 5 * time.Second})
	return client, func() []captured {
		mu.Lock()
		defer mu.Unlock()
		return append([]captured(nil), seen...)
	}
}

func reply(status int, headers map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		if strings.HasPrefix(body, "{") {
			w.Header().Set("Content-Type", "application/json;charset=utf-8")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func hubErr(t *testing.T, err error) *hubspot.Error {
	t.Helper()
	var he *hubspot.Error
	require.ErrorAs(t, err, &he)
	return he
}

func TestUpsertContactsSendsDocumentedRequest(t *testing.T) {
	t.Parallel()
	client, seen := serve(t, reply(http.StatusOK, nil, `{"status":"COMPLETE","results":[
		{"id":"51","new":true,"objectWriteTraceId":"0","properties":{"email":"ada@example.com"},"createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-01-01T00:00:00.000Z","archived":false},
		{"id":"52","new":false,"objectWriteTraceId":"1","properties":{"email":"bob@example.com"},"createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-01-02T00:00:00.000Z","archived":false}],
		"startedAt":"2024-01-02T00:00:00.000Z","completedAt":"2024-01-02T00:00:00.100Z"}`))

	res, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{
		{Email: "ada@example.com", Properties: map[string]string{"firstname": "Ada", "portal_tenant_id": "t-1"}},
		{Email: "bob@example.com"},
	})
	require.NoError(t, err)

	reqs := seen()
	require.Len(t, reqs, 1)
	require.Equal(t, http.MethodPost, reqs[0].method)
	require.Equal(t, "/crm/v3/objects/contacts/batch/upsert", reqs[0].path, "a trailing slash in BaseURL is dropped")
	require.Equal(t, "Bearer "+token, reqs[0].auth)
	require.Equal(t, "application/json", reqs[0].contentType)
	require.JSONEq(t, `{"inputs":[
		{"idProperty":"email","id":"ada@example.com","properties":{"firstname":"Ada","portal_tenant_id":"t-1"},"objectWriteTraceId":"0"},
		{"idProperty":"email","id":"bob@example.com","properties":{},"objectWriteTraceId":"1"}]}`, string(reqs[0].body))

	require.Equal(t, []hubspot.RecordResult{
		{ID: "ada@example.com", ObjectID: "51", New: true},
		{ID: "bob@example.com", ObjectID: "52", New: false},
	}, res.Records)
	require.Empty(t, res.Failed())
}

func TestUpsertContactsCreatesThenUpdatesAgainstFake(t *testing.T) {
	t.Parallel()
	b := setup(t)

	first, err := b.client.UpsertContacts(t.Context(), []hubspot.ContactInput{
		{Email: "Ada@Example.com", Properties: map[string]string{"firstname": "Ada"}},
		{Email: "bob@example.com", Properties: map[string]string{"firstname": "Bob"}},
	})
	require.NoError(t, err)
	require.Len(t, first.Records, 2)
	for _, r := range first.Records {
		require.True(t, r.OK(), "record %s: %v", r.ID, r.Err)
		require.True(t, r.New)
	}
	ada, ok := b.fake.Contact("ada@example.com")
	require.True(t, ok)
	require.Equal(t, ada.ID, first.Records[0].ObjectID, "the object id is HubSpot's record id")
	require.Equal(t, "Ada", ada.Properties["firstname"])
	require.Equal(t, 100, first.RateLimit.Max, "rate-limit headers are reported on success")

	second, err := b.client.UpsertContacts(t.Context(), []hubspot.ContactInput{
		{Email: "ada@example.com", Properties: map[string]string{"lastname": "Lovelace"}},
	})
	require.NoError(t, err)
	require.Equal(t, []hubspot.RecordResult{{ID: "ada@example.com", ObjectID: ada.ID, New: false}}, second.Records)
	ada, _ = b.fake.Contact("ada@example.com")
	require.Equal(t, "Lovelace", ada.Properties["lastname"])

	ups := b.fake.Upserts()
	require.Len(t, ups, 3)
	require.Equal(t, "email", ups[0].IDProperty)
	require.Equal(t, "Ada@Example.com", ups[0].ID, "the email is sent as given")
	require.Equal(t, map[string]string{"lastname": "Lovelace"}, ups[2].Properties)
}

func TestOneBadRecordFailsAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.FailEmail("locked@example.com", http.StatusConflict)

	res, err := b.client.UpsertContacts(t.Context(), []hubspot.ContactInput{
		{Email: "good@example.com"},
		{Email: "not-an-email@example"},
		{Email: "locked@example.com"},
		{Email: "also-good@example.com"},
	})
	require.NoError(t, err, "per-record refusals are not a failure of the request")
	require.Len(t, res.Records, 4)
	require.True(t, res.Records[0].OK())
	require.True(t, res.Records[3].OK())
	require.NotEmpty(t, res.Records[3].ObjectID)

	bad := hubErr(t, res.Records[1].Err)
	require.Equal(t, "not-an-email@example", bad.ID)
	require.Equal(t, http.StatusMultiStatus, bad.StatusCode)
	require.Equal(t, "VALIDATION_ERROR", bad.Category)
	require.Contains(t, bad.Message, "Email address not-an-email@example is invalid")
	require.Equal(t, "INVALID_EMAIL", bad.Details[0].Code)
	require.False(t, bad.Retryable(), "an invalid email will not become valid by retrying")
	require.Contains(t, bad.Error(), "hubspot: upsert contacts: not-an-email@example: VALIDATION_ERROR: Property values were not valid")

	locked := hubErr(t, res.Records[2].Err)
	require.Equal(t, "CONFLICT", locked.Category)
	require.False(t, locked.Retryable())

	failed := res.Failed()
	require.Len(t, failed, 2)
	require.Equal(t, []string{"not-an-email@example", "locked@example.com"}, []string{failed[0].ID, failed[1].ID})

	_, ok := b.fake.Contact("good@example.com")
	require.True(t, ok)
}

func TestMultiStatusMatching(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		body  string
		check func(t *testing.T, recs []hubspot.RecordResult)
	}{
		{
			name: "results without trace ids are matched by email",
			body: `{"status":"COMPLETE","results":[{"id":"7","properties":{"email":"b@example.com"}},{"id":"6","properties":{"email":"a@example.com"}}]}`,
			check: func(t *testing.T, recs []hubspot.RecordResult) {
				require.Equal(t, "6", recs[0].ObjectID)
				require.Equal(t, "7", recs[1].ObjectID)
			},
		},
		{
			name: "errors matched by context ids when no trace id",
			body: `{"status":"COMPLETE","results":[{"id":"6","objectWriteTraceId":"0","properties":{}}],"numErrors":1,
				"errors":[{"status":"error","category":"VALIDATION_ERROR","message":"nope","context":{"ids":["B@example.com"]}}]}`,
			check: func(t *testing.T, recs []hubspot.RecordResult) {
				require.True(t, recs[0].OK())
				require.Equal(t, "nope", hubErr(t, recs[1].Err).Message)
			},
		},
		{
			name: "an input HubSpot left out has an unknown, retryable outcome",
			body: `{"status":"COMPLETE","results":[{"id":"6","objectWriteTraceId":"0","properties":{}}]}`,
			check: func(t *testing.T, recs []hubspot.RecordResult) {
				he := hubErr(t, recs[1].Err)
				require.True(t, he.Retryable(), "upserts are idempotent, so sending it again is safe")
				require.Contains(t, he.Message, "neither a result nor an error")
			},
		},
		{
			name: "an error naming no input is given to the inputs left without an answer",
			body: `{"status":"COMPLETE","results":[{"id":"6","objectWriteTraceId":"0","properties":{}}],
				"errors":[{"status":"error","category":"RATE_LIMITS","message":"slow down","subCategory":"x"}]}`,
			check: func(t *testing.T, recs []hubspot.RecordResult) {
				he := hubErr(t, recs[1].Err)
				require.Equal(t, "RATE_LIMITS", he.Category)
				require.Equal(t, "x", he.SubCategory)
				require.True(t, he.Retryable(), "a record put under a rate limit may succeed later")
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, _ := serve(t, reply(http.StatusMultiStatus, nil, tc.body))
			res, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}, {Email: "b@example.com"}})
			require.NoError(t, err)
			require.Len(t, res.Records, 2)
			tc.check(t, res.Records)
		})
	}
}

func TestRateLimited(t *testing.T) {
	t.Parallel()
	const body = `{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":"c033cdaa-2c40-4a64-ae48-b4cec88dad24","policyName":"TEN_SECONDLY_ROLLING","requestId":"3d3e35b7"}`
	const dailyBody = `{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c1","policyName":"DAILY"}`
	cases := []struct {
		name    string
		headers map[string]string
		body    string
		wait    time.Duration
	}{
		{"Retry-After seconds wins", map[string]string{"Retry-After": "3", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, body, 3 * time.Second},
		{"interval window without Retry-After", map[string]string{"X-HubSpot-RateLimit-Interval-Milliseconds": "2500", "X-HubSpot-RateLimit-Remaining": "0"}, body, 2500 * time.Millisecond},
		{"daily policy waits an hour", map[string]string{"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, dailyBody, hubspot.DailyLimitWait},
		{"spent daily quota waits an hour", map[string]string{"X-HubSpot-RateLimit-Daily-Remaining": "0"}, body, hubspot.DailyLimitWait},
		{"spent secondly budget waits a second", map[string]string{"X-HubSpot-RateLimit-Secondly-Remaining": "0"}, body, time.Second},
		{"no hint at all", nil, body, hubspot.DefaultRateLimitWait},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, _ := serve(t, reply(http.StatusTooManyRequests, tc.headers, tc.body))
			res, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
			require.Empty(t, res.Records)
			he := hubErr(t, err)
			require.Equal(t, http.StatusTooManyRequests, he.StatusCode)
			require.Equal(t, "RATE_LIMIT", he.Category)
			require.True(t, he.Retryable())
			require.Equal(t, tc.wait, he.RetryAfter)
			wait, ok := hubspot.RetryAfter(fmt.Errorf("push contacts: %w", err))
			require.True(t, ok)
			require.Equal(t, tc.wait, wait)
			if tc.headers == nil {
				require.Equal(t, -1, he.RateLimit.Remaining, "an absent header reads as -1, not as 0 remaining")
				require.Zero(t, he.RateLimit.Interval)
			}
		})
	}
}

func TestRateLimitedByFake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.SetMode(hubspotfake.ModeRateLimited)

	_, err := b.client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
	he := hubErr(t, err)
	require.Equal(t, http.StatusTooManyRequests, he.StatusCode)
	require.Equal(t, "RATE_LIMIT", he.Category)
	require.Equal(t, "TEN_SECONDLY_ROLLING", he.PolicyName)
	require.Equal(t, "You have reached your ten_secondly_rolling limit.", he.Message)
	require.NotEmpty(t, he.CorrelationID)
	require.Equal(t, 10*time.Second, he.RetryAfter, "the fake sends no Retry-After, so the 10 s window is used")
	require.Equal(t, 0, he.RateLimit.Remaining)
	require.Equal(t, 100, he.RateLimit.Max)
	require.Contains(t, he.Error(), "429 RATE_LIMIT: You have reached your ten_secondly_rolling limit. (policy TEN_SECONDLY_ROLLING, correlation id ")

	b.fake.SetMode(hubspotfake.ModeUp)
	res, err := b.client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
	require.NoError(t, err, "the same batch succeeds once the limit lifts")
	require.True(t, res.Records[0].OK())
}

func TestServerErrorsAreRetryable(t *testing.T) {
	t.Parallel()
	t.Run("fake down answers an HTML 503", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.fake.SetMode(hubspotfake.ModeDown)
		_, err := b.client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
		he := hubErr(t, err)
		require.Equal(t, http.StatusServiceUnavailable, he.StatusCode)
		require.True(t, he.Retryable())
		require.Contains(t, he.Message, "503 Service Temporarily Unavailable", "a non-JSON body still tells ops what happened")
		require.Zero(t, he.RetryAfter)
	})
	cases := []struct {
		name    string
		status  int
		headers map[string]string
		body    string
		message string
		corr    string
		wait    time.Duration
	}{
		{"500 with HubSpot's body", 500, nil, `{"status":"error","message":"internal error","correlationId":"corr-500","category":"INTERNAL_ERROR"}`, "internal error", "corr-500", 0},
		{"502 with Retry-After", 502, map[string]string{"Retry-After": "7", "X-HubSpot-Correlation-Id": "corr-hdr"}, `bad gateway`, "bad gateway", "corr-hdr", 7 * time.Second},
		{"503 with Retry-After as a date", 503, map[string]string{"Retry-After": time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}, `{"message":"maintenance"}`, "maintenance", "", 0},
		{"504 with an empty body", 504, nil, ``, "Gateway Timeout", "", 0},
		{"423 record locked", 423, nil, `{"status":"error","message":"locked","category":"LOCKED"}`, "locked", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, _ := serve(t, reply(tc.status, tc.headers, tc.body))
			_, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
			he := hubErr(t, err)
			require.Equal(t, tc.status, he.StatusCode)
			require.True(t, he.Retryable())
			require.True(t, hubspot.IsRetryable(err))
			require.Equal(t, tc.message, he.Message)
			require.Equal(t, tc.corr, he.CorrelationID)
			if tc.status == 503 {
				require.Greater(t, he.RetryAfter, 50*time.Minute, "an HTTP-date Retry-After is read as the time until then")
				return
			}
			require.Equal(t, tc.wait, he.RetryAfter)
		})
	}
}

func TestPermanentErrors(t *testing.T) {
	t.Parallel()
	t.Run("401 from the fake with a wrong token", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		wrong := hubspot.New(hubspot.Config{BaseURL: b.fake.URL(), AccessToken: "pat-na1-wrong-secret"})
		_, err := wrong.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
		he := hubErr(t, err)
		require.Equal(t, http.StatusUnauthorized, he.StatusCode)
		require.Equal(t, "INVALID_AUTHENTICATION", he.Category)
		require.Contains(t, he.Message, "Authentication credentials not found")
		require.NotEmpty(t, he.CorrelationID)
		require.False(t, he.Retryable(), "a wrong token stays wrong")
		require.NotContains(t, err.Error(), "pat-na1-wrong-secret")
		require.NotContains(t, fmt.Sprintf("%+v", he), "pat-na1-wrong-secret")
	})
	cases := []struct {
		status   int
		category string
	}{
		{400, "VALIDATION_ERROR"},
		{401, "INVALID_AUTHENTICATION"},
		{403, "MISSING_SCOPES"},
		{404, "OBJECT_NOT_FOUND"},
		{409, "CONFLICT"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			t.Parallel()
			body := fmt.Sprintf(`{"status":"error","message":"HubSpot says %d","correlationId":"corr-%d","category":%q,"errors":[{"message":"detail","in":"email","code":"X"}]}`,
				tc.status, tc.status, tc.category)
			client, _ := serve(t, reply(tc.status, nil, body))
			_, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
			he := hubErr(t, err)
			require.Equal(t, tc.status, he.StatusCode)
			require.Equal(t, tc.category, he.Category)
			require.Equal(t, fmt.Sprintf("HubSpot says %d", tc.status), he.Message)
			require.Equal(t, fmt.Sprintf("corr-%d", tc.status), he.CorrelationID)
			require.Equal(t, []hubspot.ErrorDetail{{Message: "detail", In: "email", Code: "X"}}, he.Details)
			require.False(t, he.Retryable())
			require.False(t, hubspot.IsRetryable(err))
			_, ok := hubspot.RetryAfter(err)
			require.False(t, ok)
			require.Equal(t, fmt.Sprintf("hubspot: upsert contacts: %d %s: HubSpot says %d (correlation id corr-%d)", tc.status, tc.category, tc.status, tc.status), err.Error())
		})
	}
}

func TestTokenIsRedactedFromEchoedMessages(t *testing.T) {
	t.Parallel()
	client, _ := serve(t, reply(http.StatusBadRequest, nil, `{"status":"error","message":"bad header Bearer `+token+`","category":"VALIDATION_ERROR"}`))
	_, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
	require.Error(t, err)
	require.NotContains(t, err.Error(), token)
	require.Contains(t, err.Error(), "bad header Bearer [redacted]")
}

func TestTokenIsHiddenWhenConfigOrClientIsPrinted(t *testing.T) {
	t.Parallel()
	cfg := hubspot.Config{BaseURL: "https://api.hubapi.com", AccessToken: token, Timeout: time.Second}
	client := hubspot.New(cfg)
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "hubspot", cfg)

	for name, out := range map[string]string{
		"config %v": fmt.Sprintf("%v", cfg), "config %+v": fmt.Sprintf("%+v", cfg), "config %#v": fmt.Sprintf("%#v", cfg),
		"client %v": fmt.Sprintf("%v", client), "client %#v": fmt.Sprintf("%#v", client), "slog": logged.String(),
	} {
		require.NotContains(t, out, token, name)
		require.Contains(t, out, "[redacted]", name)
	}
	require.Contains(t, fmt.Sprint(hubspot.Config{}), "AccessToken:unset", "a missing token is visible as such")
}

func TestTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.SetLatency(time.Minute)
	client := hubspot.New(hubspot.Config{BaseURL: b.fake.URL(), AccessToken: token, Timeout: 50 * time.Millisecond})

	_, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
	he := hubErr(t, err)
	require.Zero(t, he.StatusCode, "no response arrived")
	require.True(t, he.Timeout())
	require.True(t, he.Retryable())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotContains(t, err.Error(), token)
	require.Contains(t, err.Error(), "hubspot: upsert contacts: request failed: ")
}

func TestNetworkErrorIsRetryable(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close() // nothing listens there any more

	client := hubspot.New(hubspot.Config{BaseURL: url, AccessToken: token})
	_, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
	he := hubErr(t, err)
	require.Zero(t, he.StatusCode)
	require.NotNil(t, he.Err)
	require.True(t, he.Retryable())
	require.False(t, he.Timeout())
}

func TestUndecodableSuccessIsRetryable(t *testing.T) {
	t.Parallel()
	client, _ := serve(t, reply(http.StatusOK, nil, `{"status":"COMPLETE","results":[`))
	_, err := client.UpsertContacts(t.Context(), []hubspot.ContactInput{{Email: "a@example.com"}})
	he := hubErr(t, err)
	require.Equal(t, http.StatusOK, he.StatusCode)
	require.True(t, he.Retryable(), "HubSpot probably wrote it; an idempotent upsert may be sent again")
}

func TestInputsRefusedBeforeSending(t *testing.T) {
	t.Parallel()
	tooMany := make([]hubspot.ContactInput, hubspot.MaxBatchSize+1)
	for i := range tooMany {
		tooMany[i] = hubspot.ContactInput{Email: fmt.Sprintf("u%d@example.com", i)}
	}
	cases := []struct {
		name   string
		token  string
		inputs []hubspot.ContactInput
		want   error
	}{
		{"more than 100 inputs", token, tooMany, hubspot.ErrBatchTooLarge},
		{"empty email", token, []hubspot.ContactInput{{Email: "a@example.com"}, {Email: "  "}}, hubspot.ErrEmptyID},
		{"same email twice in another case", token, []hubspot.ContactInput{{Email: "a@example.com"}, {Email: "A@Example.com "}}, hubspot.ErrDuplicateID},
		{"no access token", "", []hubspot.ContactInput{{Email: "a@example.com"}}, hubspot.ErrNoAccessToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			client := hubspot.New(hubspot.Config{BaseURL: b.fake.URL(), AccessToken: tc.token})
			res, err := client.UpsertContacts(t.Context(), tc.inputs)
			require.ErrorIs(t, err, tc.want)
			require.False(t, hubspot.IsRetryable(err))
			require.Empty(t, res.Records)
			require.Zero(t, b.fake.Calls(), "nothing is sent")
		})
	}

	t.Run("100 inputs is allowed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		res, err := b.client.UpsertContacts(t.Context(), tooMany[:hubspot.MaxBatchSize])
		require.NoError(t, err)
		require.Len(t, res.Records, hubspot.MaxBatchSize)
		require.Empty(t, res.Failed())
	})
	t.Run("an empty batch sends nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		res, err := b.client.UpsertContacts(t.Context(), nil)
		require.NoError(t, err)
		require.Empty(t, res.Records)
		require.Zero(t, b.fake.Calls())
	})
}

func TestUpsertCompaniesByTenantID(t *testing.T) {
	t.Parallel()
	b := setup(t)

	res, err := b.client.UpsertCompanies(t.Context(), []hubspot.CompanyInput{
		{TenantID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Properties: map[string]string{"name": "Acme"}},
		{TenantID: "9b2e5f1a-0000-4000-8000-000000000001", Properties: map[string]string{"name": "Globex"}},
	})
	require.NoError(t, err)
	require.Len(t, res.Records, 2)
	require.True(t, res.Records[0].OK())
	require.True(t, res.Records[0].New)

	acme, ok := b.fake.Company("7c9e6679-7425-40de-944b-e07fc1f90ae7")
	require.True(t, ok)
	require.Equal(t, acme.ID, res.Records[0].ObjectID)
	require.Equal(t, "Acme", acme.Properties["name"])
	ups := b.fake.Upserts()
	require.Equal(t, "companies", ups[0].ObjectType)
	require.Equal(t, "portal_tenant_id", ups[0].IDProperty)

	res, err = b.client.UpsertCompanies(t.Context(), []hubspot.CompanyInput{{TenantID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Properties: map[string]string{"name": "Acme Ltd"}}})
	require.NoError(t, err)
	require.False(t, res.Records[0].New)
	require.Equal(t, acme.ID, res.Records[0].ObjectID)
}

func TestConcurrentUseOfOneClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := b.client.UpsertContacts(context.Background(), []hubspot.ContactInput{{Email: fmt.Sprintf("c%d@example.com", i)}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 8, b.fake.Calls())
}

func TestErrorAsFindsTransientNetworkFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.fake.SetLatency(time.Minute)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err := b.client.UpsertContacts(ctx, []hubspot.ContactInput{{Email: "a@example.com"}})
	wrapped := fmt.Errorf("crm push tenant t-1: %w", err)

	var he *hubspot.Error
	require.True(t, errors.As(wrapped, &he), "the worker finds the type through its own wrapping")
	require.True(t, he.Retryable())
	require.True(t, he.Timeout(), "the caller's deadline counts as a timeout")
}

func BenchmarkUpsertContacts(b *testing.B) {
	bb := setup(b)
	inputs := make([]hubspot.ContactInput, hubspot.MaxBatchSize)
	for i := range inputs {
		inputs[i] = hubspot.ContactInput{
			Email:      fmt.Sprintf("user%03d@example.com", i),
			Properties: map[string]string{"firstname": "User", "lastname": fmt.Sprint(i), "portal_tenant_id": "t-1", "lifecyclestage": "customer"},
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, err := bb.client.UpsertContacts(ctx, inputs)
		if err != nil || len(res.Failed()) != 0 {
			b.Fatalf("upsert: %v, %d failed", err, len(res.Failed()))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(inputs)), "ns/record")
}
