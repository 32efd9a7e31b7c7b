package streams

// Organisation state on CONTROL, owned by services/api.
const (
	// MemberChanged carries a console member's full state after a change
	// (payload: auth.Member); one subject per member.
	MemberChanged = "member_changed"
	// LimitsChanged carries a tenant's rate limits (payload:
	// ratelimit.Limits); the last message is in force.
	LimitsChanged = "limits_changed"
)

// MemberSubject holds a member's state history; members are keyed by
// their (lower-cased) email.
func MemberSubject(tenant, email string) string {
	return subject("control", MemberChanged, tenant, email)
}

// LimitsSubject holds a tenant's rate-limit history.
func LimitsSubject(tenant string) string { return subject("control", LimitsChanged, tenant, "limits") }

// Halts (kill switches) on CONTROL, owned by services/api.
const (
	// HaltChanged carries a halt's full state when it is raised and when
	// it is lifted (payload: policy.Halt); one subject per halt.
	HaltChanged = "halt_changed"
	// AllHaltChanges filters every halt change of every tenant.
	AllHaltChanges = "control.v1." + HaltChanged + ".>"
)

// HaltSubject holds a halt's history: raised, then perhaps resumed.
func HaltSubject(tenant, id string) string { return subject("control", HaltChanged, tenant, id) }

// MCP tool pins on CONTROL, owned by services/api.
const (
	// MCPPinsChanged carries the approved tools of one MCP server of a
	// tenant after each approval (payload: mcppin.ServerPins); one
	// subject per server, the last message in force.
	MCPPinsChanged = "mcp_pins_changed"
)

// MCPPinsSubject holds the history of a server's pinned tools.
func MCPPinsSubject(tenant, server string) string {
	return subject("control", MCPPinsChanged, tenant, server)
}
