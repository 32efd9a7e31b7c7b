CREATE TABLE IF NOT EXISTS ledger_leaves (
    tenant_id String,
    idx UInt64,
    record_key String,
    kind String,
    record_id String,
    session_id String,
    leaf_hash String,
    canonical String,
    stream String,
    stream_seq UInt64,
    integrated_ms Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, idx)
SETTINGS index_granularity = 256
