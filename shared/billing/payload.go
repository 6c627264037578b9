package billing

import (
	"bytes"
	"unicode/utf8"
)

// replacementEscape is the JSON escape of U+FFFD, the same length as the escapes it replaces.
var replacementEscape = []byte(`\ufffd`)

// jsonbSafe returns payload in a form PostgreSQL's jsonb (and its text columns) accept: the
// escape \u0000, a UTF-16 surrogate escape without its pair (both valid JSON, both refused by
// jsonb) and invalid UTF-8 become U+FFFD. Everything else is byte for byte the same, and a
// payload with nothing to replace is returned as is. Without it such an event, however rare,
// answers 500 on every one of Stripe's retries for days; with it the event is applied and the
// verified bytes are kept unchanged beside it (private.stripe_events.raw_payload).
func jsonbSafe(payload []byte) []byte {
	out, copied := payload, false
	if !utf8.Valid(payload) {
		out, copied = bytes.ToValidUTF8(payload, []byte("\uFFFD")), true
	}
	// A backslash only occurs inside JSON strings, where it starts an escape; so walking the
	// escapes needs no tracking of where strings begin and end.
	for i := bytes.IndexByte(out, '\\'); i >= 0 && i+1 < len(out); {
		n := 2 // the escape's length
		if out[i+1] == 'u' {
			cp, ok := hex4(out[i+2:])
			n = 6
			bad := false
			switch {
			case !ok:
				n = 2 // not JSON: ParseEvent refuses it
			case cp == 0:
				bad = true
			case cp >= 0xD800 && cp <= 0xDBFF:
				if low, ok := hex4(after(out, i+6, `\u`)); ok && low >= 0xDC00 && low <= 0xDFFF {
					n = 12 // a proper pair
				} else {
					bad = true
				}
			case cp >= 0xDC00 && cp <= 0xDFFF:
				bad = true
			}
			if bad {
				if !copied {
					out, copied = bytes.Clone(out), true
				}
				copy(out[i:i+6], replacementEscape)
			}
		}
		next := bytes.IndexByte(out[min(i+n, len(out)):], '\\')
		if next < 0 {
			break
		}
		i += n + next
	}
	return out
}

// after returns b[i:] without prefix, or nil when b[i:] does not start with prefix.
func after(b []byte, i int, prefix string) []byte {
	if i > len(b) || !bytes.HasPrefix(b[i:], []byte(prefix)) {
		return nil
	}
	return b[i+len(prefix):]
}

// hex4 reads the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
