CREATE TABLE IF NOT EXISTS ledger_lookup (
    tenant_id String,
    lookup_key String,
    idx UInt64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, lookup_key, idx)
