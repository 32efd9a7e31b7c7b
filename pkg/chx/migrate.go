package chx

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	component String,
	version String,
	applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY (component, version)`

// Migrate applies every *.sql file in fsys (sorted by name, one statement
// per file) that is not yet recorded for component in schema_migrations.
// Statements must be idempotent (IF NOT EXISTS), so two replicas racing to
// migrate, or a crash between a statement and its record, are harmless.
func Migrate(ctx context.Context, conn driver.Conn, fsys fs.FS, component string) ([]string, error) {
	if err := conn.Exec(ctx, migrationsTable); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	applied := map[string]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations FINAL WHERE component = ?", component)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan schema_migrations: %w", err)
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}

	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	var done []string
	for _, name := range names {
		version := strings.TrimSuffix(name, ".sql")
		if applied[version] {
			continue
		}
		stmt, err := fs.ReadFile(fsys, name)
		if err != nil {
			return done, fmt.Errorf("read migration %s: %w", name, err)
		}
		if err := conn.Exec(ctx, strings.TrimSpace(string(stmt))); err != nil {
			return done, fmt.Errorf("apply migration %s/%s: %w", component, name, err)
		}
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (component, version, applied_at)")
		if err != nil {
			return done, fmt.Errorf("record migration %s: %w", name, err)
		}
		if err := batch.Append(component, version, time.Now().UTC()); err != nil {
			_ = batch.Abort()
			return done, fmt.Errorf("record migration %s: %w", name, err)
		}
		if err := batch.Send(); err != nil {
			return done, fmt.Errorf("record migration %s: %w", name, err)
		}
		done = append(done, version)
	}
	return done, nil
}
