// Package canonjson is Vigil's one canonical JSON form, shared by the
// ledger (the bytes a leaf hashes), the agent registry (the manifest a
// manifestHash covers and the ledger key signs) and anything else that
// hashes or signs JSON: every object's keys sorted by byte value at every
// depth, no insignificant whitespace, numbers exactly as written, strings
// escaped as Go's encoding/json does with HTML escaping off (invalid UTF-8
// becomes U+FFFD). Canonicalising canonical bytes is the identity, so a
// verifier can recompute them from a value that was pretty-printed or
// re-encoded. docs/ledger.md states the rules for verifiers.
package canonjson

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Canonicalize rewrites any JSON value in the canonical form.
func Canonicalize(data []byte) ([]byte, error) {
	if out, ok := fastCanonicalize(data); ok {
		return out, nil
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after JSON value")
	}
	return Encode(v)
}

// Encode writes v in the canonical form's escaping. It is canonical only
// when v is: maps (written with sorted keys), json.Number or strings, or
// a struct whose fields are declared in sorted key order holding such
// values. Canonicalize(json.Marshal(v)) is canonical for any v.
func Encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
