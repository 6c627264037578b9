package hubspotfake_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/hubspot/hubspotfake"
)

const contactsPath = "/crm/v3/objects/contacts/batch/upsert"

type bundle struct {
	srv *hubspotfake.Server
}

func setup(t *testing.T) bundle {
	t.Helper()
	return bundle{srv: hubspotfake.NewTest(t)}
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// do sends a raw request, so these tests check the fake against HubSpot's contract without
// going through the client they are an oracle for.
func (b bundle) do(t *testing.T, method, path, auth string, body any) reply {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		data, err := json.Marshal(v)
		require.NoError(t, err)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.srv.URL()+path, rd)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

func (b bundle) upsert(t *testing.T, path string, inputs ...map[string]any) reply {
	t.Helper()
	return b.do(t, http.MethodPost, path, "Bearer "+hubspotfake.DefaultAccessToken, map[string]any{"inputs": inputs})
}

func contact(email, traceID string, props map[string]string) map[string]any {
	in := map[string]any{"idProperty": "email", "id": email, "properties": props}
	if traceID != "" {
		in["objectWriteTraceId"] = traceID
	}
	return in
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(r.body, &v), "body: %s", r.body)
	return v
}

func TestUpsertContactsCreatesThenUpdates(t *testing.T) {
	t.Parallel()
	b := setup(t)

	first := b.upsert(t, contactsPath, contact("Ada@Example.com", "0", map[string]string{"firstname": "Ada", "company": "Analytical"}))
	require.Equal(t, http.StatusOK, first.status, "body: %s", first.body)
	require.Equal(t, "application/json;charset=utf-8", first.header.Get("Content-Type"))
	require.NotEmpty(t, first.header.Get("X-HubSpot-Correlation-Id"))
	created := decode[hubspotfake.BatchResponse](t, first)
	require.Equal(t, "COMPLETE", created.Status)
	require.Len(t, created.Results, 1)
	res := created.Results[0]
	require.True(t, res.New)
	require.NotEmpty(t, res.ID)
	require.Equal(t, "0", res.ObjectWriteTraceID)
	require.Equal(t, "ada@example.com", res.Properties["email"], "HubSpot stores emails lower-cased")
	require.Equal(t, "Ada", res.Properties["firstname"])
	require.Equal(t, res.ID, res.Properties["hs_object_id"])
	_, err := time.Parse(time.RFC3339Nano, res.CreatedAt)
	require.NoError(t, err)
	require.Zero(t, created.NumErrors)
	require.Empty(t, created.Errors)

	second := b.upsert(t, contactsPath, contact("ada@example.com", "0", map[string]string{"lastname": "Lovelace", "company": ""}))
	require.Equal(t, http.StatusOK, second.status, "body: %s", second.body)
	updated := decode[hubspotfake.BatchResponse](t, second).Results[0]
	require.False(t, updated.New)
	require.Equal(t, res.ID, updated.ID, "same email, same record")

	got, ok := b.srv.Contact("ADA@example.com")
	require.True(t, ok)
	require.Equal(t, res.ID, got.ID)
	require.Equal(t, "ada@example.com", got.Email)
	require.Equal(t, map[string]string{"email": "ada@example.com", "firstname": "Ada", "lastname": "Lovelace"}, got.Properties,
		"properties merge and an empty string clears one")
	require.False(t, got.UpdatedAt.Before(got.CreatedAt))

	_, ok = b.srv.Contact("nobody@example.com")
	require.False(t, ok)
	require.Equal(t, 2, b.srv.Calls())
}

func TestUpsertsRecordsEveryInputInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)

	b.upsert(t, contactsPath, contact("a@example.com", "0", map[string]string{"x": "1"}), contact("not-an-email", "1", nil))
	b.upsert(t, contactsPath, contact("b@example.com", "0", nil))

	ups := b.srv.Upserts()
	require.Len(t, ups, 3, "refused inputs are recorded too")
	require.Equal(t, []string{"a@example.com", "not-an-email", "b@example.com"}, []string{ups[0].ID, ups[1].ID, ups[2].ID})
	require.Equal(t, "contacts", ups[0].ObjectType)
	require.Equal(t, "email", ups[0].IDProperty)
	require.Equal(t, map[string]string{"x": "1"}, ups[0].Properties)
	require.Equal(t, "1", ups[1].ObjectWriteTraceID)
	require.False(t, ups[0].At.IsZero())
	require.False(t, ups[2].At.Before(ups[0].At))

	ups[0].Properties["x"] = "changed"
	require.Equal(t, "1", b.srv.Upserts()[0].Properties["x"], "callers get copies")
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		auth string
	}{
		{"missing header", ""},
		{"wrong token", "Bearer pat-na1-wrong"},
		{"empty bearer", "Bearer "},
		{"not a bearer", "Basic " + hubspotfake.DefaultAccessToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			r := b.do(t, http.MethodPost, contactsPath, tc.auth, map[string]any{"inputs": []any{contact("a@example.com", "0", nil)}})
			require.Equal(t, http.StatusUnauthorized, r.status)
			body := decode[hubspotfake.ErrorResponse](t, r)
			require.Equal(t, "error", body.Status)
			require.Equal(t, "INVALID_AUTHENTICATION", body.Category)
			require.Contains(t, body.Message, "Authentication credentials not found")
			require.NotEmpty(t, body.CorrelationID)
			require.Empty(t, b.srv.Upserts(), "an unauthenticated request writes and records nothing")
			_, ok := b.srv.Contact("a@example.com")
			require.False(t, ok)
			require.Equal(t, 1, b.srv.Calls())
		})
	}
}

func TestSetAccessToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.SetAccessToken("pat-na1-from-env")
	require.Equal(t, "pat-na1-from-env", b.srv.AccessToken())

	r := b.upsert(t, contactsPath, contact("a@example.com", "0", nil))
	require.Equal(t, http.StatusUnauthorized, r.status, "the default token no longer works")
	r = b.do(t, http.MethodPost, contactsPath, "Bearer pat-na1-from-env", map[string]any{"inputs": []any{contact("a@example.com", "0", nil)}})
	require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
}

func TestInvalidEmailFailsOnlyItsRecordInMultiStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.upsert(t, contactsPath,
		contact("good@example.com", "0", nil),
		contact("bad@@example", "1", nil),
		contact("also-good@example.org", "2", nil))
	require.Equal(t, http.StatusMultiStatus, r.status, "body: %s", r.body)
	body := decode[hubspotfake.BatchResponse](t, r)
	require.Equal(t, "COMPLETE", body.Status)
	require.Equal(t, 1, body.NumErrors)
	require.Len(t, body.Results, 2)
	require.Equal(t, []string{"0", "2"}, []string{body.Results[0].ObjectWriteTraceID, body.Results[1].ObjectWriteTraceID})
	require.Len(t, body.Errors, 1)
	e := body.Errors[0]
	require.Equal(t, "error", e.Status)
	require.Equal(t, "VALIDATION_ERROR", e.Category)
	require.Equal(t, []string{"1"}, e.Context["objectWriteTraceId"])
	require.Contains(t, e.Message, "Property values were not valid")
	require.Contains(t, e.Message, "INVALID_EMAIL")
	require.Equal(t, "INVALID_EMAIL", e.Errors[0].Code)

	_, ok := b.srv.Contact("good@example.com")
	require.True(t, ok)
	_, ok = b.srv.Contact("bad@@example")
	require.False(t, ok)
}

func TestInvalidEmailFailsWholeBatchWithoutTraceIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.upsert(t, contactsPath, contact("good@example.com", "", nil), contact("bad@example", "", nil))
	require.Equal(t, http.StatusBadRequest, r.status, "body: %s", r.body)
	body := decode[hubspotfake.ErrorResponse](t, r)
	require.Equal(t, "VALIDATION_ERROR", body.Category)
	require.Contains(t, body.Message, "Email address bad@example is invalid")
	_, ok := b.srv.Contact("good@example.com")
	require.False(t, ok, "a refused batch writes nothing")
}

func TestFailEmail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.FailEmail("Stuck@Example.com", http.StatusConflict)

	r := b.upsert(t, contactsPath, contact("ok@example.com", "0", nil), contact("stuck@example.com", "1", nil))
	require.Equal(t, http.StatusMultiStatus, r.status, "body: %s", r.body)
	body := decode[hubspotfake.BatchResponse](t, r)
	require.Len(t, body.Results, 1)
	require.Equal(t, "CONFLICT", body.Errors[0].Category)
	require.Equal(t, []string{"1"}, body.Errors[0].Context["objectWriteTraceId"])

	r = b.upsert(t, contactsPath, contact("stuck@example.com", "", nil))
	require.Equal(t, http.StatusConflict, r.status, "alone and without a trace id, the request takes the record's status")
	require.Equal(t, "CONFLICT", decode[hubspotfake.ErrorResponse](t, r).Category)

	b.srv.FailEmail("stuck@example.com", 0)
	r = b.upsert(t, contactsPath, contact("stuck@example.com", "0", nil))
	require.Equal(t, http.StatusOK, r.status, "status 0 lifts the failure")
}

