package policy

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Halt scopes: what a kill switch stops.
const (
	HaltTenant  = "tenant"
	HaltAgent   = "agent"
	HaltSession = "session"
)

// Halt operations, the audit log's action for each halt change.
const (
	HaltRaised  = "halted"
	HaltResumed = "resumed"
)

// ReasonHalted is the reason code of every decision an active halt blocks.
const ReasonHalted = "HALTED"

// Halt is a kill switch: while it is active every decision in its scope
// is block with HALTED. It is recorded on CONTROL when raised and again
// when lifted (the last message on its subject is its state).
type Halt struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Scope  string `json:"scope"`
	// AgentID is set for agent scope, and optionally narrows a session
	// halt to one agent's session.
	AgentID   string `json:"agentId,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
	Reason    string `json:"reason"`
	// Op is what this change did (halted or resumed); By who did it.
	Op        string     `json:"op"`
	By        string     `json:"by"`
	CreatedBy string     `json:"createdBy"`
	CreatedAt time.Time  `json:"createdAt"`
	EndedBy   string     `json:"endedBy,omitempty"`
	EndedAt   *time.Time `json:"endedAt,omitempty"`
	Active    bool       `json:"active"`
}

// Covers reports whether the halt stops a decision about agentID in
// sessionID. It says nothing of tenants: callers look up a tenant's halts.
func (h Halt) Covers(agentID, sessionID string) bool {
	if !h.Active {
		return false
	}
	switch h.Scope {
	case HaltTenant:
		return true
	case HaltAgent:
		return h.AgentID == agentID
	case HaltSession:
		return sessionID != "" && h.SessionID == sessionID && (h.AgentID == "" || h.AgentID == agentID)
	}
	// An unknown scope (a newer writer) stops everything: fail closed.
	return true
}

// HaltState is the halt a decision was made under, as its input records it.
type HaltState struct {
	ID     string `json:"id"`
	Scope  string `json:"scope"`
	Reason string `json:"reason"`
}

// State is what a decision records of the halt.
func (h Halt) State() *HaltState { return &HaltState{ID: h.ID, Scope: h.Scope, Reason: h.Reason} }

// NewHaltID returns a fresh halt id.
func NewHaltID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "halt_" + hex.EncodeToString(b[:])
}

// Bounds of the ids a halt names and of its reason.
const (
	maxHaltID     = 256
	maxHaltReason = 2000
)

// ValidateHalt checks a halt request and returns every problem at once.
func ValidateHalt(scope, agentID, sessionID, reason string) error {
	var bad []apperr.FieldError
	req := func(path, v string) {
		if v == "" {
			bad = append(bad, apperr.FieldError{Path: path, Code: "required", Message: path + " is required for scope " + scope})
		}
	}
	forbid := func(path, v string) {
		if v != "" {
			bad = append(bad, apperr.FieldError{Path: path, Code: "not_allowed", Message: path + " may not be set for scope " + scope})
		}
	}
	switch scope {
	case HaltTenant:
		forbid("agentId", agentID)
		forbid("sessionId", sessionID)
	case HaltAgent:
		req("agentId", agentID)
		forbid("sessionId", sessionID)
	case HaltSession:
		req("sessionId", sessionID)
	case "":
		bad = append(bad, apperr.FieldError{Path: "scope", Code: "required", Message: "scope is required: tenant, agent or session"})
	default:
		bad = append(bad, apperr.FieldError{Path: "scope", Code: "invalid_format", Message: "scope must be tenant, agent or session"})
	}
	for _, f := range []struct{ path, v string }{{"agentId", agentID}, {"sessionId", sessionID}} {
		if len(f.v) > maxHaltID {
			bad = append(bad, apperr.FieldError{Path: f.path, Code: "too_long", Message: f.path + " must be at most 256 bytes"})
		}
	}
	switch r := strings.TrimSpace(reason); {
	case r == "":
		bad = append(bad, apperr.FieldError{Path: "reason", Code: "required", Message: "reason is required: say why the fleet is stopped"})
	case len(reason) > maxHaltReason:
		bad = append(bad, apperr.FieldError{Path: "reason", Code: "too_long", Message: "reason must be at most 2000 bytes"})
	}
	if len(bad) > 0 {
		return apperr.Validation(bad[0].Message, bad...)
	}
	return nil
}
