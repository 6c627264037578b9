package validation_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/validation"
	"github.com/portal-functions/portal-functions/shared/web"
)

// ticketRequest is shaped like ticket-create's body, with one field per common rule.
type ticketRequest struct {
	Subject     string       `json:"subject" validate:"required,max=200"`
	Body        string       `json:"body" validate:"required,max=20000"`
	Category    string       `json:"category" validate:"required,oneof=billing technical account other"`
	Priority    string       `json:"priority,omitempty" validate:"omitempty,oneof=low normal high urgent"`
	Email       string       `json:"email,omitempty" validate:"omitempty,email"`
	Link        string       `json:"link,omitempty" validate:"omitempty,url"`
	RelatedID   string       `json:"related_id,omitempty" validate:"omitempty,uuid"`
	Code        string       `json:"code,omitempty" validate:"omitempty,len=4"`
	Tags        []string     `json:"tags,omitempty" validate:"max=3,dive,min=2"`
	Attachments []attachment `json:"attachments,omitempty" validate:"max=2,dive"`
}

type attachment struct {
	Name string `json:"name" validate:"required,max=255"`
	Size int64  `json:"size" validate:"min=1,max=10485760"`
}

type bundle struct {
	srv *httptest.Server
}

// setup serves a handler that decodes a ticketRequest behind the standard middleware with a
// small body limit, echoing the decoded value back.
func setup(t *testing.T) bundle {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req ticketRequest
		if err := validation.DecodeJSON(r, &req); err != nil {
			web.Error(w, r, err)
			return
		}
		web.JSON(w, http.StatusOK, req)
	})
	srv := httptest.NewServer(web.Wrap(h, web.Options{MaxBody: 1024, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	return bundle{srv: srv}
}

func (b bundle) post(t *testing.T, contentType, body string) (int, problem.Problem) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := b.srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var p problem.Problem
	if res.StatusCode >= 400 {
		require.Equal(t, problem.ContentType, res.Header.Get("Content-Type"))
		require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
	}
	return res.StatusCode, p
}

// jsonRequest is a POST of body as application/json, for calling DecodeJSON directly.
func jsonRequest(body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/v1/tickets", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

const valid = `{"subject":"Invoice","body":"Charged twice","category":"billing"}`

func TestDecodeJSONAnswersEachFailureWithItsStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)

	cases := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int
		wantDetail  string
	}{
		{name: "valid", contentType: "application/json", body: valid, wantStatus: 200},
		{name: "charset is allowed", contentType: "application/json; charset=UTF-8", body: valid, wantStatus: 200},
		{name: "surrounding whitespace is fine", contentType: "application/json", body: "\n " + valid + "\n", wantStatus: 200},
		{name: "no content type", body: valid, wantStatus: 415},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: valid, wantStatus: 415},
		{name: "text/plain", contentType: "text/plain", body: valid, wantStatus: 415},
		{name: "other charset", contentType: "application/json; charset=latin1", body: valid, wantStatus: 415},
		{name: "unparseable content type", contentType: "application/json; =", body: valid, wantStatus: 415},
		{name: "too large", contentType: "application/json",
			body: `{"subject":"` + strings.Repeat("a", 2000) + `"}`, wantStatus: 413, wantDetail: "at most 1024 bytes"},
		{name: "empty body", contentType: "application/json", body: "", wantStatus: 400, wantDetail: "empty"},
		{name: "whitespace only", contentType: "application/json", body: "  \n", wantStatus: 400, wantDetail: "empty"},
		{name: "syntax error says where", contentType: "application/json", body: `{"subject": x}`, wantStatus: 400, wantDetail: "at byte 13"},
		{name: "truncated", contentType: "application/json", body: `{"subject": "a"`, wantStatus: 400, wantDetail: "ends early"},
		{name: "unknown field", contentType: "application/json",
			body: `{"subject":"a","body":"b","category":"other","tenant_id":"x"}`, wantStatus: 400, wantDetail: `unknown field "tenant_id"`},
		{name: "unknown nested field", contentType: "application/json",
			body:       `{"subject":"a","body":"b","category":"other","attachments":[{"name":"a","size":1,"path":"/etc"}]}`,
			wantStatus: 400, wantDetail: `unknown field "path"`},
		{name: "long unknown field is not echoed whole", contentType: "application/json",
			body: `{"` + strings.Repeat("k", 500) + `":1}`, wantStatus: 400, wantDetail: "…"},
		{name: "two values", contentType: "application/json", body: valid + valid, wantStatus: 400, wantDetail: "exactly one JSON value"},
		{name: "trailing garbage", contentType: "application/json", body: valid + " x", wantStatus: 400, wantDetail: "exactly one JSON value"},
		{name: "invalid UTF-8", contentType: "application/json",
			body: "{\"subject\":\"\xff\xfe\",\"body\":\"b\",\"category\":\"other\"}", wantStatus: 400, wantDetail: "UTF-8"},
		{name: "array instead of object", contentType: "application/json", body: `[1,2]`, wantStatus: 400, wantDetail: "the request body must be an object"},
		{name: "null fails the rules", contentType: "application/json", body: `null`, wantStatus: 422},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, p := b.post(t, tc.contentType, tc.body)
			require.Equal(t, tc.wantStatus, status, p.Detail)
			if tc.wantDetail != "" {
				require.Contains(t, p.Detail, tc.wantDetail)
			}
			require.Less(t, len(p.Detail), 200, "the detail never echoes large input")
		})
	}
}

