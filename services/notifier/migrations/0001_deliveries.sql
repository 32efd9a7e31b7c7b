CREATE TABLE IF NOT EXISTS deliveries (
    tenant_id String,
    channel_id String,
    delivery_id String,
    attempt_id String,
    attempt UInt32,
    replay UInt32,
    channel_type String,
    signal_id String,
    signal_type String,
    webhook_id String,
    status String,
    outcome String,
    status_code Int32,
    latency_ms Float64,
    error String,
    next_attempt_ms Int64,
    at_time DateTime,
    at_ms Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at_time)
ORDER BY (tenant_id, channel_id, at_time, attempt_id)
