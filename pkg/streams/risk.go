package streams

import "github.com/nats-io/nats.go/jetstream"

// Risk stream and its subjects, owned by services/risk.
//
// Both records are JSON objects that carry at least these fields, which
// the notifier relies on: "id" (unique, stable across redelivery),
// "tenant", "agentId", "sessionId", "severity" (info | low | medium | high
// | critical), "summary" and "occurredAt" (RFC 3339); a session score also
// carries "score" (0–100).
const (
	Risk = "RISK"
	// AnomalyDetected is an anomaly the risk service raised.
	AnomalyDetected = "anomaly_detected"
	// SessionScored is a session's risk score after it changed.
	SessionScored = "session_scored"
	// AllAnomalies filters every anomaly of every tenant.
	AllAnomalies = "risk.v1." + AnomalyDetected + ".>"
	// AllSessionScores filters every session score of every tenant.
	AllSessionScores = "risk.v1." + SessionScored + ".>"
)

// AnomalySubject is where an anomaly about agentID is recorded.
func AnomalySubject(tenant, agentID string) string {
	return subject("risk", AnomalyDetected, tenant, agentID)
}

// SessionScoreSubject holds a session's score history; its last message
// is the session's current score.
func SessionScoreSubject(tenant, sessionID string) string {
	return subject("risk", SessionScored, tenant, sessionID)
}

// RiskConfig defines the RISK stream, owned by services/risk.
func RiskConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Risk, "Anomalies and session risk scores", "risk")
	sc.MaxAge = o.IngestMaxAge
	sc.AllowDirect = true
	return sc
}
