CREATE MATERIALIZED VIEW IF NOT EXISTS risk_mv_actions_hour TO risk_metrics AS
SELECT tenant_id, 'hour' AS grain, toUInt32(intDiv(at_ms, 3600000)) AS bucket, 'actions' AS metric, uniqExactState(decision_id) AS ids
FROM decisions
WHERE source != 'baseline'
GROUP BY tenant_id, grain, bucket, metric
