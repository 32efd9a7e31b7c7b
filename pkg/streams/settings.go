package streams

// Tenant settings on CONTROL, owned by services/api: PII redaction and the
// LLM judge's configuration. One subject per tenant each, so the last
// message is the setting in force.
const (
	// RedactionChanged carries a tenant's redaction settings (payload:
	// redact.Record).
	RedactionChanged = "redaction_changed"
	// LLMConfigChanged carries a tenant's LLM judge configuration with the
	// API key sealed (payload: judge.ConfigRecord).
	LLMConfigChanged = "llm_config_changed"
	// AllRedactionChanges filters every tenant's redaction settings.
	AllRedactionChanges = "control.v1." + RedactionChanged + ".>"
	// AllLLMConfigChanges filters every tenant's judge configuration.
	AllLLMConfigChanges = "control.v1." + LLMConfigChanged + ".>"
	// RegistryChanged carries a tenant's agent-registry settings
	// (payload: agent.RegistrySettings): whether the decision doors
	// register an agent they have never seen instead of refusing it.
	RegistryChanged = "registry_changed"
)

// RegistrySubject holds a tenant's agent-registry settings history.
func RegistrySubject(tenant string) string {
	return subject("control", RegistryChanged, tenant, "registry")
}

// RedactionSubject holds a tenant's redaction settings history.
func RedactionSubject(tenant string) string {
	return subject("control", RedactionChanged, tenant, "redaction")
}

// LLMConfigSubject holds a tenant's judge configuration history.
func LLMConfigSubject(tenant string) string {
	return subject("control", LLMConfigChanged, tenant, "llm")
}

// Judge facts on POLICY, owned by services/policy.
const (
	// VerdictJudged amends a recorded decision with the LLM judge's
	// confidence and evidence (payload: judge.Judgement). One subject per
	// decision; the last message is the amendment in force.
	VerdictJudged = "verdict_judged"
	// JudgeUsed records the tokens one judge call consumed (payload:
	// judge.Usage), so the daily budget survives restarts and is shared
	// by every policy replica.
	JudgeUsed = "judge_used"
	// AllJudgeUsage filters every tenant's judge usage.
	AllJudgeUsage = "policy.v1." + JudgeUsed + ".>"
)

// JudgementSubject holds the judge's amendment of one decision.
func JudgementSubject(tenant, decisionID string) string {
	return subject("policy", VerdictJudged, tenant, decisionID)
}

// JudgeUsageSubject holds a tenant's judge usage records of one UTC day
// (YYYY-MM-DD).
func JudgeUsageSubject(tenant, day string) string {
	return subject("policy", JudgeUsed, tenant, day)
}