func TestModes(t *testing.T) {
	t.Parallel()
	b := setup(t)

	b.srv.SetMode(hubspotfake.ModeDown)
	require.Equal(t, hubspotfake.ModeDown, b.srv.Mode())
	r := b.upsert(t, contactsPath, contact("a@example.com", "0", nil))
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Contains(t, r.header.Get("Content-Type"), "text/html")
	require.Contains(t, string(r.body), "503 Service Temporarily Unavailable")

	b.srv.SetMode(hubspotfake.ModeRateLimited)
	r = b.upsert(t, contactsPath, contact("a@example.com", "0", nil))
	require.Equal(t, http.StatusTooManyRequests, r.status)
	rl := decode[hubspotfake.RateLimitResponse](t, r)
	require.Equal(t, "error", rl.Status)
	require.Equal(t, "RATE_LIMIT", rl.ErrorType)
	require.Equal(t, "TEN_SECONDLY_ROLLING", rl.PolicyName)
	require.Equal(t, "You have reached your ten_secondly_rolling limit.", rl.Message)
	require.NotEmpty(t, rl.CorrelationID)
	require.Equal(t, "100", r.header.Get("X-HubSpot-RateLimit-Max"))
	require.Equal(t, "0", r.header.Get("X-HubSpot-RateLimit-Remaining"))
	require.Equal(t, "10000", r.header.Get("X-HubSpot-RateLimit-Interval-Milliseconds"))
	require.Equal(t, "250000", r.header.Get("X-HubSpot-RateLimit-Daily"))
	require.NotEmpty(t, r.header.Get("X-HubSpot-RateLimit-Daily-Remaining"))
	require.Equal(t, "0", r.header.Get("X-HubSpot-RateLimit-Secondly-Remaining"))

	_, ok := b.srv.Contact("a@example.com")
	require.False(t, ok, "neither down nor rate-limited requests write")
	require.Empty(t, b.srv.Upserts())

	b.srv.SetMode(hubspotfake.ModeUp)
	r = b.upsert(t, contactsPath, contact("a@example.com", "0", nil))
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "100", r.header.Get("X-HubSpot-RateLimit-Max"), "rate-limit headers come on every answer")
	require.Equal(t, 3, b.srv.Calls())
}

func TestRequestValidation(t *testing.T) {
	t.Parallel()
	tooMany := make([]any, hubspotfake.MaxBatchSize+1)
	for i := range tooMany {
		tooMany[i] = contact(fmt.Sprintf("u%d@example.com", i), fmt.Sprint(i), nil)
	}
	cases := []struct {
		name     string
		method   string
		path     string
		body     any
		status   int
		category string
		message  string
	}{
		{"more than 100 inputs", http.MethodPost, contactsPath, map[string]any{"inputs": tooMany}, 400, "VALIDATION_ERROR", "101"},
		{"no inputs", http.MethodPost, contactsPath, map[string]any{"inputs": []any{}}, 400, "VALIDATION_ERROR", "at least one"},
		{"same email twice, any case", http.MethodPost, contactsPath,
			map[string]any{"inputs": []any{contact("a@example.com", "0", nil), contact("A@Example.com", "1", nil)}}, 400, "VALIDATION_ERROR", "Duplicate IDs"},
		{"non-unique idProperty", http.MethodPost, contactsPath,
			map[string]any{"inputs": []any{map[string]any{"idProperty": "firstname", "id": "Ada", "objectWriteTraceId": "0"}}}, 400, "VALIDATION_ERROR", "non-unique 0-1 property firstname"},
		{"unknown field", http.MethodPost, contactsPath, `{"inputs":[],"extra":1}`, 400, "VALIDATION_ERROR", "Invalid input JSON"},
		{"malformed JSON", http.MethodPost, contactsPath, `{"inputs":`, 400, "VALIDATION_ERROR", "Invalid input JSON"},
		{"unknown object type", http.MethodPost, "/crm/v3/objects/deals/batch/upsert", map[string]any{"inputs": []any{}}, 404, "OBJECT_NOT_FOUND", "No route"},
		{"wrong method", http.MethodGet, contactsPath, nil, 405, "VALIDATION_ERROR", "GET"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			r := b.do(t, tc.method, tc.path, "Bearer "+hubspotfake.DefaultAccessToken, tc.body)
			require.Equal(t, tc.status, r.status, "body: %s", r.body)
			body := decode[hubspotfake.ErrorResponse](t, r)
			require.Equal(t, "error", body.Status)
			require.Equal(t, tc.category, body.Category)
			require.Contains(t, body.Message, tc.message)
			require.NotEmpty(t, body.CorrelationID)
			_, ok := b.srv.Contact("a@example.com")
			require.False(t, ok)
		})
	}
}

