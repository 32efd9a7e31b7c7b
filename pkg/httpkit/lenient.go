package httpkit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Compatibility doors (the routes the Kaplaix, Kaizen and KLA documents
// describe) accept bodies written for those products: a top-level field
// Vigil does not know is ignored rather than refused, and named in a
// Warning header (RFC 7234, code 299) so that a caller can still see it.
// The fields Vigil knows keep their strict type and value checks.

// WarnIgnored adds one Warning header per ignored field.
func WarnIgnored(c echo.Context, fields []string) {
	for _, f := range fields {
		c.Response().Header().Add("Warning", "299 - "+strconv.Quote("unknown field "+strconv.Quote(f)+" ignored"))
	}
}

// IgnoreUnknown removes from a JSON object body the top-level keys not in
// known, names them in Warning headers and returns the remaining body. A
// body that is not a JSON object is returned as it is, for the door's
// own validation to report.
func IgnoreUnknown(c echo.Context, body []byte, known ...string) []byte {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil || fields == nil {
		return body
	}
	var ignored []string
	for k := range fields {
		if !slices.Contains(known, k) {
			ignored = append(ignored, k)
			delete(fields, k)
		}
	}
	if len(ignored) == 0 {
		return body
	}
	slices.Sort(ignored)
	WarnIgnored(c, ignored)
	out, err := json.Marshal(fields)
	if err != nil {
		return body // cannot happen: every value is valid JSON already
	}
	return out
}

// JSONFields lists the JSON names of a struct's fields, including those
// of embedded structs, as encoding/json would decode them.
func JSONFields(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
		case f.Anonymous && name == "":
			out = append(out, JSONFields(reflect.New(f.Type).Interface())...)
		case !f.IsExported():
		case name == "":
			out = append(out, f.Name)
		default:
			out = append(out, name)
		}
	}
	return out
}

// DecodeLenient is DecodeJSON for a compatibility door: unknown top-level
// fields of the struct v are ignored with a Warning; everything else
// (types, trailing data, nested objects) is checked as strictly.
func DecodeLenient(c echo.Context, max int64, v any) error {
	body, err := ReadBody(c, max)
	if err != nil {
		return err
	}
	return decodeStrict(IgnoreUnknown(c, body, JSONFields(v)...), v)
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apperr.Validation("request body is not valid", apperr.FieldError{Path: "", Code: "invalid_format", Message: err.Error()})
	}
	if dec.More() {
		return apperr.Validation("request body is not valid", apperr.FieldError{Path: "", Code: "invalid_format", Message: "unexpected data after the JSON object"})
	}
	return nil
}
