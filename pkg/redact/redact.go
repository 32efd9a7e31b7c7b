// Package redact removes personal data and secrets from agent events and
// decision inputs before Vigil stores or logs them.
//
// Every detected value is replaced by a typed placeholder such as
// "[EMAIL:3f9a1c2b]". The suffix is a keyed hash (HMAC-SHA256 under a
// per-deployment key, over the tenant, the class and the value, truncated
// to 32 bits), so equal values within a tenant still correlate across
// events while the value itself cannot be recovered or confirmed by anyone
// without the key.
//
// A Redactor holds the compiled built-in detectors and the key; it is
// safe for concurrent use. Tenants tune it through Settings (extra
// patterns, classes turned off), compiled once into a Policy.
package redact

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// Class is the type of a detected value; it names the placeholder.
type Class string

// Built-in classes.
const (
	ClassEmail      Class = "EMAIL"
	ClassPhone      Class = "PHONE"
	ClassCard       Class = "CARD"
	ClassIBAN       Class = "IBAN"
	ClassNationalID Class = "NATIONAL_ID"
	ClassSecret     Class = "SECRET"
)

// Classes lists the built-in classes.
var Classes = []Class{ClassEmail, ClassPhone, ClassCard, ClassIBAN, ClassNationalID, ClassSecret}

// KeyLen is the minimum length of the deployment's redaction key.
const KeyLen = 32

// Redactor is the deployment-wide redaction engine.
type Redactor struct {
	dets []detector
	pool sync.Pool // hash.Hash (HMAC under the deployment key)
	base *Policy
}

// New returns a redactor keyed with key (at least KeyLen bytes). The key
// must stay the same across restarts and replicas, or placeholders of the
// same value stop correlating.
func New(key []byte) (*Redactor, error) {
	if len(key) < KeyLen {
		return nil, errors.New("redact: key must be at least 32 bytes")
	}
	k := slices.Clone(key)
	r := &Redactor{dets: builtins()}
	r.pool.New = func() any { return hmac.New(sha256.New, k) }
	r.base = &Policy{r: r, dets: r.dets}
	return r, nil
}

// Default is the policy with every built-in class on and no extra pattern.
func (r *Redactor) Default() *Policy { return r.base }

// Policy is a Redactor specialised by a tenant's Settings. It is
// immutable and safe for concurrent use.
type Policy struct {
	r    *Redactor
	dets []detector
}

// Compile builds the policy for settings, which must be valid (see
// Settings.Validate; API writes validate before storing).
func (r *Redactor) Compile(s Settings) (*Policy, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	off := map[Class]bool{}
	for _, c := range s.Disabled {
		off[Class(strings.ToUpper(c))] = true
	}
	p := &Policy{r: r}
	for _, d := range r.dets {
		if !off[d.class] {
			p.dets = append(p.dets, d)
		}
	}
	for _, pat := range s.Patterns {
		re, err := regexp.Compile(pat.Regex)
		if err != nil {
			return nil, err
		}
		p.dets = append(p.dets, detector{class: Class(strings.ToUpper(pat.Name)), re: re, want: func(summary) bool { return true }})
	}
	return p, nil
}

// span is one detected value in a string.
type span struct {
	start, end int
	class      Class
}

// numeric classes must not sit inside a longer run of letters or digits:
// "x4111111111111111y" is an identifier, not a card.
func numeric(c Class) bool {
	return c == ClassCard || c == ClassPhone || c == ClassNationalID || c == ClassIBAN
}

func alnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// mayFind reports whether find could report anything in the string that
// the JSON literal lit (quotes included) decodes to. A literal without
// escapes is its own string: it is false when no detector's pre-filter
// wants it, decided without allocating the string. (find runs the same
// pre-filters again, on the string, when it is true.)
func (p *Policy) mayFind(lit []byte) bool {
	body := lit[1 : len(lit)-1]
	if bytes.IndexByte(body, '\\') >= 0 {
		return true
	}
	if len(body) < 5 {
		return false
	}
	// A view of body, read by the pre-filters and never kept: sm does
	// not outlive this call, and body is not modified meanwhile.
	sm := summarize(unsafe.String(unsafe.SliceData(body), len(body)))
	for i := range p.dets {
		if p.dets[i].want(sm) {
			return true
		}
	}
	return false
}

