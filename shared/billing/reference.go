package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// The two shapes of a Stripe object that the webhook reads by name rather than as a struct:
// a reference (an id, or the expanded object carrying it) and metadata (of which it reads one
// key). Each decodes itself both ways the event is decoded: by encoding/json/v2's decoder in
// ParseEvent's one pass (UnmarshalJSONFrom, which reads the tokens in place: no map, no copy
// of the value, no second decoder), and by encoding/json on the fallback path (UnmarshalJSON,
// as before). Both accept and refuse the same values and read the same result.

// errNotReference is a reference that is neither null, an id nor an object.
var errNotReference = errors.New("a Stripe reference must be an id or an object")

// errNotMetadata is metadata that is not an object of strings.
var errNotMetadata = errors.New("metadata must be an object of strings")

// expandable is a Stripe reference that is either an id or the expanded object carrying it.
type expandable string

// UnmarshalJSON reads the reference with encoding/json: the id, or the expanded object's id
// field (matched without regard to case, as encoding/json matches a struct's fields).
func (e *expandable) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*e = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("decode reference: %w", err)
		}
		*e = expandable(s)
		return nil
	default:
		var obj struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &obj); err != nil {
			return fmt.Errorf("decode expanded reference: %w", err)
		}
		*e = expandable(obj.ID)
		return nil
	}
}

// UnmarshalJSONFrom reads the reference with encoding/json/v2's decoder, as UnmarshalJSON does.
func (e *expandable) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	switch dec.PeekKind() {
	case 'n':
		*e = ""
		_, err := dec.ReadToken()
		return err
	case '"':
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		*e = expandable(tok.String())
		return nil
	case '{':
		id := ""
		err := readObject(dec, func(name []byte) (bool, error) {
			if !strings.EqualFold(string(name), "id") {
				return false, nil
			}
			s, err := readString(dec)
			if err != nil {
				return true, fmt.Errorf("expanded reference: %w", err)
			}
			id = s // the last match wins, as with encoding/json
			return true, nil
		})
		*e = expandable(id)
		return err
	}
	return errNotReference
}

// metadataTenant is an object's metadata as the webhook reads it: its tenant_id
// (MetadataTenantID), "" when absent or null.
type metadataTenant string

// UnmarshalJSON reads the metadata with encoding/json, as a map of strings.
func (m *metadataTenant) UnmarshalJSON(b []byte) error {
	var all map[string]string
	if err := json.Unmarshal(b, &all); err != nil {
		return fmt.Errorf("decode metadata: %w", err)
	}
	*m = metadataTenant(all[MetadataTenantID])
	return nil
}

// UnmarshalJSONFrom reads the metadata with encoding/json/v2's decoder: every value must be a
// string or null, as for a map of strings, and only tenant_id is kept.
func (m *metadataTenant) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	switch dec.PeekKind() {
	case 'n':
		*m = ""
		_, err := dec.ReadToken()
		return err
	case '{':
	default:
		return errNotMetadata
	}
	tenant := ""
	err := readObject(dec, func(name []byte) (bool, error) {
		isTenant := string(name) == MetadataTenantID
		s, err := readString(dec)
		if err != nil {
			return true, fmt.Errorf("%w: %w", errNotMetadata, err)
		}
		if isTenant {
			tenant = s
		}
		return true, nil
	})
	*m = metadataTenant(tenant)
	return err
}

// readObject reads the object dec is at, calling read with each name (unescaped, valid until
// the next read); read reads the value itself and says so, or leaves it to be skipped.
func readObject(dec *jsontext.Decoder, read func(name []byte) (bool, error)) error {
	if _, err := dec.ReadToken(); err != nil { // {
		return err
	}
	for dec.PeekKind() != '}' {
		raw, err := dec.ReadValue()
		if err != nil {
			return err
		}
		name := raw[1 : len(raw)-1]
		if bytes.IndexByte(raw, '\\') >= 0 {
			if name, err = jsontext.AppendUnquote(nil, raw); err != nil {
				return err
			}
		}
		done, err := read(name)
		if err != nil {
			return err
		}
		if !done {
			if err := dec.SkipValue(); err != nil {
				return err
			}
		}
	}
	_, err := dec.ReadToken() // }
	return err
}

// errNotString is a value read as a string that is neither a string nor null.
var errNotString = errors.New("want a string")

// readString reads a string or null ("") as encoding/json reads one into a string.
func readString(dec *jsontext.Decoder) (string, error) {
	kind := dec.PeekKind()
	if kind != '"' && kind != 'n' {
		return "", fmt.Errorf("%w, found %s", errNotString, kind)
	}
	tok, err := dec.ReadToken()
	if err != nil || kind == 'n' {
		return "", err
	}
	return tok.String(), nil
}
