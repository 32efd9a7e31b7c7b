package policy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Policy statuses. Only active policies are in force; a draft is a
// proposal (an exception learned from a verdict) that someone with
// policies:write applies.
const (
	StatusActive   = "active"
	StatusArchived = "archived"
	StatusDraft    = "draft"
)

// Proposal says what a draft policy would change: applying it makes its
// document the next version of PolicyID, provided PolicyID is still at
// BaseVersion.
type Proposal struct {
	PolicyID    string   `json:"policyId"`
	BaseVersion uint64   `json:"baseVersion"`
	RuleIDs     []string `json:"ruleIds"`
	// DecisionID is the verdict the exception was learned from.
	DecisionID string `json:"decisionId"`
	// Exception is the CEL condition excepted from the rules.
	Exception string `json:"exception"`
}

// Record is a policy's state as stored on CONTROL: each change is a new
// version (the stream sequence).
type Record struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Doc       Document  `json:"doc"`
	Status    string    `json:"status"`
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	By        string    `json:"by,omitempty"`
	// Proposal is set on drafts (Status draft).
	Proposal *Proposal `json:"proposal,omitempty"`
}

// OrgRecord is a tenant's org policy as stored on CONTROL.
type OrgRecord struct {
	Tenant    string    `json:"tenant"`
	Org       OrgPolicy `json:"org"`
	UpdatedAt time.Time `json:"updatedAt"`
	By        string    `json:"by,omitempty"`
}

// Triage statuses (Kaizen).
const (
	TriageAcknowledged  = "acknowledged"
	TriageResolved      = "resolved"
	TriageFalsePositive = "false_positive"
)

// Triage is a human's verdict on a decision. A false positive silences
// later warn decisions with the same signature (see Decision.Suppressible);
// it never lifts a block or require_approval.
type Triage struct {
	Tenant     string    `json:"tenant"`
	DecisionID string    `json:"decisionId"`
	Status     string    `json:"status"`
	Signature  string    `json:"signature"`
	At         time.Time `json:"at"`
	By         string    `json:"by,omitempty"`
}

// Decision sources: which front door asked.
const (
	SourceDecision = "decision" // KLA POST /v1/decisions.evaluate
	SourceCheck    = "check"    // Kaplaix POST /v1/policies/check
	SourceVerdict  = "verdict"  // Kaizen POST /v1/verdicts
	SourceEvent    = "event"    // an ingested event
)

// ReasonSuppressed marks a decision downgraded by a false-positive triage.
const ReasonSuppressed = "FALSE_POSITIVE_SUPPRESSED"

// Suppressible reports whether a false-positive triage may silence d.
// Triage tunes findings: only a warn (a manifest finding or a warn rule)
// is silenced. A block or require_approval comes from a rule, the org
// policy or the agent's settings, and only a change to those lifts it:
// anyone allowed to triage could otherwise turn a person's rule off.
func (d Decision) Suppressible() bool { return d.Outcome == Warn }

// Suppress applies a false-positive triage to d when it is suppressible,
// and reports whether it did.
func (d *Decision) Suppress() bool {
	if !d.Suppressible() {
		return false
	}
	d.Outcome, d.ReasonCodes = Allow, []string{ReasonSuppressed}
	return true
}

// EvaluateRequest is the RPC request to the policy service.
type EvaluateRequest struct {
	Tenant    string         `json:"tenant"`
	Principal Principal      `json:"principal"`
	AgentID   string         `json:"agentId"`
	SessionID string         `json:"sessionId,omitempty"`
	Action    Action         `json:"action"`
	Context   map[string]any `json:"context,omitempty"`
	Source    string         `json:"source"`
	// EventID links an event verdict to its event.
	EventID string `json:"eventId,omitempty"`
	// ControlSeq is the CONTROL sequence the asker has seen (every policy,
	// org policy and agent change it acknowledged); the policy service
	// decides only once its own view has caught up to it.
	ControlSeq uint64 `json:"controlSeq,omitempty"`
}

// DecisionRecord is a decision as recorded on the POLICY stream and
// returned to the caller.
type DecisionRecord struct {
	ID        string    `json:"decisionId"`
	Tenant    string    `json:"tenant"`
	AgentID   string    `json:"agentId"`
	SessionID string    `json:"sessionId,omitempty"`
	Source    string    `json:"source"`
	EventID   string    `json:"eventId,omitempty"`
	Input     Input     `json:"input"`
	Decision  Decision  `json:"result"`
	Signature string    `json:"signature"`
	At        time.Time `json:"at"`
	// PackSignature and KeyID let an auditor check the pack was the
	// deployment's.
	PackSignature string `json:"packSignature,omitempty"`
	KeyID         string `json:"keyId,omitempty"`
	// StreamSeq is the record's POLICY sequence, set only on the answer to
	// a decision request (the stored record is written before it is
	// known): the api's consistency token for the decision.
	StreamSeq uint64 `json:"streamSeq,omitempty"`
}

// RejectedRequest is a decision request refused, before anything was
// decided, because its context violated a declared input of a policy
// that applies to its action. It is recorded on POLICY for the audit log;
// the values themselves are not (they may hold personal data), only
// which fields were wrong and how.
type RejectedRequest struct {
	ID        string              `json:"id"`
	Op        string              `json:"op"` // always "rejected"
	Tenant    string              `json:"tenant"`
	AgentID   string              `json:"agentId,omitempty"`
	SessionID string              `json:"sessionId,omitempty"`
	Source    string              `json:"source"`
	Tool      string              `json:"tool,omitempty"`
	By        string              `json:"by"`
	Reason    string              `json:"reason"`
	Fields    []apperr.FieldError `json:"violations"`
	PackHash  string              `json:"packHash"`
	At        time.Time           `json:"at"`
}

// NewDecisionID returns a fresh decision id.
func NewDecisionID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "dec_" + hex.EncodeToString(b[:])
}

// Signature identifies "the same thing happening again" for false-positive
// suppression: agent, action kind, tool, destination host and the reason
// codes it drew.
func Signature(agentID string, a Action, reasons []string) string {
	h := sha256.New()
	for _, s := range []string{agentID, a.Kind, a.Tool, a.Host(), strings.Join(reasons, ",")} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "sig_" + hex.EncodeToString(h.Sum(nil)[:12])
}
