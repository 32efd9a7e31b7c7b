package policy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Policy statuses.
const (
	StatusActive   = "active"
	StatusArchived = "archived"
)

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

// Triage is a human's verdict on a decision. A false positive suppresses
// later decisions with the same signature.
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
