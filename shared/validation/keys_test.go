package validation

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// Embedding puzzles whose JSON names follow encoding/json's dominance rules.
type (
	inner    struct{ A, B string }
	innerTag struct {
		A string `json:"a"`
		C string
	}
	twice1    struct{ inner }
	twice2    struct{ inner }
	conflicts struct {
		inner           // A, B at depth 1
		innerTag        // a, C at depth 1
		twice1          // inner again at depth 2, twice: hidden
		twice2          //
		B        string `json:"-"`
		//lint:ignore SA5008 encoding/json documents "-," as the name "-"; the check must know it
		Dash string `json:"-,"`
		//lint:ignore SA5008 a tag name encoding/json finds invalid: it uses the Go name
		Bad      string    `json:"b\\ad"`
		Named    inner     `json:"named"`
		Ptr      *innerTag `json:"ptr,omitempty"`
		Override string    `json:"A"` // depth 0 beats inner.A
	}
	tie struct {
		X1 `json:""`
		X2
	}
	X1      struct{ Same string }
	X2      struct{ Same string } // same depth, both untagged: dropped
	tagWins struct {
		Y1
		Y2
	}
	Y1 struct{ Same string }
	Y2 struct {
		Same string `json:"Same"` // same depth, the only tagged one: kept
	}
)

// TestJSONFieldsMatchEncodingJSON holds the key check's names to encoding/json's own: the keys
// json.Marshal writes for a value with no omitted field are exactly the names it decodes into.
func TestJSONFieldsMatchEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, v := range []any{conflicts{Ptr: &innerTag{}}, tie{}, tagWins{}, node{}} {
		t.Run(reflect.TypeOf(v).Name(), func(t *testing.T) {
			t.Parallel()
			out, err := json.Marshal(v)
			require.NoError(t, err)
			var keys map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(out, &keys))
			require.Equal(t, slices.Sorted(maps.Keys(keys)), slices.Sorted(maps.Keys(jsonFields(reflect.TypeOf(v)))))
		})
	}
}

type node struct {
	Name     string `json:"name"`
	Children []node `json:"children"`
}

// TestCheckKeysRefusesAKeyItsShapeLacks is the fail-closed branch: should the decoder ever
// accept a name the shape does not list, the check refuses it rather than letting it through.
func TestCheckKeysRefusesAKeyItsShapeLacks(t *testing.T) {
	t.Parallel()
	s := &shape{fields: map[string]*shape{"name": opaque}}
	err := checkKeys([]byte(`{"name":"a","extra":1}`), s)
	require.NotNil(t, err)
	require.Equal(t, `unknown field "extra"`, err.detail())
	require.Nil(t, checkKeys([]byte(`{"name":"a"}`), s))
}

// BenchmarkCheckKeys measures the key check alone on a realistic ticket body, to compare with
// BenchmarkDecodeJSON (the whole path it is part of).
func BenchmarkCheckKeys(b *testing.B) {
	type attachment struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	}
	type ticket struct {
		Subject     string       `json:"subject"`
		Body        string       `json:"body"`
		Category    string       `json:"category"`
		Priority    string       `json:"priority"`
		Email       string       `json:"email"`
		RelatedID   string       `json:"related_id"`
		Tags        []string     `json:"tags"`
		Attachments []attachment `json:"attachments"`
	}
	body := []byte(`{"subject":"Invoice INV-0042 charged twice","body":"Hi, our card was charged twice for November. Could you refund one of the two charges? Thanks, Ana","category":"billing","priority":"high","email":"ops@acme.example","related_id":"8d3c1b2e-4a5f-4c6d-9e7f-0a1b2c3d4e5f","tags":["vip","eu"],"attachments":[{"name":"receipt.pdf","size":48213},{"name":"statement.pdf","size":91022}]}`)
	s := New().shapeOf(reflect.TypeFor[*ticket]())
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := checkKeys(body, s); err != nil {
			b.Fatal(err.detail())
		}
	}
}
