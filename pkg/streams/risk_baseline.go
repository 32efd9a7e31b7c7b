package streams

// Baseline resets, on the RISK stream (owned by services/risk). A reset
// is a fact rather than a state change in memory so that every risk
// instance, and every restart, forgets the same baseline at the same
// point of the decision history.
const (
	// BaselineReset is a request to forget an agent's learned baseline.
	BaselineReset = "baseline_reset"
	// AllBaselineResets filters every reset of every tenant.
	AllBaselineResets = "risk.v1." + BaselineReset + ".>"
	// RiskRPCPrefix prefixes the risk service's per-partition
	// request/reply subjects (rpc.risk.v1.<verb>.<partitions>.<index>).
	RiskRPCPrefix = "rpc.risk.v1."
)

// BaselineResetSubject is where a reset of agentID's baseline is recorded.
func BaselineResetSubject(tenant, agentID string) string {
	return subject("risk", BaselineReset, tenant, agentID)
}