// find returns the non-overlapping spans to replace, in order.
func (p *Policy) find(s string) []span {
	if len(s) < 5 {
		return nil
	}
	sm := summarize(s)
	var spans []span
	for i := range p.dets {
		d := &p.dets[i]
		if !d.want(sm) {
			continue
		}
		for _, m := range d.re.FindAllStringSubmatchIndex(s, -1) {
			a, b := m[2*d.group], m[2*d.group+1]
			if a < 0 || b <= a {
				continue
			}
			if numeric(d.class) && (a > 0 && alnum(s[a-1]) || b < len(s) && alnum(s[b])) {
				continue
			}
			if d.valid != nil && !d.valid(s[a:b]) {
				continue
			}
			spans = append(spans, span{a, b, d.class})
		}
	}
	if len(spans) < 2 {
		return spans
	}
	// Earliest first, longest first at equal starts; detector order
	// breaks remaining ties (stable sort).
	slices.SortStableFunc(spans, func(x, y span) int {
		if x.start != y.start {
			return x.start - y.start
		}
		return (y.end - y.start) - (x.end - x.start)
	})
	out := spans[:1]
	for _, sp := range spans[1:] {
		if last := &out[len(out)-1]; sp.start < last.end {
			// Overlap: extend the earlier span so nothing of either
			// value survives.
			if sp.end > last.end {
				last.end = sp.end
			}
			continue
		}
		out = append(out, sp)
	}
	return out
}

// placeholder renders "[CLASS:hash8]".
func (p *Policy) placeholder(tenant string, c Class, v string) string {
	h := p.r.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(c))
	h.Write([]byte{0})
	h.Write([]byte(v))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	p.r.pool.Put(h)
	return "[" + string(c) + ":" + hex.EncodeToString(sum[:4]) + "]"
}

// String redacts s and returns the result and how many values it
// replaced. A string without any detected value is returned as is.
func (p *Policy) String(tenant, s string) (string, int) {
	found := map[string]string{}
	out, n := p.redactString(tenant, s, found)
	if n > 0 && recurs(found, func(v string) bool { return strings.Contains(out, v) }) {
		// A detected value may recur where its detector could not see it
		// (glued to a letter, split by an unexpected label): remove every
		// literal recurrence too, so a detected value never survives.
		out = replacerOf(found).Replace(out)
	}
	return out, n
}

// redactString replaces the values find reports and records each one
// (value → placeholder) in found.
func (p *Policy) redactString(tenant, s string, found map[string]string) (string, int) {
	spans := p.find(s)
	if len(spans) == 0 {
		return s, 0
	}
	var b strings.Builder
	b.Grow(len(s))
	prev := 0
	for _, sp := range spans {
		v := s[sp.start:sp.end]
		ph := p.placeholder(tenant, sp.class, v)
		b.WriteString(s[prev:sp.start])
		b.WriteString(ph)
		prev = sp.end
		if len(v) >= minRecurrence {
			found[v] = ph
		}
	}
	b.WriteString(s[prev:])
	return b.String(), len(spans)
}

// minRecurrence is the shortest detected value that is also removed
// wherever else it occurs literally; shorter ones (a custom pattern's
// match, say) would hit ordinary text.
const minRecurrence = 6

// recurs reports whether any found value still occurs (in is the
// containment test on the output); usually none does and the second pass
// is skipped.
func recurs(found map[string]string, in func(string) bool) bool {
	for v := range found {
		if in(v) {
			return true
		}
	}
	return false
}

// replacerOf replaces every found value by its placeholder in one pass,
// longest values first so that a value containing another goes whole.
func replacerOf(found map[string]string) *strings.Replacer {
	vals := make([]string, 0, len(found))
	for v := range found {
		vals = append(vals, v)
	}
	slices.SortFunc(vals, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	pairs := make([]string, 0, 2*len(vals))
	for _, v := range vals {
		pairs = append(pairs, v, found[v])
	}
	return strings.NewReplacer(pairs...)
}

// sensitiveKeys are object keys whose string values are secrets whatever
// they look like (compared lower-case with '-' and '_' removed).
var sensitiveKeys = map[string]bool{
	"password": true, "passwd": true, "pwd": true, "secret": true, "clientsecret": true,
	"apikey": true, "xapikey": true, "apitoken": true, "accesstoken": true, "refreshtoken": true,
	"idtoken": true, "authtoken": true, "sessiontoken": true, "token": true, "authorization": true,
	"proxyauthorization": true, "privatekey": true, "secretkey": true, "secretaccesskey": true,
	"cookie": true, "setcookie": true, "credentials": true, "passphrase": true,
}

func sensitiveKey(k string) bool { return sensitiveKeyBytes([]byte(k)) }

func sensitiveKeyBytes(k []byte) bool {
	if len(k) > 40 {
		return false
	}
	var buf [40]byte
	n := 0
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '-' || c == '_':
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		buf[n] = c
		n++
	}
	return sensitiveKeys[string(buf[:n])]
}

