CREATE TABLE IF NOT EXISTS events (
    tenant_id String,
    event_id String,
    agent_id String,
    session_id String,
    category String,
    schema_version String,
    source_time DateTime,
    source_ms Int64,
    received_ms Int64,
    previous_hash String,
    tool_name String,
    response_status Int32,
    payload String,
    sdk String,
    framework String,
    agent_version String,
    key_id String,
    stream_seq UInt64
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(source_time)
ORDER BY (tenant_id, session_id, event_id)
