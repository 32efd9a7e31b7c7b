CREATE TABLE IF NOT EXISTS decisions (
    tenant_id String,
    decision_id String,
    agent_id String,
    session_id String,
    source String,
    event_id String,
    outcome String,
    reason_codes Array(String),
    pack_hash String,
    action_kind String,
    tool String,
    target String,
    publisher String,
    signature String,
    at_time DateTime,
    at_ms Int64,
    record String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at_time)
ORDER BY (tenant_id, at_time, decision_id)
