CREATE MATERIALIZED VIEW IF NOT EXISTS risk_mv_actions_day TO risk_metrics AS
SELECT tenant_id, 'day' AS grain, toUInt32(intDiv(at_ms, 86400000)) AS bucket, 'actions' AS metric, uniqExactState(decision_id) AS ids
FROM decisions
WHERE source != 'baseline'
GROUP BY tenant_id, grain, bucket, metric
