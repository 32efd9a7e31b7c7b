package ledger

import (
	"bytes"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/vigilhq/vigil/pkg/canonjson"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// fastEvent is prepare's fast path for an INGEST record: it reads the
// record (as ingest writes it, or as json.Marshal does) without
// encoding/json's reflection and writes the canonical envelope in one
// buffer — the same bytes as envelopeOf + CanonicalEnvelope, which
// fastevent_test.go fuzzes it against. It declines (ok = false) whatever
// it does not reproduce exactly — escaped strings, unknown or repeated
// keys, nulls, numbers that are not plain integers, a payload the
// canonical fast path declines — and prepare takes the generic path.
func fastEvent(tenant string, data []byte) (canon []byte, id, session string, ok bool) {
	if tenant == "" || !plainString([]byte(tenant)) {
		return nil, "", "", false
	}
	var (
		r                                                       = reader{d: data}
		eventID, agentID, sessionID, category, schema, prevHash []byte
		sdk, framework, agentVersion, keyID, payload            []byte
		sourceMS, receivedMS                                    int64
		seen                                                    uint32
	)
	// once marks a key seen; a repeated key is declined (the decoder
	// keeps the last, and nobody writes one).
	once := func(bit uint32) bool {
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	}
	ok = r.object(func(key []byte) bool {
		switch string(key) {
		case "tenant":
			_, ok := r.str()
			return ok && once(1)
		case "sourceMs":
			v, ok := r.int()
			sourceMS = v
			return ok && once(2)
		case "receivedMs":
			v, ok := r.int()
			receivedMS = v
			return ok && once(4)
		case "keyId":
			v, ok := r.str()
			keyID = v
			return ok && once(8)
		case "redactions":
			_, ok := r.int()
			return ok && once(16)
		case "client":
			return once(32) && r.object(func(key []byte) bool {
				var dst *[]byte
				switch string(key) {
				case "sdk":
					dst = &sdk
				case "framework":
					dst = &framework
				case "agentVersion":
					dst = &agentVersion
				default:
					return false
				}
				if *dst != nil {
					return false
				}
				v, ok := r.str()
				*dst = v
				return ok
			})
		case "event":
			return once(64) && r.object(func(key []byte) bool {
				var dst *[]byte
				switch string(key) {
				case "payload":
					r.ws()
					if payload != nil || r.i >= len(r.d) || r.d[r.i] != '{' {
						return false
					}
					var n int
					payload, n, ok = canonjson.AppendValue(make([]byte, 0, len(r.d)-r.i), r.d[r.i:])
					r.i += n
					return ok
				case "eventId":
					dst = &eventID
				case "agentId":
					dst = &agentID
				case "sessionId":
					dst = &sessionID
				case "sourceTimestamp":
					v, ok := r.str()
					return ok && v != nil && once(128)
				case "category":
					dst = &category
				case "schemaVersion":
					dst = &schema
				case "previousHash":
					dst = &prevHash
				default:
					return false
				}
				if *dst != nil {
					return false
				}
				v, ok := r.str()
				*dst = v
				return ok
			})
		}
		return false
	})
	r.ws()
	if !ok || r.i != len(data) || len(eventID) == 0 || payload == nil {
		return nil, "", "", false
	}
	// The body, keys in sorted order (EventBody's field order), inside the
	// envelope, keys in sorted order (CanonicalEnvelope's).
	out := make([]byte, 0, len(data)+len(payload)+2*len(eventID)+len(sessionID)+2*len(tenant)+96)
	out = append(out, `{"id":`...)
	out = canonjson.AppendString(out, eventID)
	out = append(out, `,"kind":"`+evidence.KindEvent+`","record":{"agentId":`...)
	out = canonjson.AppendString(out, agentID)
	out = append(out, `,"agentVersion":`...)
	out = canonjson.AppendString(out, agentVersion)
	out = append(out, `,"category":`...)
	out = canonjson.AppendString(out, category)
	out = append(out, `,"eventId":`...)
	out = canonjson.AppendString(out, eventID)
	out = append(out, `,"framework":`...)
	out = canonjson.AppendString(out, framework)
	out = append(out, `,"keyId":`...)
	out = canonjson.AppendString(out, keyID)
	out = append(out, `,"payload":`...)
	out = append(out, payload...)
	out = append(out, `,"previousHash":`...)
	out = canonjson.AppendString(out, prevHash)
	out = append(out, `,"receivedMs":`...)
	out = strconv.AppendInt(out, receivedMS, 10)
	out = append(out, `,"schemaVersion":`...)
	out = canonjson.AppendString(out, schema)
	out = append(out, `,"sdk":`...)
	out = canonjson.AppendString(out, sdk)
	out = append(out, `,"sessionId":`...)
	out = canonjson.AppendString(out, sessionID)
	out = append(out, `,"sourceMs":`...)
	out = strconv.AppendInt(out, sourceMS, 10)
	out = append(out, `,"tenant":`...)
	out = canonjson.AppendString(out, tenant)
	out = append(out, `},"session":`...)
	out = canonjson.AppendString(out, sessionID)
	out = append(out, `,"tenant":`...)
	out = canonjson.AppendString(out, tenant)
	out = append(out, `,"v":`...)
	out = strconv.AppendInt(out, evidence.FormatVersion, 10)
	out = append(out, '}')
	return out, string(eventID), string(sessionID), true
}

// plainString reports whether s needs no decoding as a JSON string's
// content: valid UTF-8, no control characters, no quote or backslash.
func plainString(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(s)
}

// reader walks JSON for fastEvent, accepting only the subset it decodes
// exactly as encoding/json does.
type reader struct {
	d []byte
	i int
}

func (r *reader) ws() {
	for r.i < len(r.d) {
		switch r.d[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// str reads a string that needs no decoding and returns its content
// (non-nil, possibly empty).
func (r *reader) str() ([]byte, bool) {
	r.ws()
	if r.i >= len(r.d) || r.d[r.i] != '"' {
		return nil, false
	}
	start := r.i + 1
	for j := start; j < len(r.d); j++ {
		switch c := r.d[j]; {
		case c == '"':
			s := r.d[start:j:j]
			if !utf8.Valid(s) {
				return nil, false
			}
			r.i = j + 1
			return s, true
		case c < 0x20 || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// int reads an integer written without fraction or exponent.
func (r *reader) int() (int64, bool) {
	r.ws()
	start := r.i
	if r.i < len(r.d) && r.d[r.i] == '-' {
		r.i++
	}
	digits := r.i
	for r.i < len(r.d) && r.d[r.i] >= '0' && r.d[r.i] <= '9' {
		r.i++
	}
	if r.i == digits || (r.d[digits] == '0' && r.i-digits > 1) {
		return 0, false
	}
	if r.i < len(r.d) {
		if c := r.d[r.i]; c == '.' || c == 'e' || c == 'E' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(r.d[start:r.i]), 10, 64)
	return v, err == nil
}

// object reads an object, calling member for each key with the reader
// at its value; member reads the value and reports whether it could.
func (r *reader) object(member func(key []byte) bool) bool {
	r.ws()
	if r.i >= len(r.d) || r.d[r.i] != '{' {
		return false
	}
	r.i++
	r.ws()
	if r.i < len(r.d) && r.d[r.i] == '}' {
		r.i++
		return true
	}
	for {
		key, ok := r.str()
		if !ok {
			return false
		}
		r.ws()
		if r.i >= len(r.d) || r.d[r.i] != ':' {
			return false
		}
		r.i++
		if !member(key) {
			return false
		}
		r.ws()
		if r.i >= len(r.d) {
			return false
		}
		switch r.d[r.i] {
		case ',':
			r.i++
		case '}':
			r.i++
			return true
		default:
			return false
		}
	}
}

// fastDecision is prepare's fast path for a POLICY record: the record is
// made canonical once (canonjson's fast path) and its decisionId and
// sessionId are read from the canonical bytes, instead of a reflection
// decode of the record and a second pass. It gives DecisionEnvelope +
// Canonical's bytes (fastevent_test.go fuzzes it against them) and
// declines what it does not read exactly as encoding/json does: escaped
// values, values that are not strings, keys that only match in another
// case.
//
// The envelope it returns has no Record: the canonical record is built in
// a pooled buffer, copied into the canonical envelope and not kept (a
// fresh copy of every record was 2 % of the bytes per decision in `vigil
// bench decide`, perf-alloc2).
func fastDecision(tenant string, data []byte) (evidence.Envelope, []byte, bool) {
	bp := canonBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledCanon {
			canonBufs.Put(bp)
		}
	}()
	rec, n, ok := canonjson.AppendValue((*bp)[:0], data)
	*bp = rec
	if !ok {
		return evidence.Envelope{}, nil, false
	}
	rest := reader{d: data, i: n}
	rest.ws()
	if rest.i != len(data) {
		return evidence.Envelope{}, nil, false
	}
	var id, session []byte
	r := reader{d: rec}
	ok = r.object(func(key []byte) bool {
		var dst *[]byte
		switch {
		case string(key) == "decisionId":
			dst = &id
		case string(key) == "sessionId":
			dst = &session
		case bytes.EqualFold(key, []byte("decisionId")) || bytes.EqualFold(key, []byte("sessionId")):
			return false
		default:
			return r.skip()
		}
		v, ok := r.str()
		*dst = v
		return ok
	})
	if !ok || r.i != len(rec) || len(id) == 0 {
		return evidence.Envelope{}, nil, false
	}
	env := evidence.Envelope{Kind: evidence.KindDecision, Tenant: tenant, ID: string(id), Session: string(session)}
	canon, err := evidence.CanonicalEnvelope(env.Kind, env.Tenant, env.ID, env.Session, rec)
	if err != nil {
		return evidence.Envelope{}, nil, false
	}
	return env, canon, true
}

// canonBufs are fastDecision's buffers for a canonical record.
var canonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledCanon bounds the buffers kept: one huge record does not pin
// its buffer in the pool.
const maxPooledCanon = 256 << 10

// skip passes over a value of canonical JSON (valid, compact).
func (r *reader) skip() bool {
	depth, inString := 0, false
	for ; r.i < len(r.d); r.i++ {
		c := r.d[r.i]
		switch {
		case inString:
			if c == '\\' {
				r.i++
			} else if c == '"' {
				inString = false
				if depth == 0 {
					r.i++
					return true
				}
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return true // the end of the enclosing value
			}
			depth--
			if depth == 0 {
				r.i++
				return true
			}
		case c == ',' && depth == 0:
			return true
		}
	}
	return depth == 0 && !inString
}
