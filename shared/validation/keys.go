package validation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode"
)

// The key check closes a parser-differential hole in encoding/json (v1): it matches object keys
// to struct fields case-insensitively and lets the last of two equal keys win. A body such as
// {"subject":"a","Subject":"b"} then means one thing to us and possibly another to a proxy, a
// WAF or a log pipeline that reads the first key or compares keys exactly. After a successful
// decode (so the body is one well-formed JSON value), checkKeys walks the raw bytes once and
// refuses any object with a repeated key, at any depth and in any value (structs, maps, any),
// and any key that reached a struct field only by case folding.
//
// encoding/json/v2 rejects both by default, but in Go 1.26 it still needs GOEXPERIMENT=jsonv2,
// which a Lambda build must not depend on.

// linearKeys is how many keys an object may have before its repeats are found with a map.
const linearKeys = 16

// shape is what the key check needs to know about the Go type a JSON value decodes into.
type shape struct {
	// fields are a struct's exact JSON names and the shapes of their values; nil for a map or
	// an opaque value, whose keys are free (but still unique).
	fields map[string]*shape
	// elem is the shape of a map's values or a slice's or array's elements; nil means opaque.
	elem *shape
}

// opaque is the shape of values whose keys nobody folds: interfaces, scalars, and types that
// decode themselves (json.Unmarshaler, encoding.TextUnmarshaler). Duplicates are still refused.
var opaque = &shape{}

// keyError is a key the check refuses: what is wrong with it, and the path to the object
// that holds it (innermost segment first, as collected while the walk unwinds).
type keyError struct {
	msg  string
	path []string
}

func (e *keyError) detail() string {
	if len(e.path) == 0 {
		return e.msg
	}
	var p strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		if p.Len() > 0 && e.path[i][0] != '[' {
			p.WriteByte('.')
		}
		p.WriteString(e.path[i])
	}
	return e.msg + " in " + echo(p.String())
}

// shapeOf returns the cached shape for t, building it on first use.
func (v *Validator) shapeOf(t reflect.Type) *shape {
	if s, ok := v.shapes.Load(t); ok {
		return s.(*shape)
	}
	s := buildShape(t, map[reflect.Type]*shape{})
	v.shapes.Store(t, s)
	return s
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[interface{ UnmarshalText([]byte) error }]()
)

// buildShape follows encoding/json's rules for which JSON names a type has. building holds
// the struct shapes under construction, so a recursive type refers to itself.
func buildShape(t reflect.Type, building map[reflect.Type]*shape) *shape {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if s, ok := building[t]; ok {
		return s
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType) {
		return opaque
	}
	switch t.Kind() {
	case reflect.Struct:
		s := &shape{fields: map[string]*shape{}}
		building[t] = s
		for name, ft := range jsonFields(t) {
			s.fields[name] = buildShape(ft, building)
		}
		return s
	case reflect.Map:
		return &shape{elem: buildShape(t.Elem(), building)}
	case reflect.Slice, reflect.Array:
		if elem := buildShape(t.Elem(), building); elem != opaque {
			return &shape{elem: elem}
		}
		return opaque
	default:
		return opaque
	}
}

// jsonFields returns the JSON names encoding/json decodes into for struct type t, with each
// field's type: exported fields by tag name or Go name, fields of untagged embedded structs
// promoted, the shallowest name winning, and a tie at one depth won by the only tagged field
// or else dropped. (Getting this wrong fails closed: a name we miss is refused, a name we
// wrongly keep was already refused as unknown by the decoder.)
func jsonFields(t reflect.Type) map[string]reflect.Type {
	type candidate struct {
		typ    reflect.Type
		tagged bool
		count  int
	}
	fields := map[string]reflect.Type{}
	taken := map[string]bool{} // names settled at a shallower depth, kept or dropped
	visited := map[reflect.Type]bool{}
	level := map[reflect.Type]int{t: 1} // struct types at this depth, and how often each appears
	order := []reflect.Type{t}
	for len(order) > 0 {
		next, nextOrder := map[reflect.Type]int{}, []reflect.Type(nil)
		here := map[string]*candidate{}
		for _, st := range order {
			if visited[st] {
				continue
			}
			visited[st] = true
			times := level[st]
			for i := range st.NumField() {
				sf := st.Field(i)
				ft := sf.Type
				if ft.Kind() == reflect.Pointer && ft.Name() == "" {
					ft = ft.Elem()
				}
				if sf.Anonymous {
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if !validTag(name) {
					name = ""
				}
				if name == "" && sf.Anonymous && ft.Kind() == reflect.Struct {
					if next[ft] == 0 {
						nextOrder = append(nextOrder, ft)
					}
					next[ft] += times
					continue
				}
				tagged := name != ""
				if !tagged {
					name = sf.Name
				}
				if taken[name] {
					continue
				}
				c := here[name]
				switch {
				case c == nil || (tagged && !c.tagged):
					here[name] = &candidate{typ: sf.Type, tagged: tagged, count: times}
				case tagged == c.tagged:
					c.count += times
				}
			}
		}
		for name, c := range here {
			taken[name] = true
			if c.count == 1 {
				fields[name] = c.typ
			}
		}
		level, order = next, nextOrder
	}
	return fields
}

// validTag is encoding/json's rule for a usable tag name; others fall back to the Go name.
func validTag(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c) && !unicode.IsLetter(c) && !unicode.IsDigit(c) {
			return false
		}
	}
	return true
}

