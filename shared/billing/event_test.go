package billing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/stretchr/testify/require"

	"github.com/portal-functions/portal-functions/shared/billing/stripemock"
)

// ParseEvent decodes data.object together with the envelope; what the handlers then read is
// exactly what decoding the object on its own, by its type, gives. A body the one pass cannot
// take (a field only another type reads, in a shape that type would refuse) is decoded the old
// way and is accepted or refused as before.
func TestEventIsDecodedOnceWithTheSameEffect(t *testing.T) {
	t.Parallel()
	fixture := func(name string, edit func(map[string]any)) map[string]any {
		obj := stripemock.Fixture(t, name)
		edit(obj)
		return obj
	}
	cases := []struct {
		name, typ  string
		obj        map[string]any
		onePass    bool
		refusedToo bool
	}{
		{"checkout session", TypeCheckoutCompleted, fixture("checkout.session", func(o map[string]any) {
			o["customer"], o["client_reference_id"], o["metadata"] = "cus_1", "00000000-0000-4000-8000-000000000001", map[string]any{"tenant_id": "t"}
		}), true, false},
		{"subscription", TypeSubscriptionUpdated, fixture("subscription", func(o map[string]any) {
			o["customer"], o["metadata"] = map[string]any{"id": "cus_2", "object": "customer"}, map[string]any{"tenant_id": "t2"}
		}), true, false},
		{"paid invoice", TypeInvoicePaid, fixture("invoice", func(o map[string]any) {
			o["customer"], o["status_transitions"] = "cus_3", map[string]any{"paid_at": 1700000000}
		}), true, false},
		{"failed invoice", TypeInvoicePaymentFailed, fixture("invoice", func(o map[string]any) {
			o["customer"], o["attempt_count"], o["last_finalization_error"] = "cus_4", 2, map[string]any{"message": "card declined"}
		}), true, false},
		// items is read for subscriptions only: an invoice carrying a string there is not
		// ours to refuse.
		{"invoice with a field only subscriptions read", TypeInvoicePaid, fixture("invoice", func(o map[string]any) {
			o["customer"], o["items"] = "cus_5", "not a list"
		}), false, false},
		{"subscription with malformed items", TypeSubscriptionUpdated, fixture("subscription", func(o map[string]any) {
			o["items"] = "not a list"
		}), false, true},
	}
	// A name twice: the one pass takes the last, as encoding/json does.
	cases = append(cases, struct {
		name, typ  string
		obj        map[string]any
		onePass    bool
		refusedToo bool
	}{"customer named twice", TypeInvoicePaid, fixture("invoice", func(o map[string]any) { o["customer"] = "cus_6" }), true, false})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			payload, err := json.Marshal(map[string]any{"id": "evt_" + c.name, "object": "event", "api_version": APIVersion,
				"created": 1700000000, "livemode": false, "data": map[string]any{"object": c.obj}, "type": c.typ})
			require.NoError(t, err)
			if c.name == "customer named twice" {
				payload = bytes.Replace(payload, []byte(`"customer":"cus_6"`), []byte(`"customer":"cus_0","customer":"cus_6"`), 1)
			}
			ev, err := ParseEvent(payload)
			require.NoError(t, err)
			require.Equal(t, c.onePass, ev.decoded != nil, "decoded in one pass")

			// The object decoded on its own, by its type, as every event was before.
			var raw struct {
				Data struct {
					Object json.RawMessage `json:"object"`
				} `json:"data"`
			}
			require.NoError(t, json.Unmarshal(payload, &raw))
			alone := ev
			alone.decoded, alone.Object = nil, raw.Data.Object

			got, gotErr := effectOf(ev)
			want, wantErr := effectOf(alone)
			require.Equal(t, fmt.Sprint(wantErr), fmt.Sprint(gotErr))
			require.Equal(t, c.refusedToo, gotErr != nil)
			require.Equal(t, want, got)
			if c.name == "customer named twice" {
				require.Equal(t, "cus_6", got.customerID, "the last of the two, as encoding/json reads it")
			}
		})
	}
}

// A reference and metadata read the same by encoding/json/v2's decoder (ParseEvent's one pass,
// which reads them in place) as by encoding/json (the fallback), and are refused by both alike.
func TestReferenceAndMetadataDecodeTheSameBothWays(t *testing.T) {
	t.Parallel()
	type object struct {
		Customer expandable     `json:"customer"`
		Metadata metadataTenant `json:"metadata"`
	}
	cases := []struct {
		name, body string
		want       object
		refused    bool
	}{
		{"id and tenant", `{"customer":"cus_1","metadata":{"plan":"pro","tenant_id":"t1"}}`, object{"cus_1", "t1"}, false},
		{"nulls", `{"customer":null,"metadata":null}`, object{}, false},
		{"absent", `{}`, object{}, false},
		{"expanded", `{"customer":{"object":"customer","id":"cus_2","metadata":{"a":"b"}}}`, object{Customer: "cus_2"}, false},
		{"expanded, id in another case", `{"customer":{"ID":"cus_3"}}`, object{Customer: "cus_3"}, false},
		{"expanded, null id", `{"customer":{"id":null}}`, object{}, false},
		{"escaped names", `{"customer":{"\u0069d":"cus_4"},"metadata":{"tenant\u005fid":"t4"}}`, object{"cus_4", "t4"}, false},
		{"escaped values", `{"customer":"cus_\u0035","metadata":{"tenant_id":"t\u0035"}}`, object{"cus_5", "t5"}, false},
		{"null tenant", `{"metadata":{"tenant_id":null,"x":"y"}}`, object{}, false},
		{"another case of tenant_id is another key", `{"metadata":{"Tenant_ID":"t6"}}`, object{}, false},
		{"number reference", `{"customer":42}`, object{}, true},
		{"array reference", `{"customer":["cus_7"]}`, object{}, true},
		{"number id", `{"customer":{"id":7}}`, object{}, true},
		{"metadata not an object", `{"metadata":"t8"}`, object{}, true},
		{"metadata value not a string", `{"metadata":{"tenant_id":"t9","n":1}}`, object{}, true},
		{"metadata tenant not a string", `{"metadata":{"tenant_id":9}}`, object{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var v1, v2 object
			err1 := json.Unmarshal([]byte(c.body), &v1)
			err2 := jsonv2.Unmarshal([]byte(c.body), &v2)
			require.Equal(t, c.refused, err1 != nil, "encoding/json: %v", err1)
			require.Equal(t, c.refused, err2 != nil, "encoding/json/v2: %v", err2)
			if !c.refused {
				require.Equal(t, c.want, v1)
				require.Equal(t, c.want, v2)
			}
		})
	}
}