func TestUpsertCompaniesByTenantID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const path = "/crm/v3/objects/companies/batch/upsert"
	company := func(tenant, trace string, props map[string]string) map[string]any {
		return map[string]any{"idProperty": "portal_tenant_id", "id": tenant, "objectWriteTraceId": trace, "properties": props}
	}

	r := b.upsert(t, path, company("t-1", "0", map[string]string{"name": "Acme"}), company("", "1", nil))
	require.Equal(t, http.StatusMultiStatus, r.status, "body: %s", r.body)
	body := decode[hubspotfake.BatchResponse](t, r)
	require.True(t, body.Results[0].New)
	require.Equal(t, "t-1", body.Results[0].Properties["portal_tenant_id"])
	require.Equal(t, []string{"1"}, body.Errors[0].Context["objectWriteTraceId"], "an empty tenant id is refused alone")

	r = b.upsert(t, path, company("t-1", "0", map[string]string{"name": "Acme Ltd"}))
	require.Equal(t, http.StatusOK, r.status)
	again := decode[hubspotfake.BatchResponse](t, r).Results[0]
	require.False(t, again.New)
	require.Equal(t, body.Results[0].ID, again.ID)

	got, ok := b.srv.Company("t-1")
	require.True(t, ok)
	require.Equal(t, "Acme Ltd", got.Properties["name"])
	require.Equal(t, "t-1", got.TenantID)

	r = b.upsert(t, path, map[string]any{"idProperty": "domain", "id": "acme.com", "objectWriteTraceId": "0"})
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, decode[hubspotfake.ErrorResponse](t, r).Message, "non-unique 0-2 property domain")
}

func TestLatencyEndsWhenClientGivesUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.SetLatency(time.Minute)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	data, err := json.Marshal(map[string]any{"inputs": []any{contact("a@example.com", "0", nil)}})
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.srv.URL()+contactsPath, bytes.NewReader(data))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+hubspotfake.DefaultAccessToken)
	_, err = http.DefaultClient.Do(req)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	b.srv.SetLatency(0)
	r := b.upsert(t, contactsPath, contact("b@example.com", "0", nil))
	require.Equal(t, http.StatusOK, r.status)
	_, ok := b.srv.Contact("a@example.com")
	require.False(t, ok, "a request abandoned during the wait is not processed")
}

func TestConcurrentUpsertsKeepOneRecordPerEmail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const workers = 16
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			b.upsert(t, contactsPath, contact("shared@example.com", "0", map[string]string{"n": fmt.Sprint(i)}),
				contact(fmt.Sprintf("own%d@example.com", i), "1", nil))
		})
		if i%4 == 0 {
			b.srv.SetMode(hubspotfake.ModeUp) // switching modes while serving must be safe
		}
	}
	wg.Wait()

	require.Equal(t, workers, b.srv.Calls())
	require.Len(t, b.srv.Upserts(), 2*workers)
	shared, ok := b.srv.Contact("shared@example.com")
	require.True(t, ok)
	ids := map[string]bool{shared.ID: true}
	for i := range workers {
		c, ok := b.srv.Contact(fmt.Sprintf("own%d@example.com", i))
		require.True(t, ok)
		require.False(t, ids[c.ID], "every record gets its own id")
		ids[c.ID] = true
	}
}

func TestEmailValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		email string
		valid bool
	}{
		{"ada@example.com", true},
		{"Ada.Lovelace+crm@sub.example.co.uk", true},
		{"xyz@test.design", true},
		{"plain", false},
		{"no-domain@", false},
		{"@example.com", false},
		{"bad@@example.com", false},
		{"no-tld@example", false},
		{"numeric-tld@example.123", false},
		{"one-letter-tld@example.c", false},
		{`"quoted"@example.com`, false},
		{"Ada <ada@example.com>", false},
		{"dots@example..com", false},
	}
	for _, tc := range cases {
		t.Run(tc.email, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			r := b.upsert(t, contactsPath, contact(tc.email, "0", nil))
			if tc.valid {
				require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
				return
			}
			require.Equal(t, http.StatusMultiStatus, r.status, "body: %s", r.body)
			require.Equal(t, "VALIDATION_ERROR", decode[hubspotfake.BatchResponse](t, r).Errors[0].Category)
		})
	}
}
