package main

import (
	"context"
	"io/fs"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/chtest"
)

// TestMigrate applies every service's schema to an empty database, twice:
// the second run applies nothing, and every migration is recorded.
func TestMigrate(t *testing.T) {
	db := chtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := 0
	for _, s := range schemas {
		files, err := fs.Glob(s.fs, "*.sql")
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no migrations (%v)", s.service, err)
		}
		want += len(files)
	}
	for run := range 2 {
		if err := runMigrate(ctx, []string{"--clickhouse-dsn", db.DSN, "--log-level", "error"}); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	if n := chCount(t, db, "SELECT count() FROM schema_migrations"); n != uint64(want) {
		t.Errorf("schema_migrations records %d migrations, the services ship %d", n, want)
	}
	tables := chCount(t, db, "SELECT count() FROM system.tables WHERE database = currentDatabase()")
	for _, table := range []string{"events", "agents", "audit_log", "decisions"} {
		if n := chCount(t, db, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table); n != 1 {
			t.Errorf("table %s missing after migrate", table)
		}
	}
	if tables < 8 {
		t.Errorf("only %d tables after migrate", tables)
	}
	t.Logf("%d migrations, %d tables", want, tables)
}
