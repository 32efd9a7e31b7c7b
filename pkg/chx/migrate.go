package chx

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
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

// ErrNotIdempotent marks a migration the runner cannot apply twice safely.
var ErrNotIdempotent = errors.New("migration is not idempotent")

var (
	createRe    = regexp.MustCompile(`(?is)^CREATE\s+(TABLE|(MATERIALIZED\s+)?VIEW|DATABASE)\s+IF\s+NOT\s+EXISTS\s`)
	addColumnRe = regexp.MustCompile("(?is)^ALTER\\s+TABLE\\s+([`\\w.]+)\\s+ADD\\s+COLUMN\\s+(IF\\s+NOT\\s+EXISTS\\s+)?([`\\w]+)\\s+([^,;]+)$")
)

// Migrate applies every *.sql file in fsys (sorted by name, one statement
// per file) that is not yet recorded for component in schema_migrations.
// Every statement must be one the runner can apply twice: a CREATE … IF
// NOT EXISTS, or an ALTER TABLE … ADD COLUMN of one column, which the
// runner applies only if the column is missing (ClickHouse 18.16 has no ADD
// COLUMN IF NOT EXISTS; on current releases the check does the same). So
// two replicas racing to migrate, or a crash between a statement and its
// record, are harmless. Anything else fails with ErrNotIdempotent.
//
// On a connection OpenCluster opened for a cluster, every statement,
// schema_migrations' own included, is applied as ClusterDDL rewrites it.
func Migrate(ctx context.Context, conn driver.Conn, fsys fs.FS, component string) ([]string, error) {
	if err := apply(ctx, conn, migrationsTable); err != nil {
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
		if err := apply(ctx, conn, strings.TrimSpace(string(stmt))); err != nil {
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

// apply runs one migration statement so that running it again, or after
// another runner did, changes nothing and does not fail.
func apply(ctx context.Context, conn driver.Conn, stmt string) error {
	if cluster := Cluster(conn); cluster != "" {
		return migrateCluster(ctx, conn, cluster, stmt)
	}
	if createRe.MatchString(stmt) {
		return conn.Exec(ctx, stmt)
	}
	m := addColumnRe.FindStringSubmatch(stmt)
	if m == nil {
		return fmt.Errorf("%w: only CREATE … IF NOT EXISTS and ALTER TABLE … ADD COLUMN (one column) are allowed", ErrNotIdempotent)
	}
	table, column := strings.ReplaceAll(m[1], "`", ""), strings.ReplaceAll(m[3], "`", "")
	db := "currentDatabase()"
	args := []any{table, column}
	if d, t, ok := strings.Cut(table, "."); ok {
		db, args = "?", []any{d, t, column}
	}
	exists := func() (bool, error) {
		var n uint64
		q := "SELECT count() FROM system.columns WHERE database = " + db + " AND table = ? AND name = ?"
		if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			return false, fmt.Errorf("look up column %s.%s: %w", table, column, err)
		}
		return n > 0, nil
	}
	if ok, err := exists(); err != nil || ok {
		return err
	}
	// The IF NOT EXISTS that 18.16 would reject is dropped: the check above
	// is what makes the statement idempotent.
	err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", m[1], m[3], strings.TrimSpace(m[4])))
	if err != nil {
		// Another runner may have added it between the check and the
		// ALTER: that is success.
		if ok, cerr := exists(); cerr == nil && ok {
			return nil
		}
	}
	return err
}
