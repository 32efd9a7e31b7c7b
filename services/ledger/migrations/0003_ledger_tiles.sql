CREATE TABLE IF NOT EXISTS ledger_tiles (
    tenant_id String,
    level UInt8,
    idx UInt64,
    hashes String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, level, idx)
SETTINGS index_granularity = 16
