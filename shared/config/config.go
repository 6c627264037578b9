// Package config loads a function's settings from the environment once, at cold start, and
// fails fast with one error that names every missing or malformed variable — never its value.
//
// Settings are a struct whose fields carry `env:"NAME"` tags, with `required:"true"` or
// `default:"..."`. Secrets use the Secret type, which redacts itself wherever it is printed,
// logged or marshalled, so a secret cannot leak by luck.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Secret is a credential. Every way of printing it prints "[REDACTED]"; Reveal is the one way out.
type Secret string

// Redacted is what a Secret prints as.
const Redacted = "[REDACTED]"

// Reveal returns the secret for the one place that must send it (an Authorization header).
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the secret has a value.
func (s Secret) IsSet() bool { return s != "" }

// String redacts.
func (s Secret) String() string { return Redacted }

// GoString redacts (%#v).
func (s Secret) GoString() string { return Redacted }

// Format redacts every verb (%s, %v, %q, %x ...).
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue redacts in log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON redacts in JSON.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText redacts in text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Error lists every variable that stopped the load.
type Error struct {
	Missing   []string
	Malformed []string // "NAME (why)"; never the value
}

func (e *Error) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "missing required environment variables: "+strings.Join(e.Missing, ", "))
	}
	if len(e.Malformed) > 0 {
		parts = append(parts, "malformed environment variables: "+strings.Join(e.Malformed, ", "))
	}
	return "config: " + strings.Join(parts, "; ")
}

// ErrNotStruct is returned when Load is given something other than a pointer to a struct.
var ErrNotStruct = errors.New("config: Load needs a pointer to a struct")

// Load fills dst from the process environment.
func Load(dst any) error { return LoadFrom(os.LookupEnv, dst) }

// LoadFrom fills dst from lookup (tests pass a map's lookup).
func LoadFrom(lookup func(string) (string, bool), dst any) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return ErrNotStruct
	}
	cfgErr := &Error{}
	load(lookup, v.Elem(), cfgErr)
	if len(cfgErr.Missing) > 0 || len(cfgErr.Malformed) > 0 {
		return cfgErr
	}
	return nil
}

func load(lookup func(string) (string, bool), v reflect.Value, cfgErr *Error) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		field := t.Field(i)
		fv := v.Field(i)
		name := field.Tag.Get("env")
		if name == "" {
			if field.Type.Kind() == reflect.Struct && field.Anonymous {
				load(lookup, fv, cfgErr)
			}
			continue
		}
		raw, ok := lookup(name)
		raw = strings.TrimSpace(raw)
		if !ok || raw == "" {
			def, hasDefault := field.Tag.Lookup("default")
			switch {
			case hasDefault:
				raw = def
			case field.Tag.Get("required") == "true":
				cfgErr.Missing = append(cfgErr.Missing, name)
				continue
			default:
				continue
			}
		}
		if why := set(fv, raw); why != "" {
			cfgErr.Malformed = append(cfgErr.Malformed, fmt.Sprintf("%s (%s)", name, why))
		}
	}
}

func set(fv reflect.Value, raw string) string {
	switch fv.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil || d < 0 {
			return "want a duration such as 30s or 5m"
		}
		fv.SetInt(int64(d))
		return ""
	case *url.URL:
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return "want an absolute URL such as https://example.test"
		}
		fv.Set(reflect.ValueOf(u))
		return ""
	case []string:
		var out []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		fv.Set(reflect.ValueOf(out))
		return ""
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return "want true or false"
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return "want a whole number"
		}
		fv.SetInt(n)
	default:
		return "unsupported field type " + fv.Type().String()
	}
	return ""
}
