CREATE TABLE IF NOT EXISTS sessions_agg (
    tenant_id String,
    session_id String,
    agent_id AggregateFunction(any, String),
    first_ms AggregateFunction(min, Int64),
    last_ms AggregateFunction(max, Int64),
    event_ids AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
ORDER BY (tenant_id, session_id)
