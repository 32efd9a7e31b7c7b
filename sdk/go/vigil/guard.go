package vigil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Outcome is a policy decision's outcome.
type Outcome string

// The outcomes, in precedence order.
const (
	Allow           Outcome = "allow"
	Warn            Outcome = "warn"
	RequireApproval Outcome = "require_approval"
	Block           Outcome = "block"
)

// Action is what an agent is about to do.
type Action struct {
	// Tool is the tool (or action) name the policies match, e.g.
	// "execute_refund".
	Tool string
	// Kind is the action kind (default "tool_call"); Target a URL,
	// host[:port] or path, when the action reaches one.
	Kind, Target string
	// Arguments are the tool's arguments. An approval is for exactly
	// these: Guard redeems it with them.
	Arguments map[string]any
	// Context is what the policies read besides the action (amounts,
	// tickets…).
	Context map[string]any
	// AgentID defaults to the client's agent; SessionID to the context's
	// (ContextWithSession).
	AgentID, SessionID string
}

// Decision is Vigil's answer to an Action.
type Decision struct {
	ID               string   `json:"decisionId"`
	Outcome          Outcome  `json:"decision"`
	ReasonCodes      []string `json:"reasonCodes"`
	RequiresApproval bool     `json:"requiresDeskApproval"`
	PackHash         string   `json:"packHash"`
	// Approval is how a require_approval ended: "approved" or
	// "rejected" ("" for other outcomes, or while pending).
	Approval string `json:"-"`
	// Redeemed says the approval was redeemed for the arguments.
	Redeemed bool `json:"-"`
	// FailedOpen says Vigil was not asked: the breaker was open and the
	// call site chose FailOpen. Outcome is empty then.
	FailedOpen bool `json:"-"`
}

// CallOption adjusts one Guard, Ask or GuardFunc call site.
type CallOption func(*callConfig)

type callConfig struct{ onOpen BreakerMode }

// OnBreakerOpen says what this call site does while the breaker is open:
// FailClosed (refuse with ErrBreakerOpen) or FailOpen (proceed, marked
// FailedOpen).
func OnBreakerOpen(m BreakerMode) CallOption { return func(c *callConfig) { c.onOpen = m } }

type sessionKey struct{}

// ContextWithSession makes sessionID the session of the Actions and Events
// of ctx that name none.
func ContextWithSession(ctx context.Context, sessionID string) context.Context {
	return context.WithValue(ctx, sessionKey{}, sessionID)
}

func sessionOf(ctx context.Context) string {
	s, _ := ctx.Value(sessionKey{}).(string)
	return s
}

// Guard asks Vigil whether the action may run and returns nil only if it
// may: allow and warn at once; require_approval once a person approved
// and the approval was redeemed for a.Arguments. Otherwise the error is a
// *BlockedError, an *ApprovalError, a *RedeemError, ErrBreakerOpen, an
// *UnavailableError or an *APIError, and the action must not run. The
// Decision is returned with the error when there is one.
func (c *Client) Guard(ctx context.Context, a Action, opts ...CallOption) (*Decision, error) {
	d, err := c.Ask(ctx, a, opts...)
	if err != nil || d.Outcome != RequireApproval {
		return d, err
	}
	return d, c.Redeem(ctx, d, a.Arguments)
}

// Ask is Guard without the redemption: for a require_approval it returns
// once the approval is granted, and the caller must Redeem it with the
// arguments it is about to run, just before running them.
func (c *Client) Ask(ctx context.Context, a Action, opts ...CallOption) (*Decision, error) {
	cc := callConfig{onOpen: c.onOpen}
	for _, o := range opts {
		o(&cc)
	}
	if a.Tool == "" {
		return nil, errors.New("vigil: Action.Tool is required")
	}
	body := map[string]any{"action": actionBody(a)}
	if agent := first(a.AgentID, c.agent); agent != "" {
		body["agentId"] = agent
	}
	if s := first(a.SessionID, sessionOf(ctx)); s != "" {
		body["sessionId"] = s
	}
	if a.Context != nil {
		body["context"] = a.Context
	}
	d := &Decision{}
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/decisions.evaluate", body: body, idemKey: newID()}, d)
	if errors.Is(err, ErrBreakerOpen) && cc.onOpen == FailOpen {
		return &Decision{FailedOpen: true}, nil
	}
	if err != nil {
		return nil, err
	}
	switch d.Outcome {
	case Allow, Warn:
		return d, nil
	case Block:
		return d, &BlockedError{Decision: d}
	case RequireApproval:
		return d, c.await(ctx, d)
	}
	// An outcome this SDK does not know is not a permission.
	return d, fmt.Errorf("vigil: decision %s has unknown outcome %q", d.ID, d.Outcome)
}

