package migrations_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/services/ingest/migrations"
)

// Every ingest migration survives being applied twice and a crash between
// applying one and recording it: without that, a replica that died in
// between (or two racing) would make every later start fail.
func TestMigrationsRepeatable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("migrations: %v %v", names, err)
	}
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			db := chtest.New(t)
			// The files before it are applied and recorded.
			before := fstest.MapFS{}
			for _, n := range names[:i] {
				b, _ := fs.ReadFile(migrations.FS, n)
				before[n] = &fstest.MapFile{Data: b}
			}
			if _, err := chx.Migrate(ctx, db.Conn, before, "ingest"); err != nil {
				t.Fatal(err)
			}
			// The crash: this one applied, not recorded.
			stmt, _ := fs.ReadFile(migrations.FS, name)
			if err := db.Conn.Exec(ctx, strings.TrimSpace(string(stmt))); err != nil {
				t.Fatalf("apply %s by hand: %v", name, err)
			}
			for run := 1; run <= 2; run++ {
				if _, err := chx.Migrate(ctx, db.Conn, migrations.FS, "ingest"); err != nil {
					t.Fatalf("start %d after the crash: %v", run, err)
				}
			}
		})
	}
}