// secretsOn reports whether the policy redacts secrets (sensitive keys
// follow the secret class's switch).
func (p *Policy) secretsOn() bool {
	for _, d := range p.dets {
		if d.class == ClassSecret {
			return true
		}
	}
	return false
}

func (p *Policy) cardsOn() bool {
	for _, d := range p.dets {
		if d.class == ClassCard {
			return true
		}
	}
	return false
}

// value redacts a string; sensitive is true when it is the value of a
// sensitive object key.
func (p *Policy) value(tenant string, sensitive bool, s string, found map[string]string) (string, int) {
	if sensitive && s != "" && p.secretsOn() {
		ph := p.placeholder(tenant, ClassSecret, s)
		if len(s) >= minRecurrence {
			found[s] = ph
		}
		return ph, 1
	}
	return p.redactString(tenant, s, found)
}

// number redacts a JSON number that is a Luhn-valid card number.
func (p *Policy) number(tenant, lit string) (string, bool) {
	if len(lit) < 13 || len(lit) > 19 || !p.cardsOn() {
		return "", false
	}
	for i := 0; i < len(lit); i++ {
		if lit[i] < '0' || lit[i] > '9' {
			return "", false
		}
	}
	if !validCard(lit) {
		return "", false
	}
	return p.placeholder(tenant, ClassCard, lit), true
}

// Value redacts a decoded JSON value (map[string]any, []any, string,
// float64, json.Number …) and returns a redacted copy and the count.
// Inputs are never modified; unchanged subtrees are shared.
func (p *Policy) Value(tenant string, v any) (any, int) {
	found := map[string]string{}
	out, n := p.walk(tenant, "", v, found)
	if len(found) > 0 {
		// Second pass: a value detected anywhere is removed everywhere.
		// (mapStrings only copies what changes.)
		rep := replacerOf(found)
		out, _ = mapStrings(out, func(s string) (string, bool) {
			r := rep.Replace(s)
			return r, r != s
		})
	}
	return out, n
}

func (p *Policy) walk(tenant, key string, v any, found map[string]string) (any, int) {
	switch t := v.(type) {
	case string:
		return p.value(tenant, key != "" && sensitiveKey(key), t, found)
	case map[string]any:
		var out map[string]any
		n := 0
		for k, x := range t {
			y, c := p.walk(tenant, k, x, found)
			if c == 0 {
				continue
			}
			if out == nil {
				out = make(map[string]any, len(t))
				for k2, x2 := range t {
					out[k2] = x2
				}
			}
			out[k] = y
			n += c
		}
		if out == nil {
			return t, 0
		}
		return out, n
	case []any:
		var out []any
		n := 0
		for i, x := range t {
			y, c := p.walk(tenant, "", x, found)
			if c == 0 {
				continue
			}
			if out == nil {
				out = slices.Clone(t)
			}
			out[i] = y
			n += c
		}
		if out == nil {
			return t, 0
		}
		return out, n
	case float64:
		if t >= 1e12 && t < 1e19 && t == math.Trunc(t) {
			if s, ok := p.number(tenant, strconv.FormatFloat(t, 'f', -1, 64)); ok {
				return s, 1
			}
		}
		return t, 0
	case json.Number:
		if s, ok := p.number(tenant, t.String()); ok {
			return s, 1
		}
		return t, 0
	}
	return v, 0
}

// Map redacts a map[string]any (action arguments, decision context).
func (p *Policy) Map(tenant string, m map[string]any) (map[string]any, int) {
	if m == nil {
		return nil, 0
	}
	v, n := p.Value(tenant, m)
	return v.(map[string]any), n
}

// mapStrings applies fn to every string value under v, copying only the
// containers that change.
func mapStrings(v any, fn func(string) (string, bool)) (any, bool) {
	switch t := v.(type) {
	case string:
		return fn(t)
	case map[string]any:
		var out map[string]any
		for k, x := range t {
			y, ch := mapStrings(x, fn)
			if !ch {
				continue
			}
			if out == nil {
				out = make(map[string]any, len(t))
				for k2, x2 := range t {
					out[k2] = x2
				}
			}
			out[k] = y
		}
		if out == nil {
			return t, false
		}
		return out, true
	case []any:
		var out []any
		for i, x := range t {
			y, ch := mapStrings(x, fn)
			if !ch {
				continue
			}
			if out == nil {
				out = slices.Clone(t)
			}
			out[i] = y
		}
		if out == nil {
			return t, false
		}
		return out, true
	}
	return v, false
}
