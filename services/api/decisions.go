package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// decide asks the policy service. Any failure to get an answer is a 503:
// the caller must not proceed as if allowed. The request carries this
// call's deadline, and the policy service records nothing once it has
// passed, so the 503's "no decision was made" holds.
func (s *Service) decide(ctx context.Context, req rules.EvaluateRequest) (rules.DecisionRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DecisionTimeout)
	defer cancel()
	rec, err := rules.EvaluateEndpoint.CallLocal(ctx, s.deps.Local, s.deps.NC, req)
	if err == nil {
		consistency.Note(ctx, streams.Policy, rec.StreamSeq)
	}
	return rec, err
}

// decisionBody is the union of the three doors' request bodies.
type decisionBody struct {
	AgentID   string          `json:"agentId"`
	Agent     string          `json:"agent"`
	SessionID string          `json:"sessionId"`
	Action    json.RawMessage `json:"action"`
	Context   map[string]any  `json:"context"`
	// Kaplaix check attributes.
	ToolType      string         `json:"toolType"`
	Operation     string         `json:"operation"`
	TargetSystem  string         `json:"targetSystem"`
	InitiatorType string         `json:"initiatorType"`
	ToolName      string         `json:"toolName"`
	Parameters    map[string]any `json:"parameters"`
	// Kaizen action fields at top level.
	Kind      string         `json:"kind"`
	Tool      string         `json:"tool"`
	Target    string         `json:"target"`
	Publisher string         `json:"publisher"`
	Metadata  map[string]any `json:"metadata"`
	Arguments map[string]any `json:"arguments"`
}

func (s *Service) readDecisionBody(c echo.Context) (decisionBody, error) {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return decisionBody{}, err
	}
	var b decisionBody
	if err := json.Unmarshal(body, &b); err != nil {
		return b, apperr.Validation("body is not valid JSON for this endpoint", apperr.FieldError{Path: "", Code: "invalid_type", Message: err.Error()})
	}
	// Every place the request names an agent is checked against an agent
	// key's binding, not only the one that wins.
	b.AgentID, err = httpkit.Principal(c).AgentFor(b.AgentID, b.Agent, c.Request().Header.Get("X-Agent-Id"))
	return b, err
}

// action reads "action" as a name (KLA) or an object (Kaizen shape).
func (b decisionBody) action() (rules.Action, error) {
	a := rules.Action{Kind: b.Kind, Tool: b.Tool, Target: b.Target, Publisher: b.Publisher, Metadata: b.Metadata, Arguments: b.Arguments,
		ToolType: b.ToolType, Operation: b.Operation, TargetSystem: b.TargetSystem, InitiatorType: b.InitiatorType}
	if len(b.Action) > 0 && string(b.Action) != "null" {
		var name string
		if json.Unmarshal(b.Action, &name) == nil {
			a.Tool = name
		} else if err := json.Unmarshal(b.Action, &a); err != nil {
			return a, apperr.Validation("action must be a name or an object", apperr.FieldError{Path: "action", Code: "invalid_type", Message: "action must be a string or an object"})
		}
	}
	if a.Tool == "" {
		a.Tool = b.ToolName
	}
	if a.Kind == "" {
		a.Kind = "tool_call"
	}
	if len(a.Tool) > 256 || len(a.Target) > 2048 {
		return a, apperr.Validation("action is too large", apperr.FieldError{Path: "action", Code: "too_long", Message: "tool must be at most 256 bytes and target at most 2048"})
	}
	return a, nil
}

