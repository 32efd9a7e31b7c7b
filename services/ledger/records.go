package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/pkg/anomaly"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// sources are the streams the ledger seals, in the order records of one
// batch are appended (then by stream sequence).
var sources = []struct {
	stream, filter, durable, kind string
}{
	{streams.Ingest, streams.AllEventsReceived, "ledger-ingest", evidence.KindEvent},
	{streams.Policy, streams.AllDecisions, "ledger-policy", evidence.KindDecision},
	{streams.Control, "control.v1.>", "ledger-control", evidence.KindControl},
	{streams.Guardian, streams.AllApprovals, "ledger-guardian", evidence.KindApproval},
	// Anomalies are sealed as the verdicts (source "baseline") that the
	// risk service lists among the decisions, so every decisions row is a
	// sealed record.
	{streams.Risk, streams.AllAnomalies, "ledger-risk", evidence.KindDecision},
}

func streamRank(stream string) int {
	for i, s := range sources {
		if s.stream == stream {
			return i
		}
	}
	return len(sources)
}

// EventBody is the event part of a ledger record: everything the events
// projection keeps, so `vigil ledger audit` can recompute the leaf from a
// row. (The projection keeps the source time as milliseconds, not the
// string the client sent, so the record does too.)
type EventBody struct {
	// Fields are declared in canonical (sorted) key order.
	AgentID       string          `json:"agentId"`
	AgentVersion  string          `json:"agentVersion"`
	Category      string          `json:"category"`
	EventID       string          `json:"eventId"`
	Framework     string          `json:"framework"`
	KeyID         string          `json:"keyId"`
	Payload       json.RawMessage `json:"payload"`
	PreviousHash  string          `json:"previousHash"`
	ReceivedMS    int64           `json:"receivedMs"`
	SchemaVersion string          `json:"schemaVersion"`
	SDK           string          `json:"sdk"`
	SessionID     string          `json:"sessionId"`
	SourceMS      int64           `json:"sourceMs"`
	Tenant        string          `json:"tenant"`
}

// EventEnvelope is the ledger record of an accepted event. Its Record is
// already canonical: the body's keys are written in sorted order and the
// payload is canonicalised, so the envelope costs one payload parse.
func EventEnvelope(b EventBody) (evidence.Envelope, error) {
	if len(b.Payload) == 0 {
		b.Payload = json.RawMessage("{}")
	}
	// Invalid UTF-8 becomes U+FFFD here, as it does when canonical bytes
	// are parsed again, so the body is a fixed point of canonicalisation.
	for _, f := range []*string{&b.AgentID, &b.AgentVersion, &b.Category, &b.EventID, &b.Framework, &b.KeyID,
		&b.PreviousHash, &b.SchemaVersion, &b.SDK, &b.SessionID, &b.Tenant} {
		*f = strings.ToValidUTF8(*f, "\uFFFD")
	}
	p, err := evidence.Canonicalize(b.Payload)
	if err != nil {
		return evidence.Envelope{}, fmt.Errorf("event payload: %w", err)
	}
	b.Payload = p
	body, err := evidence.Encode(b)
	if err != nil {
		return evidence.Envelope{}, err
	}
	return evidence.Envelope{Kind: evidence.KindEvent, Tenant: b.Tenant, ID: b.EventID, Session: b.SessionID, Record: body}, nil
}

// DecisionEnvelope is the ledger record of a decision: the record exactly
// as the policy service published it (and as the decisions projection
// keeps it in its record column).
func DecisionEnvelope(tenant string, raw []byte) (evidence.Envelope, error) {
	var d struct {
		ID        string `json:"decisionId"`
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return evidence.Envelope{}, err
	}
	if d.ID == "" {
		return evidence.Envelope{}, errors.New("decision without decisionId")
	}
	return evidence.Envelope{Kind: evidence.KindDecision, Tenant: tenant, ID: d.ID, Session: d.SessionID, Record: raw}, nil
}

// source is one message to seal.
type source struct {
	stream  string
	subject string
	seq     uint64
	data    []byte
}

// subjectTenant is the tenant token of a source subject
// ("<domain>.v1.<kind>.<tenant>.…", at least five tokens), as envelopeOf
// reads it.
func subjectTenant(subject string) (string, bool) {
	rest := subject
	for range 3 {
		_, after, ok := strings.Cut(rest, ".")
		if !ok {
			return "", false
		}
		rest = after
	}
	tenant, _, ok := strings.Cut(rest, ".")
	return tenant, ok
}

// envelopeOf maps a stream message onto its ledger record. Control and
// approval changes have no id of their own that survives every change,
// so their identity is the stream sequence that stored them.
func envelopeOf(m source) (evidence.Envelope, error) {
	tok := strings.Split(m.subject, ".")
	if len(tok) < 5 {
		return evidence.Envelope{}, fmt.Errorf("subject %q has no tenant token", m.subject)
	}
	tenant := tok[3]
	switch m.stream {
	case streams.Ingest:
		var r event.Record
		if err := json.Unmarshal(m.data, &r); err != nil {
			return evidence.Envelope{}, err
		}
		if r.Event.EventID == "" {
			return evidence.Envelope{}, errors.New("event without eventId")
		}
		return EventEnvelope(EventBody{
			Tenant: tenant, EventID: r.Event.EventID, AgentID: r.Event.AgentID, SessionID: r.Event.SessionID,
			Category: r.Event.Category, SchemaVersion: r.Event.SchemaVersion, SourceMS: r.SourceMS, ReceivedMS: r.ReceivedMS,
			PreviousHash: r.Event.PreviousHash, Payload: r.Event.Payload, SDK: r.Client.SDK, Framework: r.Client.Framework,
			AgentVersion: r.Client.AgentVersion, KeyID: r.KeyID,
		})
	case streams.Policy:
		return DecisionEnvelope(tenant, m.data)
	case streams.Risk:
		_, record, err := anomaly.VerdictRecord(m.data)
		if err != nil {
			return evidence.Envelope{}, err
		}
		return DecisionEnvelope(tenant, record)
	case streams.Control:
		if !json.Valid(m.data) {
			return evidence.Envelope{}, errors.New("control change is not JSON")
		}
		body, _ := json.Marshal(map[string]any{"subject": m.subject, "change": json.RawMessage(m.data)})
		return evidence.Envelope{Kind: evidence.KindControl, Tenant: tenant, ID: strconv.FormatUint(m.seq, 10), Record: body}, nil
	case streams.Guardian:
		var c struct {
			Action struct {
				SessionID string `json:"sessionId"`
			} `json:"action"`
		}
		if err := json.Unmarshal(m.data, &c); err != nil {
			return evidence.Envelope{}, err
		}
		body, _ := json.Marshal(map[string]any{"subject": m.subject, "change": json.RawMessage(m.data)})
		return evidence.Envelope{Kind: evidence.KindApproval, Tenant: tenant, ID: strconv.FormatUint(m.seq, 10), Session: c.Action.SessionID, Record: body}, nil
	}
	return evidence.Envelope{}, fmt.Errorf("stream %s is not sealed by the ledger", m.stream)
}
