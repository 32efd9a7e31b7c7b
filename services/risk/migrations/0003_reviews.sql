CREATE TABLE IF NOT EXISTS risk_reviews (
    tenant_id String,
    review_id String,
    decision_id String,
    status String,
    at_time DateTime,
    at_ms Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at_time)
ORDER BY (tenant_id, at_time, review_id)