func (s *Service) request(c echo.Context, b decisionBody, a rules.Action, source string, requireAgent bool) (rules.EvaluateRequest, error) {
	var errs []apperr.FieldError
	if b.AgentID == "" && requireAgent {
		errs = append(errs, apperr.FieldError{Path: "agentId", Code: event.CodeRequired, Message: "agentId is required"})
	} else if b.AgentID != "" && !event.ValidID(b.AgentID, event.MaxAgentIDLen) {
		errs = append(errs, apperr.FieldError{Path: "agentId", Code: event.CodeInvalid, Message: "agentId must be 1-128 letters, digits or ._:@+=-"})
	}
	if b.SessionID != "" && !event.ValidID(b.SessionID, event.MaxSessionIDLen) {
		errs = append(errs, apperr.FieldError{Path: "sessionId", Code: event.CodeInvalid, Message: "sessionId is not valid"})
	}
	if len(errs) > 0 {
		return rules.EvaluateRequest{}, apperr.Validation("decision request failed validation", errs...)
	}
	p := httpkit.Principal(c)
	ctx := b.Context
	if ctx == nil {
		ctx = b.Parameters
	}
	return rules.EvaluateRequest{
		Tenant: p.Tenant, Principal: rules.Principal{KeyID: p.KeyID, Role: string(p.Role), Actor: p.Actor()},
		AgentID: b.AgentID, SessionID: b.SessionID, Action: a, Context: ctx, Source: source,
		ControlSeq: s.deps.Catalog.Applied(),
	}, nil
}

// KLADecision is the response of POST /v1/decisions.evaluate.
type KLADecision struct {
	Decision             string        `json:"decision"`
	ReasonCodes          []string      `json:"reasonCodes"`
	RequiresDeskApproval bool          `json:"requiresDeskApproval"`
	DecisionID           string        `json:"decisionId"`
	PackHash             string        `json:"packHash"`
	Matches              []rules.Match `json:"matches"`
	ApprovalTimeoutSec   int           `json:"approvalTimeoutSeconds,omitempty"`
	EvaluatedAt          time.Time     `json:"evaluatedAt"`
}

func (s *Service) evaluateDecision(c echo.Context) error {
	rec, err := s.decideDoor(c, rules.SourceDecision, true, func(a rules.Action) error {
		if a.Tool == "" && a.ToolType == "" && a.Target == "" {
			return apperr.Validation("action is required", apperr.FieldError{Path: "action", Code: event.CodeRequired, Message: "action is required"})
		}
		return nil
	})
	if err != nil {
		return err
	}
	d := rec.Decision
	return c.JSON(http.StatusOK, KLADecision{
		Decision: d.Outcome.String(), ReasonCodes: d.ReasonCodes, RequiresDeskApproval: d.Outcome == rules.RequireApproval,
		DecisionID: rec.ID, PackHash: d.PackHash, Matches: d.Matches, ApprovalTimeoutSec: int(d.ApprovalTimeout.Seconds()), EvaluatedAt: rec.At,
	})
}

// decideDoor is what the three front doors share: read the body, build
// the action, let the door's check refuse it (check may be nil), and ask
// the policy service, which records the decision before answering.
func (s *Service) decideDoor(c echo.Context, source string, requireAgent bool, check func(rules.Action) error) (rules.DecisionRecord, error) {
	// A caller waits on this: the fan-out of earlier decisions gives way.
	defer s.deps.Gate.Foreground()()
	b, err := s.readDecisionBody(c)
	if err != nil {
		return rules.DecisionRecord{}, err
	}
	a, err := b.action()
	if err != nil {
		return rules.DecisionRecord{}, err
	}
	if check != nil {
		if err := check(a); err != nil {
			return rules.DecisionRecord{}, err
		}
	}
	req, err := s.request(c, b, a, source, requireAgent)
	if err != nil {
		return rules.DecisionRecord{}, err
	}
	if source == rules.SourceDecision {
		// KLA evaluates registered agents only: an unknown agentId is 404.
		// Kaplaix's check and Kaizen's verdicts name agents that their
		// events register, and work before they have (docs/api.md).
		if err := s.knownAgent(c.Request().Context(), httpkit.Principal(c), req.AgentID); err != nil {
			return rules.DecisionRecord{}, err
		}
		req.ControlSeq = s.deps.Catalog.Applied()
	}
	return s.decide(c.Request().Context(), req)
}

