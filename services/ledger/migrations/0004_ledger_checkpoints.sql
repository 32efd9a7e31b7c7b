CREATE TABLE IF NOT EXISTS ledger_checkpoints (
    tenant_id String,
    tree_size UInt64,
    root_hash String,
    note String,
    range_hashes String,
    at_ms Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, tree_size)
