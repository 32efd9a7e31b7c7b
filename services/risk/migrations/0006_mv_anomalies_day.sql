CREATE MATERIALIZED VIEW IF NOT EXISTS risk_mv_anomalies_day TO risk_metrics AS
SELECT tenant_id, 'day' AS grain, toUInt32(intDiv(at_ms, 86400000)) AS bucket, 'anomalies' AS metric, uniqExactState(anomaly_id) AS ids
FROM risk_anomalies

GROUP BY tenant_id, grain, bucket, metric