// kaplaixDecision names an outcome the Kaplaix way.
func kaplaixDecision(o rules.Outcome) string {
	switch o {
	case rules.Block:
		return "denied"
	case rules.RequireApproval:
		return "requires_review"
	}
	return "allowed"
}

// CheckResult is the response of POST /v1/policies/check.
type CheckResult struct {
	Decision         string        `json:"decision"`
	Outcome          string        `json:"outcome"`
	Allowed          bool          `json:"allowed"`
	RequiresApproval bool          `json:"requiresApproval"`
	ReasonCodes      []string      `json:"reasonCodes"`
	MatchedPolicies  []rules.Match `json:"matchedPolicies"`
	DecisionID       string        `json:"decisionId"`
	PackHash         string        `json:"packHash"`
}

func (s *Service) checkPolicy(c echo.Context) error {
	rec, err := s.decideDoor(c, rules.SourceCheck, false, nil)
	if err != nil {
		return err
	}
	d := rec.Decision
	return c.JSON(http.StatusOK, CheckResult{
		Decision: kaplaixDecision(d.Outcome), Outcome: d.Outcome.String(), Allowed: d.Outcome <= rules.Warn,
		RequiresApproval: d.Outcome == rules.RequireApproval, ReasonCodes: d.ReasonCodes, MatchedPolicies: d.Matches,
		DecisionID: rec.ID, PackHash: d.PackHash,
	})
}

// Verdict is Kaizen's verdict shape plus Vigil's explanation.
type Verdict struct {
	ID          string        `json:"id"`
	DecisionID  string        `json:"decisionId"`
	Decision    string        `json:"decision"` // allow | block
	Outcome     string        `json:"outcome"`
	Reason      string        `json:"reason"`
	ReasonCodes []string      `json:"reasonCodes"`
	Evidence    []rules.Match `json:"evidence"`
	Confidence  *float64      `json:"confidence"`
	Agent       string        `json:"agent"`
	// SessionID is the session the decision was made in (empty for a
	// door that was given none): a Vigil addition, so a verdict list can
	// link each verdict to its session.
	SessionID string       `json:"sessionId,omitempty"`
	Action    rules.Action `json:"action"`
	Source    string       `json:"source"`
	Status    string       `json:"status"`
	PackHash  string       `json:"packHash"`
	CreatedAt time.Time    `json:"createdAt"`
}

// Verdict statuses beyond the triage ones.
const statusOpen = "open"

func (s *Service) verdictOf(rec rules.DecisionRecord) Verdict {
	d := rec.Decision
	v := Verdict{
		ID: rec.ID, DecisionID: rec.ID, Decision: "allow", Outcome: d.Outcome.String(), ReasonCodes: d.ReasonCodes,
		Evidence: d.Matches, Agent: rec.AgentID, SessionID: rec.SessionID, Action: rec.Input.Action, Source: rec.Source, Status: statusOpen,
		PackHash: d.PackHash, CreatedAt: rec.At, Reason: "ok",
	}
	if v.Evidence == nil {
		v.Evidence = []rules.Match{}
	}
	// Kaizen knows only allow and block: anything that must not proceed
	// without a human is a block.
	if d.Outcome >= rules.RequireApproval {
		v.Decision = "block"
	}
	if d.Outcome > rules.Allow || d.ReasonCodes[0] != rules.ReasonDefaultAllow {
		v.Reason = strings.ToLower(d.ReasonCodes[0])
		for _, m := range d.Matches {
			if m.Outcome == d.Outcome && m.Message != "" {
				v.Reason = m.Message
				break
			}
		}
	}
	if t, ok := s.deps.Catalog.Triage(rec.Tenant, rec.ID); ok {
		v.Status = t.Status
	}
	s.amendVerdict(&v, rec)
	return v
}

