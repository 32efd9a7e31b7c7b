CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_mv TO sessions_agg AS
SELECT
    tenant_id,
    session_id,
    anyState(agent_id) AS agent_id,
    minState(source_ms) AS first_ms,
    maxState(source_ms) AS last_ms,
    uniqExactState(event_id) AS event_ids
FROM events
GROUP BY tenant_id, session_id