// keyScan walks one well-formed JSON value.
type keyScan struct {
	data []byte
	pos  int
}

// checkKeys refuses duplicate keys and case-folded field names in data, which must be one
// well-formed JSON value decoded into a value of shape s.
func checkKeys(data []byte, s *shape) *keyError {
	sc := keyScan{data: data}
	return sc.value(s)
}

func (sc *keyScan) space() {
	for sc.pos < len(sc.data) {
		switch sc.data[sc.pos] {
		case ' ', '\t', '\n', '\r':
			sc.pos++
		default:
			return
		}
	}
}

func (sc *keyScan) value(s *shape) *keyError {
	sc.space()
	if sc.pos >= len(sc.data) {
		return nil
	}
	switch sc.data[sc.pos] {
	case '{':
		return sc.object(s)
	case '[':
		return sc.array(s)
	case '"':
		sc.str()
	default: // number, true, false, null
		for sc.pos < len(sc.data) {
			switch sc.data[sc.pos] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return nil
			}
			sc.pos++
		}
	}
	return nil
}

// str skips a string starting at its opening quote and returns its raw contents.
func (sc *keyScan) str() []byte {
	start := sc.pos + 1
	i := start
	for {
		j := bytes.IndexByte(sc.data[i:], '"')
		if j < 0 {
			sc.pos = len(sc.data)
			return sc.data[start:]
		}
		i += j
		backslashes := 0
		for k := i - 1; k >= start && sc.data[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			sc.pos = i + 1
			return sc.data[start:i]
		}
		i++
	}
}

func (sc *keyScan) object(s *shape) *keyError {
	sc.pos++ // {
	var keys keySet
	for {
		sc.space()
		if sc.pos >= len(sc.data) || sc.data[sc.pos] == '}' {
			sc.pos++
			return nil
		}
		if sc.data[sc.pos] == ',' {
			sc.pos++
			sc.space()
		}
		key := sc.str()
		if bytes.IndexByte(key, '\\') >= 0 {
			key = unescape(key)
		}
		if !keys.add(key) {
			return duplicateKey(key)
		}
		sc.space()
		sc.pos++ // :
		child := s.elem
		if s.fields != nil {
			var ok bool
			if child, ok = s.fields[string(key)]; !ok {
				return foldedKey(s.fields, string(key))
			}
		}
		if child == nil {
			child = opaque
		}
		if err := sc.value(child); err != nil {
			err.path = append(err.path, string(key))
			return err
		}
	}
}

// keySet holds one object's keys to find a repeat: compared one by one while there are few
// (cheaper for the usual small objects, and on the stack), in a map beyond linearKeys (no
// quadratic cost for a large map).
type keySet struct {
	few  [linearKeys][]byte
	n    int
	many map[string]struct{}
}

// add records key and reports whether it is new in the object.
func (s *keySet) add(key []byte) bool {
	if s.many == nil {
		for _, k := range s.few[:s.n] {
			if bytes.Equal(k, key) {
				return false
			}
		}
		if s.n < linearKeys {
			s.few[s.n] = key
			s.n++
			return true
		}
		s.many = make(map[string]struct{}, 2*linearKeys)
		for _, k := range s.few {
			s.many[string(k)] = struct{}{}
		}
	}
	if _, dup := s.many[string(key)]; dup {
		return false
	}
	s.many[string(key)] = struct{}{}
	return true
}

func (sc *keyScan) array(s *shape) *keyError {
	sc.pos++ // [
	elem := s.elem
	if elem == nil {
		elem = opaque
	}
	for i := 0; ; i++ {
		sc.space()
		if sc.pos >= len(sc.data) || sc.data[sc.pos] == ']' {
			sc.pos++
			return nil
		}
		if sc.data[sc.pos] == ',' {
			sc.pos++
		}
		if err := sc.value(elem); err != nil {
			err.path = append(err.path, "["+strconv.Itoa(i)+"]")
			return err
		}
	}
}

// unescape decodes a key's escapes exactly as the decoder did (\u0053 is S).
func unescape(raw []byte) []byte {
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
		return raw // cannot happen after a successful decode; compare the raw bytes then
	}
	return []byte(s)
}

func duplicateKey(key []byte) *keyError {
	return &keyError{msg: fmt.Sprintf("duplicate key %q", echo(string(key)))}
}

// foldedKey refuses a key that encoding/json matched to a struct field only by case folding.
// A key that matches no field at all was already refused by the decoder as unknown; should the
// two ever disagree, it is refused here the same way.
func foldedKey(fields map[string]*shape, key string) *keyError {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return &keyError{msg: fmt.Sprintf("key %q must be spelled %q (keys are case-sensitive)", echo(key), name)}
		}
	}
	return &keyError{msg: fmt.Sprintf("unknown field %q", echo(key))}
}
