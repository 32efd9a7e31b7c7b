CREATE MATERIALIZED VIEW IF NOT EXISTS risk_mv_reviews_hour TO risk_metrics AS
SELECT tenant_id, 'hour' AS grain, toUInt32(intDiv(at_ms, 3600000)) AS bucket, 'reviews' AS metric, uniqExactState(review_id) AS ids
FROM risk_reviews

GROUP BY tenant_id, grain, bucket, metric
