CREATE TABLE IF NOT EXISTS risk_anomalies (
    tenant_id String,
    anomaly_id String,
    agent_id String,
    session_id String,
    type String,
    value String,
    severity String,
    signature String,
    decision_id String,
    at_time DateTime,
    at_ms Int64,
    record String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at_time)
ORDER BY (tenant_id, at_time, anomaly_id)
