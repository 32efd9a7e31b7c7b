package canonjson

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync"
	"unicode/utf8"
)

// The fast path writes the canonical form in one pass over the input,
// without building a map per object: members are written in input order
// and an object is reordered in place only when its keys were not sorted
// already. It declines (ok = false) anything whose handling it does not
// reproduce byte for byte — invalid JSON, duplicate keys, very deep
// nesting, trailing data — and the caller falls back to the decoder, so
// the answer is always Canonicalize's. fast_test.go fuzzes the two
// against each other.

// maxFastDepth bounds the fast path's recursion; deeper values take the
// decoder (which has its own limit).
const maxFastDepth = 256

// AppendValue appends the canonical form of the JSON value at the start
// of data (after optional white space) to dst and reports how many bytes
// of data the value and the white space before it took. ok is false when
// the fast path declines the value; use Canonicalize then.
func AppendValue(dst, data []byte) (out []byte, n int, ok bool) {
	c := scratch.Get().(*canonicalizer)
	c.data, c.out = data, dst
	i, ok := c.value(skipSpace(data, 0), 0)
	out = c.out
	c.data, c.out = nil, nil
	clear(c.members[:cap(c.members)]) // keys point into data
	if cap(c.tmp) <= 64<<10 {
		scratch.Put(c)
	}
	if !ok {
		return dst, 0, false
	}
	return out, i, true
}

// scratch holds canonicalizers, for their member stack and reorder buffer.
var scratch = sync.Pool{New: func() any { return &canonicalizer{members: make([]member, 0, 32)} }}

// fastCanonicalize is Canonicalize's fast path.
func fastCanonicalize(data []byte) ([]byte, bool) {
	out, n, ok := AppendValue(make([]byte, 0, len(data)), data)
	if !ok || skipSpace(data, n) != len(data) {
		return nil, false
	}
	return out, true
}

type member struct {
	key        []byte // decoded key
	start, end int    // `"key":value` in out
}

type canonicalizer struct {
	data    []byte
	out     []byte
	members []member // a stack: each open object's members
	tmp     []byte
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value writes the value at data[i] and returns the index after it.
func (c *canonicalizer) value(i, depth int) (int, bool) {
	if i >= len(c.data) || depth > maxFastDepth {
		return 0, false
	}
	switch b := c.data[i]; {
	case b == '{':
		return c.object(i, depth)
	case b == '[':
		return c.array(i, depth)
	case b == '"':
		end, _, ok := c.str(i)
		return end, ok
	case b == 't':
		return c.literal(i, "true")
	case b == 'f':
		return c.literal(i, "false")
	case b == 'n':
		return c.literal(i, "null")
	case b == '-' || (b >= '0' && b <= '9'):
		return c.number(i)
	}
	return 0, false
}

func (c *canonicalizer) literal(i int, lit string) (int, bool) {
	if !bytes.HasPrefix(c.data[i:], []byte(lit)) {
		return 0, false
	}
	c.out = append(c.out, lit...)
	return i + len(lit), true
}

// number checks the JSON number grammar and copies the number as written
// (the decoder keeps it as a json.Number, which the encoder writes as is).
func (c *canonicalizer) number(i int) (int, bool) {
	d, start := c.data, i
	digits := func() bool {
		s := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return i > s
	}
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		return 0, false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return 0, false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return 0, false
		}
	}
	c.out = append(c.out, d[start:i]...)
	return i, true
}

// str writes the string at data[i] (its opening quote) and returns the
// index after it and its decoded bytes. A string that needs no decoding
// (no escapes, valid UTF-8) is copied unless it holds what the encoder
// escapes; any other is decoded by encoding/json and written again.
func (c *canonicalizer) str(i int) (int, []byte, bool) {
	d := c.data
	plain, ascii := true, true
	j := i + 1
	for ; j < len(d); j++ {
		b := d[j]
		if b == '"' {
			break
		}
		if b < 0x20 {
			return 0, nil, false // invalid JSON
		}
		if b == '\\' {
			plain = false
			j++ // skip the escaped byte (a quote must not end the string)
		} else if b >= utf8.RuneSelf {
			ascii = false
		}
	}
	if j >= len(d) {
		return 0, nil, false
	}
	raw := d[i+1 : j]
	if plain && (ascii || (utf8.Valid(raw) && !bytes.Contains(raw, lineSep) && !bytes.Contains(raw, paraSep))) {
		c.out = append(c.out, d[i:j+1]...)
		return j + 1, raw, true
	}
	var s string
	if err := json.Unmarshal(d[i:j+1], &s); err != nil {
		return 0, nil, false
	}
	c.out = AppendString(c.out, s)
	return j + 1, []byte(s), true
}

