package billing

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// What jsonb refuses is replaced by U+FFFD; every other escape, and text that merely looks
// like an escape, stays byte for byte.
func TestJSONBSafe(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, want string
	}{
		{"nothing to replace", `{"a":"b\n\"c\"\u00e9"}`, `{"a":"b\n\"c\"\u00e9"}`},
		{"NUL escape", `{"a":"x\u0000y"}`, `{"a":"x\ufffdy"}`},
		{"two NULs", `["\u0000\u0000"]`, `["\ufffd\ufffd"]`},
		{"escaped backslash before u0000 is text", `{"a":"\\u0000"}`, `{"a":"\\u0000"}`},
		{"escaped backslash then a NUL", `{"a":"\\\u0000"}`, `{"a":"\\\ufffd"}`},
		{"surrogate pair kept", `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d\ude00"}`},
		{"lone high surrogate", `{"a":"\ud83dx"}`, `{"a":"\ufffdx"}`},
		{"high surrogate at the end", `"\uD83D"`, `"\ufffd"`},
		{"lone low surrogate", `{"a":"\ude00"}`, `{"a":"\ufffd"}`},
		{"invalid UTF-8", "{\"a\":\"x\xffy\"}", "{\"a\":\"x\uFFFDy\"}"},
		{"truncated escape left to the parser", `"\u00`, `"\u00`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tc.in)
			require.Equal(t, tc.want, string(jsonbSafe(in)))
			require.Equal(t, tc.in, string(in), "the verified bytes are never changed in place")
		})
	}
}
