package policy

import "time"

// KindMCPToolReview is the action kind of a request to approve MCP tool
// definitions (a new server's tool list, a new tool, a changed one). The
// MCP gateway (`vigil mcp-proxy`) asks for it; the engine always routes
// it to a person, and only an approved review can pin tools
// (POST /v1/mcp/pins). See docs/mcp.md.
const KindMCPToolReview = "mcp_tool_review"

// Reason codes of MCP tool pinning.
const (
	// ReasonToolNew: a tool the server did not have when its list was
	// approved (a rename is a removal plus a new tool).
	ReasonToolNew = "TOOL_NEW"
	// ReasonToolChanged: a pinned tool whose name, description or input
	// schema no longer hashes to its pin.
	ReasonToolChanged = "TOOL_CHANGED"
	// ReasonMCPServerQuarantined: a server none of whose tools is pinned
	// yet; its whole tool list waits for a person.
	ReasonMCPServerQuarantined = "MCP_SERVER_QUARANTINED"
)

// MCPReviewTimeout is how long a tool review waits for a person unless a
// rule sets a shorter approvalTimeout: tool lists are reviewed by people
// on their own time, and an unanswered review only keeps tools hidden.
const MCPReviewTimeout = 24 * time.Hour

// mcpReviewBuiltin makes every MCP tool review require approval. The
// reason code is the one the gateway gives in metadata.review when it is
// one of the pinning codes, TOOL_NEW otherwise; an expiry never approves.
func mcpReviewBuiltin(d *Decision, a Action) {
	code, _ := a.Metadata["review"].(string)
	switch code {
	case ReasonToolNew, ReasonToolChanged, ReasonMCPServerQuarantined:
	default:
		code = ReasonToolNew
	}
	d.Matches = append(d.Matches, Match{RuleID: "mcp.tool_review", Outcome: RequireApproval, ReasonCodes: []string{code},
		Message: "MCP tool definitions from " + a.Publisher + " wait for a person's approval before the gateway shows them"})
	d.ApprovalTimeout, d.OnExpiry = MCPReviewTimeout, "rejected"
}