func actionBody(a Action) map[string]any {
	act := map[string]any{"kind": first(a.Kind, "tool_call"), "tool": a.Tool}
	if a.Target != "" {
		act["target"] = a.Target
	}
	if a.Arguments != nil {
		act["arguments"] = a.Arguments
	}
	return act
}

// longPoll is the most one GET waits (Vigil allows 60 s; 30 s keeps the
// request well inside common proxy idle timeouts).
const longPoll = 30 * time.Second

// await long-polls the decision until a person decided or the client's
// approval timeout passed.
func (c *Client) await(ctx context.Context, d *Decision) error {
	deadline := time.Now().Add(c.approve)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return &ApprovalError{Decision: d, Status: "timeout"}
		}
		wait := min(left, longPoll).Round(time.Millisecond)
		var st struct {
			Final   bool   `json:"final"`
			Outcome string `json:"outcome"`
		}
		err := c.call(ctx, request{method: http.MethodGet, path: "/v1/decisions/" + url.PathEscape(d.ID) + "?wait=" + wait.String(), wait: wait}, &st)
		if err != nil {
			return err
		}
		if !st.Final {
			continue
		}
		d.Approval = st.Outcome
		if st.Outcome != "approved" {
			return &ApprovalError{Decision: d, Status: first(st.Outcome, "rejected")}
		}
		return nil
	}
}

// Redeem uses an approved decision for the arguments about to run, once:
// Vigil compares their digest with the approved arguments'. It is a no-op
// for allow and warn (and for a FailedOpen decision). Refusals are
// *RedeemError (ErrArgumentsMismatch, ErrAlreadyRedeemed, ErrNotApproved).
func (c *Client) Redeem(ctx context.Context, d *Decision, arguments map[string]any) error {
	if d == nil {
		return errors.New("vigil: Redeem of a nil decision")
	}
	if d.FailedOpen || d.Outcome == Allow || d.Outcome == Warn {
		return nil
	}
	if d.Outcome != RequireApproval {
		return &RedeemError{Decision: d, Code: "not_approved"}
	}
	args := any(arguments)
	if arguments == nil {
		args = map[string]any{}
	}
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/decisions/" + url.PathEscape(d.ID) + "/redeem", body: map[string]any{"arguments": args}, idemKey: newID()}, nil)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusConflict {
		return &RedeemError{Decision: d, Code: ae.Detail, Err: ae}
	}
	if err != nil {
		return err
	}
	d.Redeemed = true
	return nil
}

// GuardFunc wraps a tool function: each call is guarded as the action
// tool with the call's arguments (args encoded as a JSON object) and fn
// runs only if Guard lets it. The wrapper returns Guard's error otherwise.
func GuardFunc[A, R any](c *Client, tool string, fn func(context.Context, A) (R, error), opts ...CallOption) func(context.Context, A) (R, error) {
	return func(ctx context.Context, args A) (R, error) {
		var zero R
		m, err := argumentsOf(args)
		if err != nil {
			return zero, err
		}
		if _, err := c.Guard(ctx, Action{Tool: tool, Arguments: m}, opts...); err != nil {
			return zero, err
		}
		return fn(ctx, args)
	}
}

// argumentsOf is args as the JSON object Vigil digests.
func argumentsOf(args any) (map[string]any, error) {
	if m, ok := args.(map[string]any); ok {
		return m, nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("vigil: encode the tool arguments: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("vigil: the tool arguments must encode as a JSON object: %w", err)
	}
	return m, nil
}

func first(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
