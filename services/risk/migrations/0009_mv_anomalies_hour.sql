CREATE MATERIALIZED VIEW IF NOT EXISTS risk_mv_anomalies_hour TO risk_metrics AS
SELECT tenant_id, 'hour' AS grain, toUInt32(intDiv(at_ms, 3600000)) AS bucket, 'anomalies' AS metric, uniqExactState(anomaly_id) AS ids
FROM risk_anomalies

GROUP BY tenant_id, grain, bucket, metric
