CREATE MATERIALIZED VIEW IF NOT EXISTS risk_mv_reviews_day TO risk_metrics AS
SELECT tenant_id, 'day' AS grain, toUInt32(intDiv(at_ms, 86400000)) AS bucket, 'reviews' AS metric, uniqExactState(review_id) AS ids
FROM risk_reviews

GROUP BY tenant_id, grain, bucket, metric
