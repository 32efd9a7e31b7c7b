package policy

import (
	"bytes"
	"unicode/utf8"
)

// decodeRowFast is DecodeDecisionRow for records as the policy service
// writes them, without encoding/json: it reads the row's fields in one
// pass and skips (validating) everything else. encoding/json checks the
// whole record and then walks it again through reflection, and the
// decisions projector paid that for every decision (3.5 % of the CPU of
// `vigil bench decide`, perf-alloc2).
//
// It returns ok=false, and the caller decodes with encoding/json, at
// anything it does not decode exactly as encoding/json would: a string
// with an escape, a key that matches a row field only case-insensitively
// or that is not ASCII (encoding/json folds keys), a field given twice,
// null where the policy service never writes one, a value of the wrong
// type, JSON that is not valid. So every row it returns is the one
// encoding/json would have decoded (FuzzDecodeRowFast), and every error
// is encoding/json's.
func decodeRowFast(data []byte) ([]any, bool) {
	s := rowScan{b: data}
	var r DecisionRecord
	var observed string
	if !s.object(func(key []byte) bool {
		switch string(key) {
		case "decisionId":
			return s.str(&r.ID)
		case "tenant":
			return s.str(&r.Tenant)
		case "agentId":
			return s.str(&r.AgentID)
		case "sessionId":
			return s.str(&r.SessionID)
		case "source":
			return s.str(&r.Source)
		case "eventId":
			return s.str(&r.EventID)
		case "signature":
			return s.str(&r.Signature)
		case "at":
			raw, ok := s.rawString()
			return ok && r.At.UnmarshalJSON(raw) == nil
		case "input":
			return s.nullableObject(func(key []byte) bool {
				if string(key) != "action" {
					return !foldsTo(key, "action") && s.skip(0)
				}
				return s.nullableObject(func(key []byte) bool {
					a := &r.Input.Action
					switch string(key) {
					case "kind":
						return s.str(&a.Kind)
					case "tool":
						return s.str(&a.Tool)
					case "target":
						return s.str(&a.Target)
					case "publisher":
						return s.str(&a.Publisher)
					case "metadata":
						return s.nullableObject(func(key []byte) bool {
							// A map: keys match exactly.
							if string(key) != "source" {
								return s.skip(0)
							}
							if s.peek() == '"' {
								return s.str(&observed)
							}
							// ObservedSource reads a string and ignores any other type.
							return s.skip(0)
						})
					}
					return !foldsTo(key, "kind", "tool", "target", "publisher", "metadata") && s.skip(0)
				})
			})
		case "result":
			return s.nullableObject(func(key []byte) bool {
				d := &r.Decision
				switch string(key) {
				case "decision":
					raw, ok := s.rawString()
					return ok && d.Outcome.UnmarshalText(raw[1:len(raw)-1]) == nil
				case "reasonCodes":
					return s.strings(&d.ReasonCodes)
				case "packHash":
					return s.str(&d.PackHash)
				}
				return !foldsTo(key, "decision", "reasoncodes", "packhash") && s.skip(0)
			})
		}
		return !foldsTo(key, "decisionid", "tenant", "agentid", "sessionid", "source", "eventid", "signature", "at", "input", "result") && s.skip(0)
	}) {
		return nil, false
	}
	s.ws()
	if s.i != len(s.b) {
		return nil, false
	}
	return decisionRow(r, data, observedSource(observed)), true
}

// foldsTo reports whether encoding/json might match key, which is none
// of names exactly, to one of them (given in lower case): when it equals
// one ignoring case, or has a byte outside ASCII (its folding knows a few
// non-ASCII letters, such as the Kelvin sign for k).
func foldsTo(key []byte, names ...string) bool {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return true
		}
	}
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// rowScan reads JSON from b at i.
type rowScan struct {
	b []byte
	i int
}

// maxSkipDepth bounds nesting in skipped values (encoding/json allows
// 10,000 levels; deeper goes to it).
const maxSkipDepth = 1000

func (s *rowScan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek is the next byte after white space, 0 at the end.
func (s *rowScan) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *rowScan) lit(l string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(l)) {
		return false
	}
	s.i += len(l)
	return true
}

// object reads an object, calling field for each key (unescaped, ASCII
// or not) with the scanner at its value. A key given twice fails:
// encoding/json merges or overwrites, which is not worth copying.
func (s *rowScan) object(field func(key []byte) bool) bool {
	if s.peek() != '{' {
		return false
	}
	s.i++
	if s.peek() == '}' {
		s.i++
		return true
	}
	var seen [16][]byte
	keys := seen[:0]
	for {
		key, ok := s.plain()
		if !ok {
			return false
		}
		for _, k := range keys {
			if bytes.Equal(k, key) {
				return false
			}
		}
		keys = append(keys, key)
		if s.peek() != ':' {
			return false
		}
		s.i++
		s.ws()
		if !field(key) {
			return false
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// nullableObject is object, or null (a struct or map field left zero).
func (s *rowScan) nullableObject(field func(key []byte) bool) bool {
	if s.peek() == 'n' {
		return s.lit("null")
	}
	return s.object(field)
}

// plain reads a string with no escape and no control character, and
// returns its bytes (valid UTF-8: encoding/json would replace invalid
// bytes).
func (s *rowScan) plain() ([]byte, bool) {
	raw, ok := s.rawString()
	if !ok {
		return nil, false
	}
	return raw[1 : len(raw)-1], true
}

// rawString reads a plain string (see plain) with its quotes.
func (s *rowScan) rawString() ([]byte, bool) {
	if s.peek() != '"' {
		return nil, false
	}
	start := s.i
	ascii := true
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			raw := s.b[start : j+1]
			if !ascii && !utf8.Valid(raw) {
				return nil, false
			}
			s.i = j + 1
			return raw, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (s *rowScan) str(dst *string) bool {
	b, ok := s.plain()
	if ok {
		*dst = string(b)
	}
	return ok
}

// strings reads an array of plain strings, or null (nil).
func (s *rowScan) strings(dst *[]string) bool {
	switch s.peek() {
	case 'n':
		*dst = nil
		return s.lit("null")
	case '[':
	default:
		return false
	}
	s.i++
	out := []string{}
	if s.peek() == ']' {
		s.i++
		*dst = out
		return true
	}
	for {
		var v string
		if !s.str(&v) {
			return false
		}
		out = append(out, v)
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			*dst = out
			return true
		default:
			return false
		}
	}
}

// skip reads any JSON value, checking it as strictly as encoding/json.
func (s *rowScan) skip(depth int) bool {
	if depth > maxSkipDepth {
		return false
	}
	switch c := s.peek(); {
	case c == '{':
		s.i++
		if s.peek() == '}' {
			s.i++
			return true
		}
		for {
			if s.peek() != '"' || !s.skipString() {
				return false
			}
			if s.peek() != ':' {
				return false
			}
			s.i++
			if !s.skip(depth + 1) {
				return false
			}
			switch s.peek() {
			case ',':
				s.i++
			case '}':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '[':
		s.i++
		if s.peek() == ']' {
			s.i++
			return true
		}
		for {
			if !s.skip(depth + 1) {
				return false
			}
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '"':
		return s.skipString()
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return false
}

// skipString reads a string with any valid escapes.
func (s *rowScan) skipString() bool {
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			j++
			if j >= len(s.b) {
				return false
			}
			switch s.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(s.b) {
					return false
				}
				for _, h := range s.b[j+1 : j+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				j += 4
			default:
				return false
			}
		}
	}
	return false
}

// number reads a JSON number.
func (s *rowScan) number() bool {
	b, i := s.b, s.i
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	s.i = i
	return true
}
