CREATE TABLE IF NOT EXISTS risk_metrics (
    tenant_id String,
    grain String,
    bucket UInt32,
    metric String,
    ids AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
ORDER BY (tenant_id, grain, metric, bucket)
