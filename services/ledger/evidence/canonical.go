// Package evidence is the part of the ledger an auditor needs without a
// server: the canonical form of a ledger record and its leaf hash, the
// checkpoint key and signed-note checkpoints (C2SP tlog-checkpoint), and
// the evidence bundle with its offline verifier. It depends on no NATS or
// ClickHouse code, so `vigil verify` runs anywhere.
package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/pkg/canonjson"
)

// Record kinds: which stream a ledger record came from.
const (
	KindEvent    = "event"    // an accepted agent event (INGEST)
	KindDecision = "decision" // a policy decision (POLICY)
	KindControl  = "control"  // a control-plane change (CONTROL)
	KindApproval = "approval" // a pending-action change (GUARDIAN)
)

// FormatVersion is the version of the canonical envelope ("v").
const FormatVersion = 1

// Envelope is a ledger record before canonicalisation. ID is the record's
// stable identity (an event id, a decision id, or the source stream
// sequence for control and approval changes); the ledger appends exactly
// one leaf per (tenant, kind, id).
type Envelope struct {
	Kind    string          `json:"kind"`
	Tenant  string          `json:"tenant"`
	ID      string          `json:"id"`
	Session string          `json:"session"`
	Record  json.RawMessage `json:"record"`
}

// Key is the envelope's dedupe key within its tenant's log: "kind:id".
func (e Envelope) Key() string { return e.Kind + ":" + e.ID }

// Canonical returns the canonical bytes of the envelope: the JSON object
// {"id","kind","record","session","tenant","v"} with every object's keys
// sorted by byte value at every depth, no insignificant whitespace,
// numbers exactly as written, and strings escaped as Go's encoding/json
// does without HTML escaping. Canonicalising canonical bytes is the
// identity, so a verifier can recompute them from a parsed record.
func (e Envelope) Canonical() ([]byte, error) {
	rec, err := Canonicalize(e.Record)
	if err != nil {
		return nil, fmt.Errorf("evidence: record of %s: %w", e.Key(), err)
	}
	return CanonicalEnvelope(e.Kind, e.Tenant, e.ID, e.Session, rec)
}

// CanonicalEnvelope is Envelope.Canonical for a record that is already in
// canonical form (the caller guarantees it), which saves re-parsing it:
// the envelope's keys are written in their sorted order around it.
func CanonicalEnvelope(kind, tenant, id, session string, canonicalRecord []byte) ([]byte, error) {
	if kind == "" || tenant == "" || id == "" {
		return nil, errors.New("evidence: envelope needs kind, tenant and id")
	}
	var b bytes.Buffer
	b.Grow(len(canonicalRecord) + len(kind) + len(tenant) + len(id) + len(session) + 64)
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	str := func(s string) error {
		// Invalid UTF-8 is written as U+FFFD, as parsing would read it back.
		if err := enc.Encode(strings.ToValidUTF8(s, "\uFFFD")); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1) // Encode's newline
		return nil
	}
	for _, f := range []struct{ key, val string }{{`{"id":`, id}, {`,"kind":`, kind}} {
		b.WriteString(f.key)
		if err := str(f.val); err != nil {
			return nil, err
		}
	}
	b.WriteString(`,"record":`)
	b.Write(canonicalRecord)
	for _, f := range []struct{ key, val string }{{`,"session":`, session}, {`,"tenant":`, tenant}} {
		b.WriteString(f.key)
		if err := str(f.val); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(&b, `,"v":%d}`, FormatVersion)
	return b.Bytes(), nil
}

// Encode writes v (a struct whose fields are declared in sorted key
// order, holding only canonical values) in the canonical form's escaping.
func Encode(v any) ([]byte, error) { return canonjson.Encode(v) }

// Canonicalize rewrites any JSON value in the canonical form
// (pkg/canonjson, the one implementation Vigil has).
func Canonicalize(data []byte) ([]byte, error) { return canonjson.Canonicalize(data) }

// ParseCanonical decodes canonical bytes back into an envelope, checking
// that they are canonical.
func ParseCanonical(data []byte) (Envelope, error) {
	var raw struct {
		V       json.Number     `json:"v"`
		Kind    string          `json:"kind"`
		Tenant  string          `json:"tenant"`
		ID      string          `json:"id"`
		Session string          `json:"session"`
		Record  json.RawMessage `json:"record"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return Envelope{}, fmt.Errorf("evidence: record is not a JSON object: %w", err)
	}
	if raw.V.String() != fmt.Sprint(FormatVersion) {
		return Envelope{}, fmt.Errorf("evidence: unsupported record format v=%q", raw.V)
	}
	e := Envelope{Kind: raw.Kind, Tenant: raw.Tenant, ID: raw.ID, Session: raw.Session, Record: raw.Record}
	c, err := e.Canonical()
	if err != nil {
		return Envelope{}, err
	}
	if !bytes.Equal(c, data) {
		return Envelope{}, errors.New("evidence: record bytes are not in canonical form")
	}
	return e, nil
}

// RecordDigest is SHA-256 of a record's canonical bytes: the leaf data.
func RecordDigest(canonical []byte) []byte {
	d := sha256.Sum256(canonical)
	return d[:]
}

// LeafHash is the RFC 6962 leaf hash of the record digest,
// SHA-256(0x00 || SHA-256(canonical)).
func LeafHash(canonical []byte) []byte {
	// rfc6962.DefaultHasher.HashLeaf(RecordDigest(canonical)), without
	// its hasher allocation (evidence_test.go checks they agree).
	var b [1 + sha256.Size]byte
	b[0] = rfc6962.RFC6962LeafHashPrefix
	d := sha256.Sum256(canonical)
	copy(b[1:], d[:])
	h := sha256.Sum256(b[:])
	return h[:]
}

// HashString renders a hash as "sha256:<hex>", the KLA proof notation.
func HashString(h []byte) string { return "sha256:" + hex.EncodeToString(h) }

// ParseHash reverses HashString (the prefix is optional).
func ParseHash(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(s, "sha256:"))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%q is not a sha256 hash", s)
	}
	return b, nil
}
