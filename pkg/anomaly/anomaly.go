// Package anomaly is the record the risk service publishes on the RISK
// stream when an agent departs from its baseline, and the verdict it is
// listed as. It lives in pkg because two services read it: risk, which
// projects the verdict into the decisions table, and the ledger, which
// seals that same verdict, so that every row of the decisions table is a
// sealed record and `vigil ledger audit` can recompute its leaf.
package anomaly

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	rules "github.com/vigilhq/vigil/pkg/policy"
)

// SourceBaseline is the verdict source of anomalies.
const SourceBaseline = "baseline"

// Anomaly is what the risk service publishes on streams.AnomalySubject.
// The fields the notifier relies on (see pkg/streams/risk.go) come first.
type Anomaly struct {
	ID         string    `json:"id"`
	Tenant     string    `json:"tenant"`
	AgentID    string    `json:"agentId"`
	SessionID  string    `json:"sessionId"`
	Severity   string    `json:"severity"`
	Summary    string    `json:"summary"`
	OccurredAt time.Time `json:"occurredAt"`

	Type      string         `json:"type"`
	Value     string         `json:"value,omitempty"`
	Signature string         `json:"signature"`
	Evidence  map[string]any `json:"evidence"`
	// DecisionID and EventID are the record that raised it.
	DecisionID string       `json:"decisionId"`
	EventID    string       `json:"eventId,omitempty"`
	Action     rules.Action `json:"action"`
	// PolicySeq is the POLICY stream sequence of that decision.
	PolicySeq uint64 `json:"policySeq"`
}

// ReasonCode is the anomaly's reason code on its verdict.
func (a Anomaly) ReasonCode() string { return "BASELINE_" + strings.ToUpper(a.Type) }

// Verdict renders the anomaly as a decision record with source
// "baseline", so GET /v1/verdicts lists it and triage and learn work on
// it like on any verdict.
func (a Anomaly) Verdict() rules.DecisionRecord {
	code := a.ReasonCode()
	return rules.DecisionRecord{
		ID: a.ID, Tenant: a.Tenant, AgentID: a.AgentID, SessionID: a.SessionID, Source: SourceBaseline, EventID: a.EventID,
		Input: rules.Input{Tenant: a.Tenant, Action: a.Action, Context: map[string]any{"evidence": a.Evidence, "causedBy": a.DecisionID}},
		Decision: rules.Decision{Outcome: rules.Warn, ReasonCodes: []string{code},
			Matches: []rules.Match{{RuleID: "baseline/" + a.Type, Outcome: rules.Warn, ReasonCodes: []string{code}, Message: a.Summary}}},
		Signature: a.Signature, At: a.OccurredAt,
	}
}

// Decode reads an anomaly as published on the RISK stream.
func Decode(raw []byte) (Anomaly, error) {
	var a Anomaly
	if err := json.Unmarshal(raw, &a); err != nil {
		return Anomaly{}, fmt.Errorf("decode anomaly: %w", err)
	}
	if a.ID == "" {
		return Anomaly{}, fmt.Errorf("decode anomaly: no id")
	}
	return a, nil
}

// VerdictRecord is the verdict of the anomaly published as raw, in the
// exact bytes both the decisions projection stores and the ledger seals:
// one function computes them, so the two cannot drift.
func VerdictRecord(raw []byte) (rules.DecisionRecord, []byte, error) {
	a, err := Decode(raw)
	if err != nil {
		return rules.DecisionRecord{}, nil, err
	}
	v := a.Verdict()
	b, err := json.Marshal(v)
	if err != nil {
		return rules.DecisionRecord{}, nil, fmt.Errorf("encode verdict of %s: %w", a.ID, err)
	}
	return v, b, nil
}
