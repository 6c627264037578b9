// Package validation turns a request body into a typed, checked value or into a problem a
// portal can show: strict JSON decoding (application/json only, one value, no unknown fields,
// every key once and spelled exactly as declared, valid UTF-8, within the body limit), then
// go-playground/validator/v10 rules on the struct, reported per field by JSON name with a
// message a person can read.
//
// Status codes follow the contract in DESIGN.md section 8: 415 not JSON, 413 too large, 400
// malformed JSON (including unknown fields, repeated keys, keys in the wrong case and trailing
// data: a client bug, not user input), 422 when the JSON is well formed but a field has the
// wrong type or breaks a rule.
package validation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"

	"github.com/portal-functions/portal-functions/shared/problem"
)

// maxEcho bounds how much of the caller's input (a field name) is repeated in a detail.
const maxEcho = 64

// Validator decodes and checks request values. It is safe for concurrent use; build one per
// process (New) or use the package-level DecodeJSON and Struct, which share a lazily built one.
type Validator struct {
	v *validator.Validate
	// shapes caches, per destination type, the JSON names the key check holds keys to.
	shapes sync.Map // reflect.Type -> *shape
}

// New builds a Validator whose field errors name fields by their JSON names.
func New() *Validator {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(jsonName)
	return &Validator{v: v}
}

// shared is the process-wide Validator behind DecodeJSON and Struct, built on first use
// (validator caches struct metadata, so one instance is both cheaper and safe).
var shared = sync.OnceValue(New)

// DecodeJSON decodes r's body into dst strictly and validates it with the shared Validator.
func DecodeJSON(r *http.Request, dst any) error { return shared().DecodeJSON(r, dst) }

// Struct validates an already decoded value (a queue payload, a reconcile event) with the
// shared Validator.
func Struct(v any) error { return shared().Struct(v) }

// DecodeJSON reads r's body into dst (a pointer) and validates it. Every failure a client can
// cause is a *problem.Problem; a non-pointer dst is a programming error and comes back plain.
func (v *Validator) DecodeJSON(r *http.Request, dst any) error {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	if r.Body == nil {
		return problem.BadRequest("the request body is empty; send a JSON object")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return problem.TooLarge(maxErr.Limit).WithCause(err)
		}
		return fmt.Errorf("read request body: %w", err)
	}
	if err := v.decode(body, dst); err != nil {
		return err
	}
	return v.Struct(dst)
}

// checkContentType accepts application/json with an optional UTF-8 charset.
func checkContentType(ct string) error {
	if ct == "" {
		return problem.UnsupportedMediaType()
	}
	media, params, err := mime.ParseMediaType(ct)
	if err != nil || media != "application/json" {
		return problem.UnsupportedMediaType()
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return problem.UnsupportedMediaType()
	}
	return nil
}

func (v *Validator) decode(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return problem.BadRequest("the request body is empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return problem.BadRequest("the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeProblem(err)
	}
	if rest := bytes.TrimSpace(body[dec.InputOffset():]); len(rest) > 0 {
		return problem.BadRequest(fmt.Sprintf(
			"the request body must hold exactly one JSON value; unexpected data at byte %d", len(body)-len(rest)))
	}
	if kerr := checkKeys(body, v.shapeOf(reflect.TypeOf(dst))); kerr != nil {
		return problem.BadRequest(kerr.detail())
	}
	return nil
}

// decodeProblem explains a json.Decoder error without echoing more than a field name.
func decodeProblem(err error) error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		invalid   *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &invalid):
		return fmt.Errorf("decode request body: %w", err)
	case errors.As(err, &syntaxErr):
		return problem.BadRequest(fmt.Sprintf("malformed JSON at byte %d", syntaxErr.Offset)).WithCause(err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.BadRequest("malformed JSON: the body ends early").WithCause(err)
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return problem.BadRequest(fmt.Sprintf("the request body must be %s", jsonKind(typeErr.Type))).WithCause(err)
		}
		return problem.Validation("a field has the wrong type",
			problem.FieldError{Field: echo(field), Message: "must be " + jsonKind(typeErr.Type)}).WithCause(err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, uerr := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		if uerr != nil {
			name = "?"
		}
		return problem.BadRequest(fmt.Sprintf("unknown field %q", echo(name))).WithCause(err)
	default:
		return problem.BadRequest("malformed JSON").WithCause(err)
	}
}

