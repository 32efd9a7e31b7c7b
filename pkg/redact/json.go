package redact

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
)

// ErrInvalidJSON is returned by JSON for input that is not valid JSON.
var ErrInvalidJSON = errors.New("redact: invalid JSON")

// JSON redacts every string value (and every card-number-shaped number)
// in a JSON document, recursively through objects and arrays; object keys
// are kept. Everything it does not replace is kept byte for byte (key
// order, spacing, number spelling), so a compact canonical payload stays
// canonical. It returns raw itself when nothing was found, without
// allocating.
func (p *Policy) JSON(tenant string, raw []byte) ([]byte, int, error) {
	if !json.Valid(raw) {
		return nil, 0, ErrInvalidJSON
	}
	out, n := p.ValidJSON(tenant, raw)
	return out, n, nil
}

// ValidJSON is JSON for a document the caller has validated already
// (event.Decode's payload, say), which it does not validate again. raw
// must be valid JSON: anything else may panic.
func (p *Policy) ValidJSON(tenant string, raw []byte) ([]byte, int) {
	found := map[string]string{}
	n := 0
	secrets := p.secretsOn()
	out := rewrite(raw, func(sensitive bool, lit []byte) (string, bool) {
		// Most payload strings are clean: when no detector could fire on
		// one, it is skipped without becoming a Go string.
		if (!sensitive || !secrets) && !p.mayFind(lit) {
			return "", false
		}
		r, c := p.value(tenant, sensitive, decodeString(lit), found)
		n += c
		return r, c > 0
	}, func(lit string) (string, bool) {
		ph, ok := p.number(tenant, lit)
		if ok {
			n++
		}
		return ph, ok
	})
	if len(found) > 0 && recurs(found, func(v string) bool { return containsJSON(out, v) }) {
		// Second pass: a value detected anywhere in the document is
		// removed from every string of it.
		rep := replacerOf(found)
		out = rewrite(out, func(_ bool, lit []byte) (string, bool) {
			s := decodeString(lit)
			r := rep.Replace(s)
			return r, r != s
		}, nil)
	}
	return out, n
}

// rewrite calls str for every string value of valid JSON raw (its
// literal, quotes included, and whether its object key is sensitive) and
// num for every number literal of 13 or more bytes, and splices in the
// replacements they return. It returns raw itself when nothing changed.
func rewrite(raw []byte, str func(sensitive bool, lit []byte) (string, bool), num func(lit string) (string, bool)) []byte {
	var (
		out       []byte // nil until the first replacement
		copied    int    // raw[:copied] is already in out
		stack     []byte // '{' or '[' per open container
		expectKey bool
		key       []byte // the current object key, raw (with quotes)
	)
	replace := func(start, end int, with string) {
		if out == nil {
			out = make([]byte, 0, len(raw)+64)
		}
		enc, _ := json.Marshal(with)
		out = append(out, raw[copied:start]...)
		out = append(out, enc...)
		copied = end
	}
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '{':
			stack = append(stack, '{')
			expectKey = true
			i++
		case c == '[':
			stack = append(stack, '[')
			expectKey = false
			i++
		case c == '}' || c == ']':
			stack = stack[:len(stack)-1]
			expectKey = false
			i++
		case c == ',':
			expectKey = len(stack) > 0 && stack[len(stack)-1] == '{'
			i++
		case c == ':':
			expectKey = false
			i++
		case c == '"':
			end := stringEnd(raw, i)
			if expectKey {
				key = raw[i:end]
				expectKey = false
				i = end
				continue
			}
			sens := false
			if len(stack) > 0 && stack[len(stack)-1] == '{' && len(key) > 2 {
				kb := key[1 : len(key)-1]
				if bytes.IndexByte(kb, '\\') >= 0 {
					kb = []byte(decodeString(key))
				}
				sens = sensitiveKeyBytes(kb)
			}
			if r, ok := str(sens, raw[i:end]); ok {
				replace(i, end, r)
			}
			i = end
		case c == '-' || c >= '0' && c <= '9':
			end := i + 1
			for end < len(raw) && strings.IndexByte("0123456789.eE+-", raw[end]) >= 0 {
				end++
			}
			if num != nil && end-i >= 13 {
				if r, ok := num(string(raw[i:end])); ok {
					replace(i, end, r)
				}
			}
			i = end
		default:
			i++ // whitespace and the letters of true, false, null
		}
	}
	if out == nil {
		return raw
	}
	return append(out, raw[copied:]...)
}

// containsJSON reports whether v may occur in a string of doc: literally,
// or (if it needs escaping) in its escaped form; false positives only cost
// the second pass.
func containsJSON(doc []byte, v string) bool {
	if bytes.Contains(doc, []byte(v)) {
		return true
	}
	enc, _ := json.Marshal(v)
	inner := enc[1 : len(enc)-1]
	return string(inner) != v && bytes.Contains(doc, inner)
}

// stringEnd returns the index just past the closing quote of the JSON
// string starting at raw[i] (valid JSON assumed).
func stringEnd(raw []byte, i int) int {
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(raw)
}

// decodeString unquotes a JSON string literal; literals without escapes
// (almost all) are converted directly.
func decodeString(lit []byte) string {
	if len(lit) < 2 {
		return ""
	}
	body := lit[1 : len(lit)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body)
	}
	var s string
	_ = json.Unmarshal(lit, &s)
	return s
}
