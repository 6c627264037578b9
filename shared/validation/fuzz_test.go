package validation_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/portal-functions/portal-functions/shared/problem"
	"github.com/portal-functions/portal-functions/shared/validation"
)

// FuzzDecodeJSON feeds arbitrary bodies to the strict decoder. It must never panic, must answer
// every refusal with a client problem (400, 413 or 422, never a 500), and must never accept a
// body that holds more than one JSON value, invalid UTF-8, a field the struct does not have, a
// key spelled in another case than its field, or a key twice in one object (checked here by an
// independent walk over json.Decoder tokens).
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
		`{"\u0053ubject":"s","body":"b","category":"other"}`,
		`{"subject":"s","\u0073ubject":"t","body":"b","category":"other"}`,
		`{"subject":"s","body":"b","category":"other","attachments":[{"name":"a","size":1},{"Name":"b","size":2}]}`,
		`{"subject":"s","body":"b","category":"other","attachments":[{"name":"a","size":1,"size":2}]}`,
		`{"subject":"s","body":"b","category":"other","attachments":[{"name":"a","\u017Fize":1}]}`,
		`{"subject":"{\"a\":1,\"a\":2}","body":"\\\"","category":"other"}`,
		"{\"subject\":\"\xff\",\"body\":\"b\",\"category\":\"other\"}",
		`[]`, `null`, `""`, `1e999`, `{"attachments":{}}`, `{"size":-1}`, ` `,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	v := validation.New()
	f.Fuzz(func(t *testing.T, body []byte) {
		var dst ticketRequest
		err := v.DecodeJSON(jsonRequest(string(body)), &dst)
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
		if bad := badKey(body); bad != "" {
			t.Fatalf("accepted %s in %q", bad, body)
		}
	})
}

var (
	topKeys        = []string{"subject", "body", "category", "priority", "email", "link", "related_id", "code", "tags", "attachments"}
	attachmentKeys = []string{"name", "size"}
)

// badKey walks body's tokens and describes the first key ticketRequest must not accept: one
// it does not declare by exactly that spelling, or one repeated in its object ("" when none).
func badKey(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	var walk func(keys []string) string // keys: the names allowed in this object; nil = any
	walk = func(keys []string) string {
		tok, err := dec.Token()
		if err != nil {
			return "an unreadable body: " + err.Error()
		}
		switch tok {
		case json.Delim('['):
			for dec.More() {
				if bad := walk(keys); bad != "" {
					return bad
				}
			}
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				tok, err := dec.Token()
				if err != nil {
					return "an unreadable key: " + err.Error()
				}
				k := tok.(string)
				if seen[k] {
					return fmt.Sprintf("the repeated key %q", k)
				}
				seen[k] = true
				if keys != nil && !slices.Contains(keys, k) {
					return fmt.Sprintf("the undeclared key %q", k)
				}
				var inner []string
				if keys != nil && k == "attachments" {
					inner = attachmentKeys
				}
				if bad := walk(inner); bad != "" {
					return bad
				}
			}
		default:
			return ""
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return "an unreadable end: " + err.Error()
		}
		return ""
	}
	return walk(topKeys)
}