func (s *Service) postVerdict(c echo.Context) error {
	rec, err := s.decideDoor(c, rules.SourceVerdict, false, func(a rules.Action) error {
		if a.Tool == "" && a.Target == "" {
			return apperr.Validation("action needs a tool or a target", apperr.FieldError{Path: "tool", Code: event.CodeRequired, Message: "tool or target is required"})
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, s.verdictOf(rec))
}

// getVerdict returns one verdict (read-your-writes, like
// GET /v1/decisions/:id, in Kaizen's verdict shape).
func (s *Service) getVerdict(c echo.Context) error {
	rec, err := s.decisionRecord(c, pathID(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.verdictOf(rec))
}

// decisionRecord reads a decision of the caller's tenant, read-your-writes
// (see decisionByID).
func (s *Service) decisionRecord(c echo.Context, id string) (rules.DecisionRecord, error) {
	ctx, cancel := queryContext(c, s.cfg.QueryTimeout)
	defer cancel()
	return s.decisionByID(ctx, httpkit.Principal(c).Tenant, id)
}

func (s *Service) listVerdicts(c echo.Context) error {
	limit, err := httpkit.Limit(c, 20, 100)
	if err != nil {
		return err
	}
	offset := 0
	if o := c.QueryParam("offset"); o != "" {
		if offset, err = strconv.Atoi(o); err != nil || offset < 0 || offset > 100000 {
			return apperr.Validation("offset is out of range", apperr.FieldError{Path: "offset", Code: "out_of_range", Message: "offset must be an integer from 0 to 100000"})
		}
	}
	tenant := httpkit.Principal(c).Tenant
	q := "SELECT record FROM decisions WHERE tenant_id = ?"
	args := []any{tenant}
	if a := c.QueryParam("agent"); a != "" {
		q += " AND agent_id = ?"
		args = append(args, a)
	}
	if sid := c.QueryParam("session"); sid != "" {
		// One session's decisions (the console's session timeline).
		if len(sid) > 256 {
			return apperr.Validation("session is too long", apperr.FieldError{Path: "session", Code: "too_long", Message: "session must be at most 256 bytes"})
		}
		q += " AND session_id = ?"
		args = append(args, sid)
	}
	if src := c.QueryParam("source"); src != "" {
		// Vigil's origin (decision, check, verdict, event, baseline) or the
		// observation source the reporter gave in the action's
		// metadata.source (Kaizen's "egress", …): either matches.
		if len(src) > 64 {
			return apperr.Validation("source is too long", apperr.FieldError{Path: "source", Code: "too_long", Message: "source must be at most 64 bytes"})
		}
		q += " AND (source = ? OR observed_source = ?)"
		args = append(args, src, src)
	}
	switch d := c.QueryParam("decision"); d {
	case "":
	case "allow":
		q += " AND outcome IN ('allow', 'warn')"
	case "block":
		q += " AND outcome IN ('require_approval', 'block')"
	case "warn", "require_approval":
		q += " AND outcome = ?"
		args = append(args, d)
	default:
		return apperr.Validation("decision is not valid", apperr.FieldError{Path: "decision", Code: "invalid_format", Message: "decision must be allow, warn, require_approval or block"})
	}
	if term := c.QueryParam("q"); term != "" {
		if len(term) > 200 {
			return apperr.Validation("q is too long", apperr.FieldError{Path: "q", Code: "too_long", Message: "q must be at most 200 bytes"})
		}
		q += " AND (positionCaseInsensitive(tool, ?) > 0 OR positionCaseInsensitive(target, ?) > 0 OR positionCaseInsensitive(agent_id, ?) > 0 OR positionCaseInsensitive(arrayStringConcat(reason_codes, ','), ?) > 0)"
		args = append(args, term, term, term, term)
	}
	since := time.Now().Add(-30 * 24 * time.Hour)
	if sv := c.QueryParam("since"); sv != "" {
		if d, err := time.ParseDuration(sv); err == nil && d > 0 {
			since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339Nano, sv); err == nil {
			since = t
		} else {
			return apperr.Validation("since is not valid", apperr.FieldError{Path: "since", Code: "invalid_format", Message: "since must be an RFC 3339 time or a duration such as 24h"})
		}
	}
	q += " AND at_time >= ?"
	args = append(args, since.UTC().Truncate(time.Second))
	if st := c.QueryParam("status"); st != "" {
		ids, open, err := s.triageFilter(tenant, st)
		if err != nil {
			return err
		}
		if open {
			if len(ids) > 0 {
				q += " AND NOT has(?, decision_id)"
				args = append(args, ids)
			}
		} else {
			if len(ids) == 0 {
				return c.JSON(http.StatusOK, VerdictPage{Data: []Verdict{}, Limit: limit, Offset: offset})
			}
			q += " AND has(?, decision_id)"
			args = append(args, ids)
		}
	}
	// "LIMIT offset, n": ClickHouse 18.16 has no OFFSET keyword.
	q += fmt.Sprintf(" ORDER BY at_time DESC, at_ms DESC, decision_id DESC LIMIT 1 BY decision_id LIMIT %d, %d", offset, limit+1)
	ctx, cancel := queryContext(c, s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.deps.CH.Query(ctx, q, args...)
	if err != nil {
		return chx.ReadError("decision store", err)
	}
	defer rows.Close()
	page := VerdictPage{Data: []Verdict{}, Limit: limit, Offset: offset}
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return fmt.Errorf("scan verdict: %w", err)
		}
		var rec rules.DecisionRecord
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return fmt.Errorf("decode verdict: %w", err)
		}
		page.Data = append(page.Data, s.verdictOf(rec))
	}
	if err := rows.Err(); err != nil {
		return chx.ReadError("decision store", err)
	}
	if len(page.Data) > limit {
		page.Data, page.HasMore = page.Data[:limit], true
	}
	return c.JSON(http.StatusOK, page)
}

// VerdictPage is Kaizen's offset pagination.
type VerdictPage struct {
	Data    []Verdict `json:"data"`
	Limit   int       `json:"limit"`
	Offset  int       `json:"offset"`
	HasMore bool      `json:"hasMore"`
}

// triageFilter turns a status filter into decision ids: for "open" the
// ids to exclude (every triaged one), otherwise the ids to include.
func (s *Service) triageFilter(tenant, status string) (ids []string, open bool, err error) {
	switch status {
	case statusOpen, rules.TriageAcknowledged, rules.TriageResolved, rules.TriageFalsePositive:
	default:
		return nil, false, apperr.Validation("status is not valid", apperr.FieldError{Path: "status", Code: "invalid_format", Message: "status must be open, acknowledged, resolved or false_positive"})
	}
	for _, t := range s.deps.Catalog.Triages(tenant) {
		if status == statusOpen || t.Status == status {
			ids = append(ids, t.DecisionID)
		}
	}
	return ids, status == statusOpen, nil
}

func (s *Service) triageVerdict(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	var in struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return apperr.Validation("body must be {\"status\": …}", apperr.FieldError{Path: "status", Code: "invalid_type", Message: "expected a JSON object with status"})
	}
	switch in.Status {
	case rules.TriageAcknowledged, rules.TriageResolved, rules.TriageFalsePositive:
	default:
		return apperr.Validation("status is not valid", apperr.FieldError{Path: "status", Code: "invalid_format", Message: "status must be acknowledged, resolved or false_positive"})
	}
	rec, err := s.decisionRecord(c, pathID(c))
	if err != nil {
		return err
	}
	p := httpkit.Principal(c)
	t := rules.Triage{Tenant: p.Tenant, DecisionID: rec.ID, Status: in.Status, Signature: rec.Signature, At: time.Now().UTC(), By: p.Actor()}
	seq, err := s.deps.Store.PutTriage(c.Request().Context(), t)
	if err != nil {
		return err
	}
	if err := s.deps.Catalog.WaitFor(c.Request().Context(), seq); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.verdictOf(rec))
}

func queryContext(c echo.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	return chx.QueryContext(c.Request().Context(), timeout)
}