var lineSep, paraSep = []byte("\u2028"), []byte("\u2029")

func (c *canonicalizer) array(i, depth int) (int, bool) {
	c.out = append(c.out, '[')
	i = skipSpace(c.data, i+1)
	if i < len(c.data) && c.data[i] == ']' {
		c.out = append(c.out, ']')
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = c.value(i, depth+1); !ok {
			return 0, false
		}
		i = skipSpace(c.data, i)
		if i >= len(c.data) {
			return 0, false
		}
		switch c.data[i] {
		case ',':
			c.out = append(c.out, ',')
			i = skipSpace(c.data, i+1)
		case ']':
			c.out = append(c.out, ']')
			return i + 1, true
		default:
			return 0, false
		}
	}
}

func (c *canonicalizer) object(i, depth int) (int, bool) {
	base := len(c.members)
	i, ok := c.objectBody(i, depth)
	c.members = c.members[:base]
	return i, ok
}

// objectBody writes an object; object resets the member stack after it.
func (c *canonicalizer) objectBody(i, depth int) (int, bool) {
	open := len(c.out)
	c.out = append(c.out, '{')
	base := len(c.members)
	sorted := true
	i = skipSpace(c.data, i+1)
	if i < len(c.data) && c.data[i] == '}' {
		c.out = append(c.out, '}')
		return i + 1, true
	}
	for {
		if i >= len(c.data) || c.data[i] != '"' {
			return 0, false
		}
		if len(c.members) > base {
			c.out = append(c.out, ',')
		}
		m := member{start: len(c.out)}
		var ok bool
		if i, m.key, ok = c.str(i); !ok {
			return 0, false
		}
		i = skipSpace(c.data, i)
		if i >= len(c.data) || c.data[i] != ':' {
			return 0, false
		}
		c.out = append(c.out, ':')
		if i, ok = c.value(skipSpace(c.data, i+1), depth+1); !ok {
			return 0, false
		}
		m.end = len(c.out)
		if len(c.members) > base {
			switch bytes.Compare(c.members[len(c.members)-1].key, m.key) {
			case 0:
				return 0, false // a duplicate: the decoder keeps the last
			case 1:
				sorted = false
			}
		}
		c.members = append(c.members, m)
		i = skipSpace(c.data, i)
		if i >= len(c.data) {
			return 0, false
		}
		switch c.data[i] {
		case ',':
			i = skipSpace(c.data, i+1)
			continue
		case '}':
		default:
			return 0, false
		}
		break
	}
	if !sorted {
		ms := c.members[base:]
		slices.SortFunc(ms, func(a, b member) int { return bytes.Compare(a.key, b.key) })
		for k := 1; k < len(ms); k++ {
			if bytes.Equal(ms[k-1].key, ms[k].key) {
				return 0, false
			}
		}
		// Keys (decoded) point into data or were copied, not into out,
		// so out can be rewritten from a copy of the object's members.
		c.tmp = append(c.tmp[:0], c.out[open+1:]...)
		c.out = c.out[:open+1]
		for k, m := range ms {
			if k > 0 {
				c.out = append(c.out, ',')
			}
			c.out = append(c.out, c.tmp[m.start-open-1:m.end-open-1]...)
		}
	}
	c.out = append(c.out, '}')
	return i + 1, true
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string in the canonical form's
// escaping, which is encoding/json's with HTML escaping off: ", \ and
// control characters escaped (\b \f \n \r \t by name), U+2028 and U+2029
// escaped, invalid UTF-8 as \ufffd, everything else as is.
func AppendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		// A copy of at most 4 bytes, which stays on the stack.
		r, size := utf8.DecodeRuneInString(string(s[i:min(len(s), i+utf8.UTFMax)]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
