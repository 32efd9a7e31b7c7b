CREATE TABLE IF NOT EXISTS agents (
    tenant_id String,
    agent_id String,
    name String,
    description String,
    model String,
    tools Array(String),
    framework String,
    version String,
    owner String,
    environment String,
    status String,
    source String,
    manifest_hash String,
    registered_ms Int64,
    updated_ms Int64,
    revision UInt64,
    doc String
) ENGINE = ReplacingMergeTree(revision)
ORDER BY (tenant_id, agent_id)
