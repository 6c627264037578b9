package billing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

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
	// A name twice (encoding/json takes the last; the one pass refuses the body) goes the old way.
	cases = append(cases, struct {
		name, typ  string
		obj        map[string]any
		onePass    bool
		refusedToo bool
	}{"customer named twice", TypeInvoicePaid, fixture("invoice", func(o map[string]any) { o["customer"] = "cus_6" }), false, false})
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