// echo shortens caller-supplied text before it goes into a detail.
func echo(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// jsonKind names the JSON type a Go type decodes from, with an article.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a valid value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	default:
		return "a valid value"
	}
}

// Struct runs the validate tags of v (a struct or a pointer to one). Broken rules come back as
// one 422 problem listing every field; its detail repeats them so a CLI or log reads well too.
func (v *Validator) Struct(x any) error {
	rv := reflect.ValueOf(x)
	for rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return nil // only structs carry rules; maps and slices were already shape-checked
	}
	err := v.v.Struct(x)
	if err == nil {
		return nil
	}
	var verrs validator.ValidationErrors
	if !errors.As(err, &verrs) {
		return fmt.Errorf("validate %T: %w", x, err)
	}
	fields := make([]problem.FieldError, 0, len(verrs))
	parts := make([]string, 0, len(verrs))
	for _, fe := range verrs {
		f := problem.FieldError{Field: fieldPath(fe), Message: message(fe)}
		fields = append(fields, f)
		parts = append(parts, f.Field+" "+f.Message)
	}
	return problem.Validation(strings.Join(parts, "; "), fields...).WithCause(err)
}

// fieldPath drops the top-level struct name from validator's namespace:
// "ticketRequest.attachments[0].size" becomes "attachments[0].size".
func fieldPath(fe validator.FieldError) string {
	ns := fe.Namespace()
	if i := strings.IndexByte(ns, '.'); i >= 0 {
		return ns[i+1:]
	}
	return fe.Field()
}

// jsonName is the tag name function: a field's JSON name, or its Go name (validator's
// fallback for "") when JSON never fills it (`json:"-"`, set by the server).
func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// message is a human sentence fragment for the common tags; the field name comes before it.
func message(fe validator.FieldError) string {
	p := fe.Param()
	switch fe.Tag() {
	case "required", "required_if", "required_unless", "required_with", "required_without",
		"required_with_all", "required_without_all":
		return "is required"
	case "excluded_if", "excluded_unless", "excluded_with", "excluded_without":
		return "must not be set here"
	case "min":
		return bound(fe, "at least", p)
	case "max":
		return bound(fe, "at most", p)
	case "len":
		return bound(fe, "exactly", p)
	case "gte":
		return bound(fe, "at least", p)
	case "lte":
		return bound(fe, "at most", p)
	case "gt":
		return bound(fe, "more than", p)
	case "lt":
		return bound(fe, "less than", p)
	case "eq":
		return "must be " + p
	case "ne":
		return "must not be " + p
	case "oneof":
		return "must be one of: " + strings.Join(strings.Fields(p), ", ")
	case "email":
		return "must be a valid email address"
	case "url", "http_url", "uri":
		return "must be a valid URL"
	case "uuid", "uuid4", "uuid_rfc4122", "uuid4_rfc4122":
		return "must be a valid UUID"
	case "e164":
		return "must be a phone number in international format, like +14155550100"
	case "iso4217":
		return "must be a three-letter currency code"
	case "iso3166_1_alpha2":
		return "must be a two-letter country code"
	case "datetime":
		return "must be a date and time in the format " + p
	case "alphanum":
		return "must contain only letters and digits"
	case "ascii", "printascii":
		return "must contain only plain ASCII characters"
	case "unique":
		return "must not contain duplicates"
	case "boolean":
		return "must be true or false"
	case "number", "numeric":
		return "must be a number"
	case "hostname", "hostname_rfc1123", "fqdn":
		return "must be a valid host name"
	case "startswith":
		return "must start with " + p
	case "endswith":
		return "must end with " + p
	case "contains":
		return "must contain " + p
	case "excludesall", "excludes":
		return "contains characters that are not allowed"
	default:
		return "is invalid"
	}
}

// bound phrases a size rule by the kind of value: characters, items or a number.
func bound(fe validator.FieldError, rel, p string) string {
	switch fe.Kind() {
	case reflect.String:
		unit := "characters"
		if p == "1" {
			unit = "character"
		}
		return fmt.Sprintf("must be %s %s %s long", rel, p, unit)
	case reflect.Slice, reflect.Array, reflect.Map:
		unit := "items"
		if p == "1" {
			unit = "item"
		}
		return fmt.Sprintf("must have %s %s %s", rel, p, unit)
	default:
		return fmt.Sprintf("must be %s %s", rel, p)
	}
}
