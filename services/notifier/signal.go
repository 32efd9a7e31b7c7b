package notifier

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Signal types a channel can subscribe to.
const (
	SignalVerdictBlock      = "verdict.block"
	SignalVerdictWarn       = "verdict.warn"
	SignalVerdictApproval   = "verdict.require_approval"
	SignalApprovalRequested = "approval.requested"
	SignalApprovalResolved  = "approval.resolved"
	SignalApprovalExpired   = "approval.expired"
	SignalApprovalRerouted  = "approval.rerouted"
	SignalAnomaly           = "anomaly"
	SignalRiskHigh          = "risk.high"
	// SignalHaltRaised and SignalHaltResumed come from CONTROL: a halt
	// (kill switch) was raised or lifted.
	SignalHaltRaised  = "halt.raised"
	SignalHaltResumed = "halt.resumed"
	// SignalTest is what POST …/:id/test sends; no channel subscribes to it.
	SignalTest = "notification.test"
)

// SignalTypes lists every type a channel may name, in documentation order.
var SignalTypes = []string{
	SignalVerdictBlock, SignalVerdictWarn, SignalVerdictApproval,
	SignalApprovalRequested, SignalApprovalResolved, SignalApprovalExpired, SignalApprovalRerouted,
	SignalAnomaly, SignalRiskHigh, SignalHaltRaised, SignalHaltResumed,
}

// Severities in increasing order; a channel's minimum filters signals below it.
var severities = []string{"info", "low", "medium", "high", "critical"}

func severityRank(s string) int {
	for i, v := range severities {
		if v == s {
			return i
		}
	}
	return -1
}

// Signal is one notable thing, normalised from the POLICY, GUARDIAN and
// RISK streams. Its JSON is the body of a generic webhook delivery.
type Signal struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Tenant     string    `json:"tenant"`
	Severity   string    `json:"severity"`
	Summary    string    `json:"summary"`
	AgentID    string    `json:"agentId,omitempty"`
	SessionID  string    `json:"sessionId,omitempty"`
	OccurredAt time.Time `json:"timestamp"`
	// Group ties signals about the same subject (an approval's request and
	// its resolution): PagerDuty's dedup key.
	Group string `json:"group"`
	// Resolves marks a signal that closes its group's incident.
	Resolves bool `json:"resolves,omitempty"`
	// Data is the source record as its producer wrote it.
	Data json.RawMessage `json:"data"`
}

// decodeSignal turns one source-stream message into a signal. ok is false
// for records that are not notable (an allow decision, a low risk score);
// an error means the record cannot be decoded and never will.
func decodeSignal(m jetstream.Msg) (Signal, bool, error) {
	subj := m.Subject()
	switch {
	case strings.HasPrefix(subj, "policy.v1."+streams.DecisionRecorded+"."):
		if !decisionSignals(m.Headers().Get(streams.HeaderOutcome)) {
			return Signal{}, false, nil
		}
		return fromDecision(m.Data())
	case strings.HasPrefix(subj, "guardian.v1."+streams.ApprovalChanged+"."):
		meta, err := m.Metadata()
		if err != nil {
			return Signal{}, false, err
		}
		return fromApproval(m.Data(), meta.Sequence.Stream)
	case strings.HasPrefix(subj, "risk.v1."+streams.AnomalyDetected+"."):
		return fromRisk(m.Data(), SignalAnomaly)
	case strings.HasPrefix(subj, "risk.v1."+streams.SessionScored+"."):
		return fromRisk(m.Data(), SignalRiskHigh)
	case strings.HasPrefix(subj, "control.v1."+streams.HaltChanged+"."):
		return fromHalt(m.Data())
	}
	return Signal{}, false, nil
}

// decisionTenant is the tenant of a recorded decision's subject
// (policy.v1.decision_recorded.TENANT.AGENT), ok false for other subjects.
func decisionTenant(subj string) (string, bool) {
	rest, ok := strings.CutPrefix(subj, "policy.v1."+streams.DecisionRecorded+".")
	if !ok {
		return "", false
	}
	t, _, ok := strings.Cut(rest, ".")
	return t, ok && t != ""
}

