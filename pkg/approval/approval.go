// Package approval defines pending actions — require_approval decisions
// held for a person (the Decision Desk) — their state changes on the
// GUARDIAN stream, and Board, the in-memory view of that stream that
// answers reads and wakes long-polls the moment an action is decided.
package approval

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/policy"
)

// Status of a pending action.
type Status string

// Statuses; all but Pending are final.
const (
	Pending  Status = "pending"
	Approved Status = "approved"
	Rejected Status = "rejected"
	Expired  Status = "expired"
)

// Final reports whether no further change can happen.
func (s Status) Final() bool { return s != Pending }

// Change operations recorded on GUARDIAN (the signals the notifier and
// the audit log read): approval.requested, approval.resolved,
// approval.expired, approval.rerouted (an escalation too). A vote that
// leaves the action pending and a redemption are recorded, not signalled.
const (
	OpRequested = "requested"
	OpResolved  = "resolved"
	OpExpired   = "expired"
	OpRerouted  = "rerouted"
	OpVoted     = "voted"
	OpEscalated = "escalated"
	OpRedeemed  = "redeemed"
)

// DefaultTimeout applies when the rule gives no approvalTimeout.
const DefaultTimeout = policy.DefaultApprovalTimeout

// Action is a pending action's full state.
type Action struct {
	ID          string         `json:"id"`
	DecisionID  string         `json:"decisionId"`
	Tenant      string         `json:"tenant"`
	AgentID     string         `json:"agentId"`
	SessionID   string         `json:"sessionId,omitempty"`
	Action      policy.Action  `json:"action"`
	Context     map[string]any `json:"context"`
	ReasonCodes []string       `json:"reasonCodes"`
	Matches     []policy.Match `json:"matches"`
	PackHash    string         `json:"packHash"`
	// ArgsDigest is "sha256:" over the canonical JSON of the action and
	// its context: an SDK runs the action only if its own digest matches.
	ArgsDigest string `json:"argsDigest"`
	// ArgumentsDigest is "sha256:" over the canonical JSON of the tool
	// arguments alone: what POST /v1/decisions/:id/redeem compares.
	ArgumentsDigest string `json:"argumentsDigest"`
	// RequestedBy is the key or member that asked for the decision
	// ("key:<id>", "member:<email>"): it may never approve the action.
	RequestedBy string `json:"requestedBy,omitempty"`
	// Quorum are the approvals the matching rules require, all of them
	// (empty: one approval by anyone allowed to decide).
	Quorum []Requirement `json:"quorum,omitempty"`
	// Required is how many distinct people must approve, at least, and
	// Approvals the approvals received so far ("1 of 2").
	Required  int    `json:"required"`
	Approvals []Vote `json:"approvals"`
	// Redemption is set once an approved action was redeemed.
	Redemption *Redemption `json:"redemption,omitempty"`
	Priority   string      `json:"priority"`
	// ReviewerGroup routes the action to a group of reviewers.
	ReviewerGroup string    `json:"reviewerGroup"`
	CreatedAt     time.Time `json:"createdAt"`
	ExpiresAt     time.Time `json:"expiresAt"`
	// OnExpiry is the final outcome an expiry stands for: rejected
	// (the default) or approved.
	OnExpiry  Status     `json:"onExpiry"`
	Status    Status     `json:"status"`
	DecidedBy string     `json:"decidedBy,omitempty"`
	DecidedAt *time.Time `json:"decidedAt,omitempty"`
	Comment   string     `json:"comment,omitempty"`
	// Revision is the GUARDIAN stream sequence of this state.
	Revision uint64 `json:"revision"`
}

// Outcome is what the agent should do now: proceed only on "approved"
// (an expiry configured to approve counts as approved).
func (a Action) Outcome() Status {
	if a.Status == Expired {
		return a.OnExpiry
	}
	return a.Status
}

// Change is one GUARDIAN event: the operation and the state after it.
type Change struct {
	Op string `json:"op"`
	// By is who made the change (the audit log's actor): the person
	// deciding, the redeemer, guardian:expiry or guardian:escalation;
	// for a request, the one who asked.
	By     string    `json:"by,omitempty"`
	Action Action    `json:"action"`
	At     time.Time `json:"at"`
}

// IDFor derives the pending action id from its decision id, so intake of
// a redelivered decision cannot create a second pending action.
func IDFor(decisionID string) string { return "pa_" + strings.TrimPrefix(decisionID, "dec_") }

// Digest is "sha256:" over the canonical JSON (sorted keys) of the action
// and its context.
func Digest(a policy.Action, ctx map[string]any) string {
	b, _ := json.Marshal(struct {
		Action  policy.Action  `json:"action"`
		Context map[string]any `json:"context"`
	}{a, ctx})
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// FromDecision builds the pending action for a require_approval decision.
func FromDecision(rec policy.DecisionRecord) Action {
	timeout := rec.Decision.ApprovalTimeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	onExpiry := Rejected
	if rec.Decision.OnExpiry == string(Approved) {
		onExpiry = Approved
	}
	ctx := rec.Input.Context
	if ctx == nil {
		ctx = map[string]any{}
	}
	quorum := quorumFrom(rec.Decision.Approvals, rec.At)
	group := "default"
	if len(quorum) > 0 && len(quorum[0].Groups) > 0 {
		group = quorum[0].Groups[0]
	}
	return Action{
		ID: IDFor(rec.ID), DecisionID: rec.ID, Tenant: rec.Tenant, AgentID: rec.AgentID, SessionID: rec.SessionID,
		Action: rec.Input.Action, Context: ctx, ReasonCodes: rec.Decision.ReasonCodes, Matches: rec.Decision.Matches,
		PackHash: rec.Decision.PackHash, ArgsDigest: Digest(rec.Input.Action, ctx), ArgumentsDigest: ArgumentsDigest(rec.Input.Action.Arguments),
		RequestedBy: rec.Input.Principal.Requester(), Quorum: quorum, Required: required(quorum), Approvals: []Vote{}, Priority: "normal",
		ReviewerGroup: group, CreatedAt: rec.At, ExpiresAt: rec.At.Add(timeout), OnExpiry: onExpiry, Status: Pending,
	}
}

// DecideRequest is the RPC request to the guardian.
type DecideRequest struct {
	Tenant string `json:"tenant"`
	ID     string `json:"id"`
	// Decision is approve, reject or reroute.
	Decision      string `json:"decision"`
	Comment       string `json:"comment,omitempty"`
	ReviewerGroup string `json:"reviewerGroup,omitempty"`
	By            string `json:"by"`
	// Groups are the reviewer groups By belongs to (resolved by the api
	// from the member's record; none for API keys).
	Groups []string `json:"groups,omitempty"`
	// System marks a decision Vigil itself makes (a halt rejecting what
	// it stops): it may reject whatever the reviewer groups, never approve.
	System bool `json:"system,omitempty"`
}

// RedeemRequest is the RPC request that redeems an approved decision
// once, for the arguments whose digest is ArgumentsDigest.
type RedeemRequest struct {
	Tenant          string `json:"tenant"`
	DecisionID      string `json:"decisionId"`
	ArgumentsDigest string `json:"argumentsDigest"`
	By              string `json:"by"`
}
