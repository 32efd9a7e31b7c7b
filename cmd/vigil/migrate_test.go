package main

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/readmodel"
)

// TestMigrate applies every service's schema to an empty database, twice:
// the second run applies nothing, and every migration is recorded.
func TestMigrate(t *testing.T) {
	db := chtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	want := 0
	for service, fsys := range schemas {
		files, err := fs.Glob(fsys, "*.sql")
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no migrations (%v)", service, err)
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
	// The read-model declaration is exactly what the migrations create:
	// every table, with its columns in order, and nothing undeclared.
	rows, err := db.Conn.Query(ctx, "SELECT table, name FROM system.columns WHERE database = currentDatabase() AND table != 'schema_migrations'")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for rows.Next() {
		var table, column string
		if err := rows.Scan(&table, &column); err != nil {
			t.Fatal(err)
		}
		got[table] = append(got[table], column)
	}
	rows.Close()
	for table, cols := range got {
		decl, ok := readmodel.Lookup(table)
		switch {
		case !ok:
			t.Errorf("table %s is not declared in pkg/readmodel", table)
		case !slices.Equal(decl.Columns, cols):
			t.Errorf("table %s: declared columns %v, migrated %v", table, decl.Columns, cols)
		}
	}
	for _, decl := range readmodel.Tables {
		if _, ok := got[decl.Name]; !ok {
			t.Errorf("declared table %s is not migrated", decl.Name)
		}
	}
	t.Logf("%d migrations, %d tables", want, len(got))
}

// TestReadsAreDeclared: every table a service's code queries (FROM or
// JOIN), or its migrations build a view on, belongs to it or lists it as
// a reader in pkg/readmodel; so no service reads another's table behind
// the declaration's back.
func TestReadsAreDeclared(t *testing.T) {
	root := filepath.Join("..", "..")
	dirs := map[string]string{filepath.Join("cmd", "vigil"): readmodel.CLI}
	for _, s := range []string{"api", "guardian", "ingest", "ledger", "notifier", "policy", "risk"} {
		dirs[filepath.Join("services", s)] = s
	}
	ref := regexp.MustCompile(`(?i)\b(FROM|JOIN)\s+([a-z_]+)`)
	for dir, service := range dirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			migration := strings.Contains(path, string(filepath.Separator)+"migrations"+string(filepath.Separator))
			if strings.HasSuffix(path, "_test.go") || !(strings.HasSuffix(path, ".go") || migration && strings.HasSuffix(path, ".sql")) {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
				table, ok := readmodel.Lookup(m[2])
				if !ok || table.Owner == service {
					continue
				}
				readers, as := table.Readers, "Readers"
				if migration {
					readers, as = table.ViewedBy, "ViewedBy"
				}
				if !slices.Contains(readers, service) {
					t.Errorf("%s: %s reads %s (owned by %s) but is not in its %s", path, service, table.Name, table.Owner, as)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestWritesAreDeclared: services write ClickHouse tables only through
// their declarations in pkg/readmodel (a sink's Table, Table.Insert), so
// an insert's column list is the declared one, which TestMigrate holds to
// the migrated table; and a service names only tables it may write (the
// owner, or a declared Writer). An INSERT written out by hand would let
// the two drift apart, so none is allowed.
func TestWritesAreDeclared(t *testing.T) {
	root := filepath.Join("..", "..")
	dirs := map[string]string{filepath.Join("cmd", "vigil"): readmodel.CLI}
	for _, s := range []string{"api", "guardian", "ingest", "ledger", "notifier", "policy", "risk"} {
		dirs[filepath.Join("services", s)] = s
	}
	insert := regexp.MustCompile(`(?i)\bINSERT\s+INTO\b`)
	ref := regexp.MustCompile(`\breadmodel\.([A-Z][A-Za-z]*)\b`)
	for dir, service := range dirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if loc := insert.FindIndex(b); loc != nil {
				t.Errorf("%s: a hand-written INSERT (%q); write through the table's readmodel declaration", path, b[loc[0]:min(len(b), loc[1]+30)])
			}
			for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
				table, ok := readmodel.Lookup(snake(m[1]))
				if !ok {
					continue // a service name or a function, not a table
				}
				if !table.WrittenBy(service) {
					t.Errorf("%s: %s writes %s (owned by %s) but is not among its Writers", path, service, table.Name, table.Owner)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// snake is the table name of a readmodel variable: RiskMVActionsDay is
// risk_mv_actions_day.
func snake(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		upper := c >= 'A' && c <= 'Z'
		if upper && i > 0 {
			prevLower := r[i-1] >= 'a' && r[i-1] <= 'z'
			nextLower := i+1 < len(r) && r[i+1] >= 'a' && r[i+1] <= 'z'
			if prevLower || (nextLower && r[i-1] >= 'A' && r[i-1] <= 'Z') {
				b.WriteByte('_')
			}
		}
		b.WriteString(strings.ToLower(string(c)))
	}
	return b.String()
}

func TestSnake(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"Decisions", "decisions"}, {"RiskMVActionsDay", "risk_mv_actions_day"}, {"SessionsMV", "sessions_mv"}, {"AuditLog", "audit_log"},
	} {
		if got := snake(tt.in); got != tt.want {
			t.Errorf("snake(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
