CREATE TABLE IF NOT EXISTS risk_session_scores (
    tenant_id String,
    session_id String,
    agent_id String,
    score UInt8,
    severity String,
    version UInt64,
    score_id String,
    at_ms Int64,
    record String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, session_id)
