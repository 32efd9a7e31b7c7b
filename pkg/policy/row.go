package policy

import "time"

// DecisionRow is r's row of the decisions table (readmodel.Decisions), in
// its declared column order, with record (the exact bytes the ledger
// seals for r) in the record column. Policy projects its decisions and
// risk the verdicts of its anomalies through it, so the table's two
// writers cannot drift apart or from the declaration.
func DecisionRow(r DecisionRecord, record []byte) []any {
	a := r.Input.Action
	return []any{
		r.Tenant, r.ID, r.AgentID, r.SessionID, r.Source, r.EventID, r.Decision.Outcome.String(), r.Decision.ReasonCodes,
		r.Decision.PackHash, a.Kind, a.Tool, a.Target, a.Publisher, r.Signature, r.At.Truncate(time.Second), r.At.UnixMilli(),
		string(record), ObservedSource(a),
	}
}

// ObservedSource is how the action was observed, as its reporter says in
// metadata.source (Kaizen's "egress", "sdk", …), for GET
// /v1/verdicts?source=; a value too long to be such a name is dropped.
func ObservedSource(a Action) string {
	s, _ := a.Metadata["source"].(string)
	if len(s) > 64 {
		return ""
	}
	return s
}
