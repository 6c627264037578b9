package validation_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/validation"
)

// FuzzDecodeJSON feeds arbitrary bodies to the strict decoder. It must never panic, must answer
// every refusal with a client problem (400, 413 or 422, never a 500), and must never accept a
// body that holds more than one JSON value, invalid UTF-8 or a field the struct does not have.
func FuzzDecodeJSON(f *testing.F) {
	seeds := []string{
		valid,
		`{"subject":"Invoice INV-0042 charged twice","body":"Hi, our card was charged twice for November.","category":"billing","priority":"high","email":"ops@acme.example","attachments":[{"name":"receipt.pdf","size":48213}]}`,
		`{"subject":"s","body":"b","category":"other","tags":["vip","eu"],"related_id":"8d3c1b2e-4a5f-4c6d-9e7f-0a1b2c3d4e5f"}`,
		`{"subject":"s","body":"b","category":"other","tenant_id":"6f1c"}`,
		`{"subject":"s","body":"b","category":"other","attachments":[{"name":"a","size":1,"path":"x"}]}`,
		valid + valid,
		valid + " 1",
		`{"Subject":"case","BODY":"b","category":"other"}`,
		`{"subject":"s","subject":"dup","body":"b","category":"other"}`,
		`{"subject":"\ud800","body":"b","category":"other"}`,
		"{\"subject\":\"\xff\",\"body\":\"b\",\"category\":\"other\"}",
		`[]`, `null`, `""`, `1e999`, `{"attachments":{}}`, `{"size":-1}`, ` `,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	v := validation.New()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/tickets", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		var dst ticketRequest
		err := v.DecodeJSON(req, &dst)
		if err != nil {
			var p *problem.Problem
			if !errors.As(err, &p) {
				t.Fatalf("refusal is not a problem: %v", err)
			}
			if p.Status != 400 && p.Status != 413 && p.Status != 422 {
				t.Fatalf("refusal has status %d: %v", p.Status, err)
			}
			return
		}
		if !utf8.Valid(body) {
			t.Fatalf("accepted invalid UTF-8: %q", body)
		}
		if !json.Valid(body) {
			t.Fatalf("accepted something other than exactly one JSON value: %q", body)
		}
		var generic any
		if err := json.Unmarshal(body, &generic); err != nil {
			t.Fatalf("accepted undecodable body %q: %v", body, err)
		}
		if bad := unknownKey(generic); bad != "" {
			t.Fatalf("accepted unknown field %q in %q", bad, body)
		}
	})
}

var (
	topKeys        = []string{"subject", "body", "category", "priority", "email", "link", "related_id", "code", "tags", "attachments"}
	attachmentKeys = []string{"name", "size"}
)

// unknownKey returns a key of v that ticketRequest does not declare ("" when none). Keys match
// case-insensitively, as encoding/json matches them.
func unknownKey(v any) string {
	obj, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	for k, val := range obj {
		if !knows(topKeys, k) {
			return k
		}
		if strings.EqualFold(k, "attachments") {
			items, _ := val.([]any)
			for _, it := range items {
				o, _ := it.(map[string]any)
				for ak := range o {
					if !knows(attachmentKeys, ak) {
						return ak
					}
				}
			}
		}
	}
	return ""
}

func knows(keys []string, k string) bool {
	for _, want := range keys {
		if strings.EqualFold(want, k) {
			return true
		}
	}
	return false
}
