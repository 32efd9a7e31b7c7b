package policy

import (
	"encoding/json"
	"time"
)

// DecisionRow is r's row of the decisions table (readmodel.Decisions), in
// its declared column order, with record (the exact bytes the ledger
// seals for r) in the record column. Policy projects its decisions and
// risk the verdicts of its anomalies through it, so the table's two
// writers cannot drift apart or from the declaration.
//
// record goes in as it is, not copied into a string: the driver copies
// []byte and string alike into the String column, and a string copy of
// every record was 2 % of the bytes `vigil bench decide` allocated
// (perf-alloc2). The row must not outlive a caller that reuses record.
func DecisionRow(r DecisionRecord, record []byte) []any {
	return decisionRow(r, record, ObservedSource(r.Input.Action))
}

// decisionRow is DecisionRow with the observed source given.
func decisionRow(r DecisionRecord, record []byte, observed string) []any {
	a := r.Input.Action
	return []any{
		r.Tenant, r.ID, r.AgentID, r.SessionID, r.Source, r.EventID, r.Decision.Outcome.String(), r.Decision.ReasonCodes,
		r.Decision.PackHash, a.Kind, a.Tool, a.Target, a.Publisher, r.Signature, r.At.Truncate(time.Second), r.At.UnixMilli(),
		record, observed,
	}
}

// ObservedSource is how the action was observed, as its reporter says in
// metadata.source (Kaizen's "egress", "sdk", …), for GET
// /v1/verdicts?source=; a value too long to be such a name is dropped.
func ObservedSource(a Action) string {
	s, _ := a.Metadata["source"].(string)
	return observedSource(s)
}

func observedSource(s string) string {
	if len(s) > 64 {
		return ""
	}
	return s
}

// rowRecord is the part of a DecisionRecord its decisions row reads. The
// tags are DecisionRecord's, so encoding/json matches the same keys to
// the same fields; everything else (the input's context, agent, session,
// budgets, the matches) is skipped instead of decoded, which is most of
// what decoding a record costs.
type rowRecord struct {
	ID        string `json:"decisionId"`
	Tenant    string `json:"tenant"`
	AgentID   string `json:"agentId"`
	SessionID string `json:"sessionId"`
	Source    string `json:"source"`
	EventID   string `json:"eventId"`
	Input     struct {
		Action struct {
			Kind      string `json:"kind"`
			Tool      string `json:"tool"`
			Target    string `json:"target"`
			Publisher string `json:"publisher"`
			// A map, as in Action: its keys match exactly (struct
			// fields would match "Source" too), and only "source" is
			// decoded.
			Metadata map[string]json.RawMessage `json:"metadata"`
		} `json:"action"`
	} `json:"input"`
	Decision struct {
		Outcome     Outcome  `json:"decision"`
		ReasonCodes []string `json:"reasonCodes"`
		PackHash    string   `json:"packHash"`
	} `json:"result"`
	Signature string    `json:"signature"`
	At        time.Time `json:"at"`
}

// DecodeDecisionRow is DecisionRow of the record encoded in data, with
// data as its record: the same row as decoding data into a DecisionRecord
// whenever that succeeds (FuzzDecodeDecisionRow), for a fraction of the
// cost. It fails on data that is not JSON or whose row fields have the
// wrong type; a record wrong only in fields the row does not hold (which
// the policy service never writes) is projected rather than refused.
func DecodeDecisionRow(data []byte) ([]any, error) {
	if row, ok := decodeRowFast(data); ok {
		return row, nil
	}
	return decodeRowJSON(data)
}

// decodeRowJSON is DecodeDecisionRow through encoding/json.
func decodeRowJSON(data []byte) ([]any, error) {
	var r rowRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	a := Action{Kind: r.Input.Action.Kind, Tool: r.Input.Action.Tool, Target: r.Input.Action.Target, Publisher: r.Input.Action.Publisher}
	if raw, ok := r.Input.Action.Metadata["source"]; ok {
		// ObservedSource reads a string and ignores any other type.
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		a.Metadata = map[string]any{"source": v}
	}
	rec := DecisionRecord{ID: r.ID, Tenant: r.Tenant, AgentID: r.AgentID, SessionID: r.SessionID, Source: r.Source, EventID: r.EventID,
		Input: Input{Action: a}, Decision: Decision{Outcome: r.Decision.Outcome, ReasonCodes: r.Decision.ReasonCodes, PackHash: r.Decision.PackHash},
		Signature: r.Signature, At: r.At}
	return DecisionRow(rec, data), nil
}
