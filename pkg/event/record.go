package event

import (
	"encoding/json"
	"strconv"
)

// AppendJSON appends r encoded exactly as json.Marshal(r) encodes it, at a
// fraction of the cost: ingest encodes a record per event. The payload
// must be valid JSON, as Decode returns it (and redaction keeps it): it is
// copied as is when it is already in the form json.Marshal writes (compact,
// HTML-safe), not validated again. record_test.go checks the equivalence by
// table and by fuzzing.
func (r *Record) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"tenant":`...)
	dst = appendString(dst, r.Tenant)
	e := &r.Event
	dst = append(dst, `,"event":{"eventId":`...)
	dst = appendString(dst, e.EventID)
	dst = append(dst, `,"agentId":`...)
	dst = appendString(dst, e.AgentID)
	dst = append(dst, `,"sessionId":`...)
	dst = appendString(dst, e.SessionID)
	dst = append(dst, `,"sourceTimestamp":`...)
	dst = appendString(dst, e.SourceTimestamp)
	dst = append(dst, `,"category":`...)
	dst = appendString(dst, e.Category)
	dst = append(dst, `,"schemaVersion":`...)
	dst = appendString(dst, e.SchemaVersion)
	dst = append(dst, `,"payload":`...)
	switch {
	case e.Payload == nil:
		dst = append(dst, "null"...)
	case isCanonical(e.Payload):
		dst = append(dst, e.Payload...)
	default:
		enc, err := json.Marshal(e.Payload)
		if err != nil {
			return nil, err
		}
		dst = append(dst, enc...)
	}
	if e.PreviousHash != "" {
		dst = append(dst, `,"previousHash":`...)
		dst = appendString(dst, e.PreviousHash)
	}
	dst = append(dst, `},"sourceMs":`...)
	dst = strconv.AppendInt(dst, r.SourceMS, 10)
	dst = append(dst, `,"receivedMs":`...)
	dst = strconv.AppendInt(dst, r.ReceivedMS, 10)
	dst = append(dst, `,"client":{`...)
	sep := ""
	for _, f := range [...]struct{ name, v string }{{"sdk", r.Client.SDK}, {"framework", r.Client.Framework}, {"agentVersion", r.Client.AgentVersion}} {
		if f.v != "" {
			dst = append(dst, sep...)
			dst = append(dst, '"')
			dst = append(dst, f.name...)
			dst = append(dst, `":`...)
			dst = appendString(dst, f.v)
			sep = ","
		}
	}
	dst = append(dst, '}')
	if r.KeyID != "" {
		dst = append(dst, `,"keyId":`...)
		dst = appendString(dst, r.KeyID)
	}
	if r.Redactions != 0 {
		dst = append(dst, `,"redactions":`...)
		dst = strconv.AppendInt(dst, int64(r.Redactions), 10)
	}
	return append(dst, '}'), nil
}

// appendString appends s as json.Marshal writes a string: printable ASCII
// without ", \, <, > and & (nearly every identifier) as is, anything else
// through encoding/json.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(dst, enc...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// isCanonical reports whether valid JSON obj is already in the form
// json.Marshal writes a json.RawMessage in: no white space outside
// strings, no <, >, & and no U+2028 or U+2029 (whose UTF-8 leads with
// 0xE2; any 0xE2 sends obj the slow way). canonicalPayload's scan; it
// runs twice per ingested event, so it skips the bytes that need no
// look (canonStop) in a tight loop.
func isCanonical(obj []byte) bool {
	inString := false
	for i := 0; i < len(obj); i++ {
		c := obj[i]
		if !canonStop[c] {
			continue
		}
		switch c {
		case '<', '>', '&', 0xE2:
			return false
		case '"':
			inString = !inString
		case '\\':
			i++ // only inside a string (obj is valid): skip what it escapes
		default: // white space
			if !inString {
				return false
			}
		}
	}
	return true
}

// canonStop marks the bytes isCanonical must look at.
var canonStop = [256]bool{'<': true, '>': true, '&': true, 0xE2: true, '"': true, '\\': true, ' ': true, '\t': true, '\n': true, '\r': true}
