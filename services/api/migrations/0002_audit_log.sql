CREATE TABLE IF NOT EXISTS audit_log (
    tenant_id String,
    at_ms Int64,
    stream String,
    seq UInt64,
    subject String,
    entity_type String,
    entity_id String,
    action String,
    actor String,
    after String
) ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, at_ms, stream, seq)