// TestDecodeJSONRefusesRepeatedAndMiscasedKeys closes encoding/json's parser differential: it
// would take {"Subject": ...} as subject and let the last of two equal keys win, so a proxy or
// log that reads the body differently would see another request than the one we run.
func TestDecodeJSONRefusesRepeatedAndMiscasedKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)

	const rest = `"body":"b","category":"other"`
	cases := []struct {
		name       string
		body       string
		wantDetail string // "" means accepted
	}{
		{name: "repeated key", body: `{"subject":"a","subject":"b",` + rest + `}`,
			wantDetail: `duplicate key "subject"`},
		{name: "key in another case", body: `{"Subject":"a",` + rest + `}`,
			wantDetail: `key "Subject" must be spelled "subject"`},
		{name: "all capitals after the exact key", body: `{"subject":"a","SUBJECT":"b",` + rest + `}`,
			wantDetail: `key "SUBJECT" must be spelled "subject"`},
		{name: "escaped key in another case", body: `{"\u0053ubject":"a",` + rest + `}`,
			wantDetail: `key "Subject" must be spelled "subject"`},
		{name: "escaped repeat of a key", body: `{"subject":"a","\u0073ubject":"b",` + rest + `}`,
			wantDetail: `duplicate key "subject"`},
		{name: "long s folds to s", body: `{"subject":"a",` + rest + `,"attachments":[{"name":"n","\u017Fize":1}]}`,
			wantDetail: `key "ſize" must be spelled "size" (keys are case-sensitive) in attachments[0]`},
		{name: "repeated key inside a slice of structs", body: `{"subject":"a",` + rest + `,"attachments":[{"name":"a","size":1},{"name":"b","size":1,"size":2}]}`,
			wantDetail: `duplicate key "size" in attachments[1]`},
		{name: "key in another case inside a slice of structs", body: `{"subject":"a",` + rest + `,"attachments":[{"Name":"a","size":1}]}`,
			wantDetail: `key "Name" must be spelled "name" (keys are case-sensitive) in attachments[0]`},
		{name: "the same key in sibling objects is fine", body: `{"subject":"a",` + rest + `,"attachments":[{"name":"a","size":1},{"name":"b","size":2}]}`},
		{name: "key-like text inside strings is data", body: `{"subject":"{\"subject\":1,\"Subject\":2}","body":"a \\\" \"b\"","category":"other"}`},
		{name: "keys in any order with whitespace", body: "{ \"category\" : \"other\" ,\n\t\"body\":\"b\", \"tags\" : [ \"aa\" , \"bb\" ] ,\"subject\":\"a\" }"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, p := b.post(t, "application/json", tc.body)
			if tc.wantDetail == "" {
				require.Equal(t, http.StatusOK, status, p.Detail)
				return
			}
			require.Equal(t, http.StatusBadRequest, status)
			require.Equal(t, problem.TypeMalformed, p.Type)
			require.Contains(t, p.Detail, tc.wantDetail)
		})
	}
}

// node holds every kind of value the key check walks: promoted fields of an embedded struct,
// a map, a value that decodes itself, an interface, a pointer and a recursive slice.
type node struct {
	base
	Kind     string          `json:"kind"`
	Meta     map[string]any  `json:"meta"`
	Raw      json.RawMessage `json:"raw"`
	Any      any             `json:"any"`
	Ptr      *base           `json:"ptr"`
	Children []node          `json:"children"`
}

type base struct {
	ID   string `json:"id"`
	Note string // no tag: its JSON name is its Go name
}