// decisionSignals says whether a decision whose Vigil-Outcome header is
// outcome may be a signal: the outcomes fromDecision signals, and an
// absent header (a record from before it), which only decoding can tell.
// Passing over the rest without decoding is most of what the notifier
// saves per allowed decision.
func decisionSignals(outcome string) bool {
	switch outcome {
	case "", policy.Block.String(), policy.Warn.String(), policy.RequireApproval.String():
		return true
	}
	return false
}

func fromDecision(data []byte) (Signal, bool, error) {
	var r policy.DecisionRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return Signal{}, false, fmt.Errorf("decode decision: %w", err)
	}
	var typ, sev string
	switch r.Decision.Outcome {
	case policy.Block:
		typ, sev = SignalVerdictBlock, "high"
	case policy.Warn:
		typ, sev = SignalVerdictWarn, "medium"
	case policy.RequireApproval:
		typ, sev = SignalVerdictApproval, "medium"
	default:
		return Signal{}, false, nil
	}
	what := describeAction(r.Input.Action)
	summary := fmt.Sprintf("%s: agent %s %s", r.Decision.Outcome, r.AgentID, what)
	if len(r.Decision.ReasonCodes) > 0 {
		summary += " (" + strings.Join(r.Decision.ReasonCodes, ", ") + ")"
	}
	return Signal{
		ID: "sig_" + r.ID, Type: typ, Tenant: r.Tenant, Severity: sev, Summary: summary,
		AgentID: r.AgentID, SessionID: r.SessionID, OccurredAt: r.At, Group: r.ID, Data: data,
	}, true, nil
}

func describeAction(a policy.Action) string {
	var parts []string
	for _, p := range []struct{ k, v string }{{"", a.Kind}, {"tool ", a.Tool}, {"→ ", a.Target}} {
		if p.v != "" {
			parts = append(parts, p.k+p.v)
		}
	}
	if len(parts) == 0 {
		return "acted"
	}
	return strings.Join(parts, " ")
}

func fromApproval(data []byte, seq uint64) (Signal, bool, error) {
	var ch approval.Change
	if err := json.Unmarshal(data, &ch); err != nil {
		return Signal{}, false, fmt.Errorf("decode approval: %w", err)
	}
	a := ch.Action
	s := Signal{
		Tenant: a.Tenant, AgentID: a.AgentID, SessionID: a.SessionID, OccurredAt: ch.At, Group: a.ID, Data: data,
		// The stream sequence makes each change its own signal (an action
		// can be rerouted twice) and is stable across redelivery.
		ID: "sig_" + a.ID + "_" + ch.Op + "_" + strconv.FormatUint(seq, 10),
	}
	what := describeAction(a.Action)
	switch ch.Op {
	case approval.OpRequested:
		s.Type, s.Severity = SignalApprovalRequested, "medium"
		if a.Priority == "high" || a.Priority == "critical" {
			s.Severity = "high"
		}
		s.Summary = fmt.Sprintf("Approval needed: agent %s %s", a.AgentID, what)
	case approval.OpResolved:
		s.Type, s.Severity, s.Resolves = SignalApprovalResolved, "info", true
		s.Summary = fmt.Sprintf("Approval %s by %s: agent %s %s", a.Status, a.DecidedBy, a.AgentID, what)
	case approval.OpExpired:
		s.Type, s.Severity, s.Resolves = SignalApprovalExpired, "low", true
		s.Summary = fmt.Sprintf("Approval expired (%s): agent %s %s", a.Outcome(), a.AgentID, what)
	case approval.OpRerouted:
		s.Type, s.Severity = SignalApprovalRerouted, "info"
		s.Summary = fmt.Sprintf("Approval rerouted to %s: agent %s %s", a.ReviewerGroup, a.AgentID, what)
	case approval.OpEscalated:
		// An escalation routes the action to more reviewers: the same
		// signal as a reroute, so the escalation group's channels hear.
		s.Type, s.Severity = SignalApprovalRerouted, "medium"
		s.Summary = fmt.Sprintf("Approval escalated to %s (undecided for too long): agent %s %s", a.ReviewerGroup, a.AgentID, what)
	default:
		return Signal{}, false, nil
	}
	return s, true, nil
}

