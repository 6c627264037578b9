package validation_test

import (
	"testing"

	"github.com/portal-functions/portal-functions/shared/validation"
)

// benchBody is a realistic ticket-create body: every field set, two attachments.
const benchBody = `{"subject":"Invoice INV-0042 charged twice","body":"Hi, our card was charged twice for November. Could you refund one of the two charges? Thanks, Ana","category":"billing","priority":"high","email":"ops@acme.example","related_id":"8d3c1b2e-4a5f-4c6d-9e7f-0a1b2c3d4e5f","tags":["vip","eu"],"attachments":[{"name":"receipt.pdf","size":48213},{"name":"statement.pdf","size":91022}]}`

// BenchmarkDecodeJSON measures the whole strict path a portal write pays: content type,
// read, UTF-8, decode, key checks and validation rules.
func BenchmarkDecodeJSON(b *testing.B) {
	v := validation.New()
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		var dst ticketRequest
		if err := v.DecodeJSON(jsonRequest(benchBody), &dst); err != nil {
			b.Fatal(err)
		}
	}
}