func TestDecodeJSONChecksKeysInEveryKindOfValue(t *testing.T) {
	t.Parallel()
	v := validation.New()
	manyKeys := func(dup bool) string {
		var sb strings.Builder
		for i := range 40 {
			fmt.Fprintf(&sb, `"k%d":%d,`, i, i)
		}
		if dup {
			sb.WriteString(`"k7":0,`)
		}
		sb.WriteString(`"last":0`)
		return `{"meta":{` + sb.String() + `}}`
	}

	cases := []struct {
		name       string
		body       string
		wantDetail string // "" means accepted
	}{
		{name: "every kind, exact keys",
			body: `{"id":"1","Note":"n","kind":"k","meta":{"A":1,"a":2},"raw":{"x":1,"X":2},"any":{"k":[{"a":1}]},"ptr":{"id":"3"},"children":[{"kind":"c","children":[{"id":"2"}]}]}`},
		{name: "promoted field in another case", body: `{"ID":"1"}`, wantDetail: `key "ID" must be spelled "id"`},
		{name: "untagged field by its JSON name only", body: `{"note":"n"}`, wantDetail: `key "note" must be spelled "Note"`},
		{name: "repeat inside a map", body: `{"meta":{"a":1,"b":{"c":1,"c":2}}}`, wantDetail: `duplicate key "c" in meta.b`},
		{name: "repeat inside a value that decodes itself", body: `{"raw":{"x":1,"x":2}}`, wantDetail: `duplicate key "x" in raw`},
		{name: "repeat deep inside an interface", body: `{"any":{"k":[1,{"a":1,"a":1}]}}`, wantDetail: `duplicate key "a" in any.k[1]`},
		{name: "another case behind a pointer", body: `{"ptr":{"Id":"3"}}`, wantDetail: `key "Id" must be spelled "id" (keys are case-sensitive) in ptr`},
		{name: "another case in a recursive type", body: `{"children":[{"children":[{"kind":"a"},{"KIND":"b"}]}]}`,
			wantDetail: `key "KIND" must be spelled "kind" (keys are case-sensitive) in children[0].children[1]`},
		{name: "a large map with distinct keys", body: manyKeys(false)},
		{name: "a large map with a repeat", body: manyKeys(true), wantDetail: `duplicate key "k7" in meta`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var dst node
			err := v.DecodeJSON(jsonRequest(tc.body), &dst)
			if tc.wantDetail == "" {
				require.NoError(t, err)
				return
			}
			var p *problem.Problem
			require.ErrorAs(t, err, &p)
			require.Equal(t, http.StatusBadRequest, p.Status)
			require.Contains(t, p.Detail, tc.wantDetail)
		})
	}
}

