package mcpgate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	rules "github.com/vigilhq/vigil/pkg/policy"
)

// maxReportedJSON bounds the arguments and the result an event carries
// (an event payload is at most 64 KiB); larger ones are reported by size.
const maxReportedJSON = 24 << 10

// holdBack answers a tools/call of a tool the server has but the client
// must not use (new, changed, quarantined, or unreadable pins) with an
// error result naming why, without asking the server. Every other request
// passes on.
func (g *Gateway) holdBack(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		r, ok := req.(*mcp.CallToolRequest)
		if !ok || method != "tools/call" || r.Params == nil {
			return next(ctx, method, req)
		}
		g.mu.Lock()
		t := g.tools[r.Params.Name]
		var held string
		if t != nil {
			held = t.held
		}
		g.mu.Unlock()
		if held == "" {
			return next(ctx, method, req)
		}
		msg := "the tool's definition is not approved in Vigil; a person must approve it in the Decision Desk"
		if held == ReasonVigilUnavailable {
			msg = "Vigil could not be asked whether this tool's definition is approved"
		}
		g.rep.report(ctx, CategoryToolCall, g.callPayload(r.Params.Name, t.hash, r.Params.Arguments, map[string]any{
			"outcome": "refused", "reasonCodes": []string{held},
		}))
		return refusal("", []string{held}, msg), nil
	}
}

// handler serves tools/call of a visible tool pinned at hash.
func (g *Gateway) handler(name, hash string) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return g.call(ctx, name, hash, req.Params.Arguments)
	}
}

// call decides, then calls the server and redacts the result.
func (g *Gateway) call(ctx context.Context, name, hash string, raw json.RawMessage) (*mcp.CallToolResult, error) {
	start := time.Now()
	refuse := func(decisionID string, codes []string, msg string) (*mcp.CallToolResult, error) {
		g.rep.report(ctx, CategoryToolCall, g.callPayload(name, hash, raw, map[string]any{
			"outcome": "refused", "decisionId": decisionID, "reasonCodes": codes, "message": msg,
		}))
		return refusal(decisionID, codes, msg), nil
	}
	var args map[string]any
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &args); err != nil {
			return refuse("", []string{ReasonInvalidArguments}, "tool arguments must be a JSON object")
		}
	}
	act := rules.Action{Kind: "tool_call", Tool: name, Publisher: g.cfg.Server, Arguments: args,
		Metadata: map[string]any{"mcp": map[string]any{"toolHash": hash}}}
	d, err := g.v.evaluate(ctx, act, g.cfg.SessionID, "")
	if err != nil {
		return refuse("", []string{ReasonVigilUnavailable}, "Vigil did not decide on this call, so it is refused: "+err.Error())
	}
	switch d.Decision {
	case rules.Allow.String(), rules.Warn.String():
	case rules.RequireApproval.String():
		wctx, cancel := context.WithTimeout(ctx, g.cfg.ApprovalWait)
		f, err := g.v.await(wctx, d.DecisionID)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return refuse(d.DecisionID, append([]string{ReasonApprovalTimeout}, d.ReasonCodes...), "nobody approved this call in time")
		case err != nil:
			return refuse(d.DecisionID, append([]string{ReasonVigilUnavailable}, d.ReasonCodes...), "the approval could not be read: "+err.Error())
		case f.Outcome != "approved":
			return refuse(d.DecisionID, append([]string{ReasonApprovalRejected}, d.ReasonCodes...), "a person did not approve this call ("+f.Outcome+")")
		}
	default:
		return refuse(d.DecisionID, d.ReasonCodes, "Vigil blocked this call")
	}
	// The tool may have changed while a person decided.
	g.mu.Lock()
	t := g.tools[name]
	current := t != nil && t.held == "" && t.hash == hash
	g.mu.Unlock()
	if !current {
		return refuse(d.DecisionID, []string{rules.ReasonToolChanged}, "the tool's definition changed while the call waited")
	}
	g.rep.report(ctx, CategoryToolCall, g.callPayload(name, hash, raw, map[string]any{
		"outcome": "called", "decisionId": d.DecisionID, "decision": d.Decision, "reasonCodes": d.ReasonCodes,
	}))
	params := &mcp.CallToolParams{Name: name}
	if args != nil {
		params.Arguments = raw
	}
	res, err := g.up.CallTool(ctx, params)
	if err != nil {
		g.rep.report(ctx, CategoryToolResult, map[string]any{
			"server": g.cfg.Server, "tool": name, "decisionId": d.DecisionID, "error": err.Error(), "durationMs": time.Since(start).Milliseconds(),
		})
		return nil, err
	}
	red, n, err := g.redact(res)
	if err != nil {
		return refuse(d.DecisionID, []string{ReasonRedactionFailed}, "the result could not be redacted, so it is withheld")
	}
	p := map[string]any{
		"server": g.cfg.Server, "tool": name, "decisionId": d.DecisionID, "isError": red.IsError,
		"redactions": n, "durationMs": time.Since(start).Milliseconds(),
	}
	if b, err := json.Marshal(red); err == nil && len(b) <= maxReportedJSON {
		p["result"] = json.RawMessage(b)
	} else {
		p["resultBytes"] = len(b)
	}
	g.rep.report(ctx, CategoryToolResult, p)
	return red, nil
}

// redact passes a result through Vigil's redaction (pkg/redact): every
// string in it, text content and structured content alike.
func (g *Gateway) redact(res *mcp.CallToolResult) (*mcp.CallToolResult, int, error) {
	b, err := json.Marshal(res)
	if err != nil {
		return nil, 0, fmt.Errorf("encode result: %w", err)
	}
	out, n, err := g.cfg.Redaction.JSON(g.cfg.Tenant, b)
	if err != nil {
		return nil, 0, fmt.Errorf("redact result: %w", err)
	}
	if n == 0 {
		return res, 0, nil
	}
	var red mcp.CallToolResult
	if err := json.Unmarshal(out, &red); err != nil {
		return nil, 0, fmt.Errorf("decode redacted result: %w", err)
	}
	return &red, n, nil
}

// callPayload is a tools/call event's payload.
func (g *Gateway) callPayload(name, hash string, raw json.RawMessage, extra map[string]any) map[string]any {
	p := map[string]any{"server": g.cfg.Server, "tool": name, "toolHash": hash}
	switch {
	case len(raw) == 0:
	case len(raw) <= maxReportedJSON && json.Valid(raw):
		p["arguments"] = raw
	default:
		p["argumentsBytes"] = len(raw)
	}
	for k, v := range extra {
		if v != "" && v != nil {
			p[k] = v
		}
	}
	return p
}

// refusal is the error result the client gets for a refused call: the
// reason codes in the text (what the model reads) and in _meta.vigil.
func refusal(decisionID string, codes []string, msg string) *mcp.CallToolResult {
	text := fmt.Sprintf("Vigil refused this tool call [%s]: %s", strings.Join(codes, ", "), msg)
	meta := map[string]any{"reasonCodes": codes}
	if decisionID != "" {
		text += " (decision " + decisionID + ")"
		meta["decisionId"] = decisionID
	}
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: text}}, Meta: mcp.Meta{"vigil": meta}}
}