// riskRecord holds only the fields pkg/streams documents as the RISK
// contract; the risk service may add others.
type riskRecord struct {
	ID         string    `json:"id"`
	Tenant     string    `json:"tenant"`
	AgentID    string    `json:"agentId"`
	SessionID  string    `json:"sessionId"`
	Severity   string    `json:"severity"`
	Summary    string    `json:"summary"`
	OccurredAt time.Time `json:"occurredAt"`
	Score      *float64  `json:"score"`
}

func fromRisk(data []byte, typ string) (Signal, bool, error) {
	var r riskRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return Signal{}, false, fmt.Errorf("decode risk record: %w", err)
	}
	if r.ID == "" || r.Tenant == "" {
		return Signal{}, false, fmt.Errorf("risk record lacks id or tenant")
	}
	sev := strings.ToLower(r.Severity)
	if severityRank(sev) < 0 {
		sev = "medium"
	}
	if typ == SignalRiskHigh && severityRank(sev) < severityRank("high") {
		return Signal{}, false, nil
	}
	summary := r.Summary
	if summary == "" {
		summary = fmt.Sprintf("%s for agent %s", typ, r.AgentID)
	}
	id, group := "sig_"+r.ID, r.ID
	if typ == SignalRiskHigh && r.SessionID != "" {
		// A session is scored on every change; it becomes high risk once.
		// One signal id per session makes every later high score schedule
		// nothing (the delivery subject is already taken).
		id, group = "sig_riskhigh_"+r.SessionID, "risk_"+r.SessionID
	}
	return Signal{
		ID: id, Type: typ, Tenant: r.Tenant, Severity: sev, Summary: summary,
		AgentID: r.AgentID, SessionID: r.SessionID, OccurredAt: r.OccurredAt, Group: group, Data: data,
	}, true, nil
}

// fromHalt turns a halt change into a signal: raising one is critical
// (agents are stopped), lifting it resolves the same incident.
func fromHalt(data []byte) (Signal, bool, error) {
	var h policy.Halt
	if err := json.Unmarshal(data, &h); err != nil {
		return Signal{}, false, fmt.Errorf("decode halt: %w", err)
	}
	if h.ID == "" || h.Tenant == "" {
		return Signal{}, false, fmt.Errorf("halt lacks id or tenant")
	}
	what := h.Scope
	switch h.Scope {
	case policy.HaltAgent:
		what += " " + h.AgentID
	case policy.HaltSession:
		what += " " + h.SessionID
	}
	s := Signal{Tenant: h.Tenant, AgentID: h.AgentID, SessionID: h.SessionID, Group: h.ID, Data: data}
	switch h.Op {
	case policy.HaltRaised:
		s.ID, s.Type, s.Severity, s.OccurredAt = "sig_"+h.ID+"_raised", SignalHaltRaised, "critical", h.CreatedAt
		s.Summary = fmt.Sprintf("Halted %s by %s: %s", what, h.By, h.Reason)
	case policy.HaltResumed:
		if h.EndedAt == nil {
			return Signal{}, false, fmt.Errorf("resumed halt %s lacks endedAt", h.ID)
		}
		s.ID, s.Type, s.Severity, s.OccurredAt, s.Resolves = "sig_"+h.ID+"_resumed", SignalHaltResumed, "info", *h.EndedAt, true
		s.Summary = fmt.Sprintf("Resumed %s by %s (halted for: %s)", what, h.By, h.Reason)
	default:
		return Signal{}, false, nil
	}
	return s, true, nil
}