func TestDecodeJSONReportsFieldsByJSONNameWithReadableMessages(t *testing.T) {
	t.Parallel()
	b := setup(t)

	cases := []struct {
		name   string
		body   string
		fields []problem.FieldError
	}{
		{name: "required", body: `{"body":"b","category":"other"}`,
			fields: []problem.FieldError{{Field: "subject", Message: "is required"}}},
		{name: "max on a string", body: `{"subject":"` + strings.Repeat("s", 201) + `","body":"b","category":"other"}`,
			fields: []problem.FieldError{{Field: "subject", Message: "must be at most 200 characters long"}}},
		{name: "oneof", body: `{"subject":"s","body":"b","category":"sales"}`,
			fields: []problem.FieldError{{Field: "category", Message: "must be one of: billing, technical, account, other"}}},
		{name: "email url uuid len", body: `{"subject":"s","body":"b","category":"other","email":"nope","link":"nope","related_id":"nope","code":"12345"}`,
			fields: []problem.FieldError{
				{Field: "email", Message: "must be a valid email address"},
				{Field: "link", Message: "must be a valid URL"},
				{Field: "related_id", Message: "must be a valid UUID"},
				{Field: "code", Message: "must be exactly 4 characters long"},
			}},
		{name: "too many items and dive into elements", body: `{"subject":"s","body":"b","category":"other","tags":["a","bb","cc","dd"]}`,
			fields: []problem.FieldError{{Field: "tags", Message: "must have at most 3 items"}}},
		{name: "dive into strings", body: `{"subject":"s","body":"b","category":"other","tags":["bb","a"]}`,
			fields: []problem.FieldError{{Field: "tags[1]", Message: "must be at least 2 characters long"}}},
		{name: "nested path", body: `{"subject":"s","body":"b","category":"other","attachments":[{"name":"a","size":1},{"name":"","size":0}]}`,
			fields: []problem.FieldError{
				{Field: "attachments[1].name", Message: "is required"},
				{Field: "attachments[1].size", Message: "must be at least 1"},
			}},
		{name: "wrong type is a field error", body: `{"subject":5,"body":"b","category":"other"}`,
			fields: []problem.FieldError{{Field: "subject", Message: "must be a string"}}},
		{name: "wrong nested type", body: `{"subject":"s","body":"b","category":"other","attachments":[{"name":"a","size":"big"}]}`,
			fields: []problem.FieldError{{Field: "attachments.size", Message: "must be a whole number"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, p := b.post(t, "application/json", tc.body)
			require.Equal(t, http.StatusUnprocessableEntity, status)
			require.Equal(t, problem.TypeValidation, p.Type)
			require.Equal(t, tc.fields, p.Errors)
		})
	}
}

func TestStructValidatesValuesThatDidNotComeOverHTTP(t *testing.T) {
	t.Parallel()
	err := validation.Struct(&ticketRequest{Subject: "s", Body: "b", Category: "other", Priority: "asap"})
	var p *problem.Problem
	require.ErrorAs(t, err, &p)
	require.Equal(t, []problem.FieldError{{Field: "priority", Message: "must be one of: low, normal, high, urgent"}}, p.Errors)
	require.Contains(t, err.Error(), "priority must be one of", "the error reads well in a CLI report too")

	require.NoError(t, validation.Struct(ticketRequest{Subject: "s", Body: "b", Category: "other"}))
	require.NoError(t, validation.Struct(map[string]string{"a": "b"}), "values without rules pass")
}

func TestDecodeJSONRefusesANonPointerAsAProgrammingError(t *testing.T) {
	t.Parallel()
	err := validation.New().DecodeJSON(jsonRequest(valid), ticketRequest{})
	require.Error(t, err)
	var p *problem.Problem
	require.False(t, errors.As(err, &p), "a bug in our code is a 500, not the caller's fault")
}

// everyRule has one field per tag with a message of its own.
type everyRule struct {
	Qty      int               `json:"qty" validate:"gt=0"`
	Discount int               `json:"discount" validate:"lt=100"`
	Seats    int               `json:"seats" validate:"gte=1,lte=50"`
	Version  string            `json:"version" validate:"eq=v1"`
	Name     string            `json:"name" validate:"ne=admin"`
	Phone    string            `json:"phone" validate:"e164"`
	Currency string            `json:"currency" validate:"iso4217"`
	Country  string            `json:"country" validate:"iso3166_1_alpha2"`
	Day      string            `json:"day" validate:"datetime=2006-01-02"`
	Code     string            `json:"code" validate:"alphanum"`
	Plain    string            `json:"plain" validate:"printascii"`
	IDs      []string          `json:"ids" validate:"unique"`
	Host     string            `json:"host" validate:"hostname"`
	Ref      string            `json:"ref" validate:"startswith=in_"`
	File     string            `json:"file" validate:"endswith=.pdf"`
	Note     string            `json:"note" validate:"contains=ok"`
	Safe     string            `json:"safe" validate:"excludesall=<>"`
	Amount   string            `json:"amount" validate:"numeric"`
	Labels   map[string]string `json:"labels" validate:"min=1"`
	Color    string            `json:"color" validate:"hexcolor"`
	Internal string            `json:"-" validate:"required"`
}

func TestStructMessagesForCommonRules(t *testing.T) {
	t.Parallel()
	err := validation.Struct(everyRule{
		Seats: 51, Version: "v2", Name: "admin", Phone: "555", Currency: "euros", Country: "France",
		Day: "yesterday", Code: "a-b", Plain: "é", IDs: []string{"a", "a"}, Host: "-bad-", Ref: "ch_1",
		File: "a.exe", Note: "no", Safe: "<b>", Amount: "ten", Discount: 100, Color: "red",
	})
	var p *problem.Problem
	require.ErrorAs(t, err, &p)
	got := map[string]string{}
	for _, f := range p.Errors {
		got[f.Field] = f.Message
	}
	require.Equal(t, map[string]string{
		"qty":      "must be more than 0",
		"discount": "must be less than 100",
		"seats":    "must be at most 50",
		"version":  "must be v1",
		"name":     "must not be admin",
		"phone":    "must be a phone number in international format, like +14155550100",
		"currency": "must be a three-letter currency code",
		"country":  "must be a two-letter country code",
		"day":      "must be a date and time in the format 2006-01-02",
		"code":     "must contain only letters and digits",
		"plain":    "must contain only plain ASCII characters",
		"ids":      "must not contain duplicates",
		"host":     "must be a valid host name",
		"ref":      "must start with in_",
		"file":     "must end with .pdf",
		"note":     "must contain ok",
		"safe":     "contains characters that are not allowed",
		"amount":   "must be a number",
		"labels":   "must have at least 1 item",
		"color":    "is invalid",
		"Internal": "is required",
	}, got)
}
