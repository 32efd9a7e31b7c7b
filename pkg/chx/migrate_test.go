package chx_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
)

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func sqlFile(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

// recorded returns the versions schema_migrations holds for component,
// sorted.
func recorded(t *testing.T, conn driver.Conn, component string) []string {
	t.Helper()
	rows, err := conn.Query(testCtx(t), "SELECT version FROM schema_migrations FINAL WHERE component = ? ORDER BY version", component)
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func columns(t *testing.T, db *chtest.DB, table string) []string {
	t.Helper()
	rows, err := db.Conn.Query(testCtx(t), "SELECT name FROM system.columns WHERE database = ? AND table = ? ORDER BY name", db.Name, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

func TestMigrateAppliesInOrderOnceAndOnlyNewFiles(t *testing.T) {
	db := chtest.New(t)
	ctx := testCtx(t)

	// 0002 and 0003 only succeed after 0001 (and 0003 after 0002), so an
	// out-of-order run fails.
	fsys := fstest.MapFS{
		"0003_add_b.sql":  sqlFile("ALTER TABLE things ADD COLUMN b String AFTER a"),
		"0001_create.sql": sqlFile("CREATE TABLE IF NOT EXISTS things (id String) ENGINE = MergeTree() ORDER BY id\n"),
		"0002_add_a.sql":  sqlFile("\n  ALTER TABLE things ADD COLUMN a UInt32 AFTER id\n\n"),
		"README.md":       sqlFile("not a migration"),
		"sub/0000.sql":    sqlFile("THIS IS NOT SQL"), // not at the top level: ignored
	}
	done, err := chx.Migrate(ctx, db.Conn, fsys, "things")
	if err != nil {
		t.Fatalf("first run: %v", err)
	}
	want := []string{"0001_create", "0002_add_a", "0003_add_b"}
	if !slices.Equal(done, want) {
		t.Fatalf("first run applied %v, want %v", done, want)
	}
	if got := recorded(t, db.Conn, "things"); !slices.Equal(got, want) {
		t.Fatalf("schema_migrations holds %v, want %v", got, want)
	}
	if got := columns(t, db, "things"); !slices.Equal(got, []string{"a", "b", "id"}) {
		t.Fatalf("columns %v", got)
	}

	// Idempotent: a second run applies nothing (0003 would fail if re-run,
	// since column b exists).
	done, err = chx.Migrate(ctx, db.Conn, fsys, "things")
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if len(done) != 0 {
		t.Fatalf("second run applied %v, want none", done)
	}

	// A later release adds a file: only it is applied.
	fsys["0004_add_c.sql"] = sqlFile("ALTER TABLE things ADD COLUMN c String")
	done, err = chx.Migrate(ctx, db.Conn, fsys, "things")
	if err != nil {
		t.Fatalf("third run: %v", err)
	}
	if !slices.Equal(done, []string{"0004_add_c"}) {
		t.Fatalf("third run applied %v, want [0004_add_c]", done)
	}
	if got := recorded(t, db.Conn, "things"); len(got) != 4 {
		t.Fatalf("schema_migrations holds %v", got)
	}

	// Components are tracked separately.
	other := fstest.MapFS{"0001_create.sql": sqlFile("CREATE TABLE IF NOT EXISTS others (id String) ENGINE = MergeTree() ORDER BY id")}
	done, err = chx.Migrate(ctx, db.Conn, other, "others")
	if err != nil || !slices.Equal(done, []string{"0001_create"}) {
		t.Fatalf("other component applied %v, %v", done, err)
	}
	if got := recorded(t, db.Conn, "things"); len(got) != 4 {
		t.Fatalf("things migrations changed to %v", got)
	}
}

func TestMigrateBadStatement(t *testing.T) {
	tests := []struct {
		name      string
		files     fstest.MapFS
		wantDone  []string
		wantInErr string
	}{
		{
			name: "syntax error after a good file",
			files: fstest.MapFS{
				"0001_ok.sql":  sqlFile("CREATE TABLE IF NOT EXISTS ok (id String) ENGINE = MergeTree() ORDER BY id"),
				"0002_bad.sql": sqlFile("CREATE TABLEX nope"),
				"0003_ok.sql":  sqlFile("CREATE TABLE IF NOT EXISTS later (id String) ENGINE = MergeTree() ORDER BY id"),
			},
			wantDone:  []string{"0001_ok"},
			wantInErr: "0002_bad",
		},
		{
			name: "unknown table",
			files: fstest.MapFS{
				"0001_alter.sql": sqlFile("ALTER TABLE missing ADD COLUMN x String"),
			},
			wantInErr: "0001_alter",
		},
		{
			name: "two statements in one file",
			files: fstest.MapFS{
				"0001_two.sql": sqlFile("CREATE TABLE IF NOT EXISTS a (id String) ENGINE = MergeTree() ORDER BY id; CREATE TABLE IF NOT EXISTS b (id String) ENGINE = MergeTree() ORDER BY id"),
			},
			wantInErr: "0001_two",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := chtest.New(t)
			ctx := testCtx(t)
			done, err := chx.Migrate(ctx, db.Conn, tt.files, "comp")
			if err == nil {
				t.Fatalf("Migrate succeeded, applied %v", done)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) || !strings.Contains(err.Error(), "comp") {
				t.Errorf("error %q does not name comp/%s", err, tt.wantInErr)
			}
			if !slices.Equal(done, tt.wantDone) {
				t.Errorf("applied %v, want %v", done, tt.wantDone)
			}
			if got := recorded(t, db.Conn, "comp"); !slices.Equal(got, tt.wantDone) {
				t.Errorf("schema_migrations holds %v, want %v (the failed file must not be recorded)", got, tt.wantDone)
			}
			// Files after the failing one are not attempted.
			if got := columns(t, db, "later"); len(got) != 0 {
				t.Errorf("a migration after the failing one ran: table later has %v", got)
			}
			// Running again fails the same way: the bad file was not
			// recorded as applied.
			if _, err := chx.Migrate(ctx, db.Conn, tt.files, "comp"); err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("second run: %v", err)
			}
		})
	}
}

func TestOpenCreatesMissingDatabase(t *testing.T) {
	ctx := testCtx(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "vigil_test_open_" + hex.EncodeToString(b[:])

	admin := chtest.New(t) // a connection for checking and cleaning up
	exists := func() bool {
		var n uint64
		if err := admin.Conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	if exists() {
		t.Fatalf("database %s exists before Open", name)
	}
	t.Cleanup(func() { _ = admin.Conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name) })

	conn, err := chx.Open(ctx, chtest.DSN()+"/"+name)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer conn.Close()
	if !exists() {
		t.Fatalf("Open did not create database %s", name)
	}
	var cur string
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&cur); err != nil {
		t.Fatal(err)
	}
	if cur != name {
		t.Fatalf("connection uses database %q, want %q", cur, name)
	}
	// Opening an existing database again works.
	again, err := chx.Open(ctx, chtest.DSN()+"/"+name)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	_ = again.Close()
}

func TestOpenRejectsBadInput(t *testing.T) {
	tests := []struct{ name, dsn, wantInErr string }{
		{"not a plain identifier", chtest.DSN() + "/bad-name", "not a plain identifier"},
		{"injection attempt", chtest.DSN() + "/x;DROP", "not a plain identifier"},
		{"unparseable dsn", "clickhouse://127.0.0.1:9000/db?dial_timeout=notaduration", "parse clickhouse dsn"},
		{"nothing listening", "clickhouse://127.0.0.1:1/default?dial_timeout=1s", "clickhouse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := chx.Open(testCtx(t), tt.dsn)
			if err == nil {
				_ = conn.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantInErr)
			}
		})
	}
}

// An ADD COLUMN is applied only when the column is missing, so the states
// a crash or a second runner leave behind do not stop later starts.
func TestMigrateAddColumnIdempotent(t *testing.T) {
	const create = "CREATE TABLE IF NOT EXISTS things (id String) ENGINE = MergeTree() ORDER BY id"
	tests := []struct {
		name  string
		alter string
		// before runs after 0001 is applied and recorded, before Migrate
		// sees 0002.
		before func(ctx context.Context, db *chtest.DB) error
	}{
		{
			name:  "crash between apply and record",
			alter: "ALTER TABLE things ADD COLUMN a UInt32 DEFAULT 0",
			before: func(ctx context.Context, db *chtest.DB) error {
				return db.Conn.Exec(ctx, "ALTER TABLE things ADD COLUMN a UInt32 DEFAULT 0")
			},
		},
		{
			name:  "IF NOT EXISTS, which 18.16 does not parse",
			alter: "ALTER TABLE things ADD COLUMN IF NOT EXISTS a UInt32 DEFAULT 0",
		},
		{
			name:  "qualified table name, column already there",
			alter: "ALTER TABLE {db}.things ADD COLUMN `a` UInt32 DEFAULT 0",
			before: func(ctx context.Context, db *chtest.DB) error {
				return db.Conn.Exec(ctx, "ALTER TABLE things ADD COLUMN a UInt32")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := chtest.New(t)
			ctx := testCtx(t)
			fsys := fstest.MapFS{"0001_create.sql": sqlFile(create)}
			if _, err := chx.Migrate(ctx, db.Conn, fsys, "things"); err != nil {
				t.Fatal(err)
			}
			if tt.before != nil {
				if err := tt.before(ctx, db); err != nil {
					t.Fatal(err)
				}
			}
			fsys["0002_add_a.sql"] = sqlFile(strings.ReplaceAll(tt.alter, "{db}", db.Name))
			for run := 1; run <= 2; run++ {
				if _, err := chx.Migrate(ctx, db.Conn, fsys, "things"); err != nil {
					t.Fatalf("run %d: %v", run, err)
				}
			}
			if got := columns(t, db, "things"); !slices.Equal(got, []string{"a", "id"}) {
				t.Fatalf("columns %v", got)
			}
			if got := recorded(t, db.Conn, "things"); !slices.Equal(got, []string{"0001_create", "0002_add_a"}) {
				t.Fatalf("schema_migrations holds %v", got)
			}
		})
	}
}

// Replicas starting together run the same migrations at the same time;
// every one of them must succeed.
func TestMigrateConcurrentRunners(t *testing.T) {
	db := chtest.New(t)
	ctx := testCtx(t)
	fsys := fstest.MapFS{
		"0001_create.sql": sqlFile("CREATE TABLE IF NOT EXISTS things (id String) ENGINE = MergeTree() ORDER BY id"),
		"0002_add_a.sql":  sqlFile("ALTER TABLE things ADD COLUMN a UInt32 DEFAULT 0"),
		"0003_add_b.sql":  sqlFile("ALTER TABLE things ADD COLUMN b String"),
	}
	const runners = 4
	errs := make(chan error, runners)
	for range runners {
		go func() {
			_, err := chx.Migrate(ctx, db.Conn, fsys, "things")
			errs <- err
		}()
	}
	for range runners {
		if err := <-errs; err != nil {
			t.Errorf("runner: %v", err)
		}
	}
	if got := columns(t, db, "things"); !slices.Equal(got, []string{"a", "b", "id"}) {
		t.Fatalf("columns %v", got)
	}
}

func TestMigrateRefusesStatementsItCannotRepeat(t *testing.T) {
	tests := []struct{ name, stmt string }{
		{"create without IF NOT EXISTS", "CREATE TABLE t (id String) ENGINE = MergeTree() ORDER BY id"},
		{"drop column", "ALTER TABLE t DROP COLUMN id"},
		{"two columns in one ADD", "ALTER TABLE t ADD COLUMN a String, ADD COLUMN b String"},
		{"insert", "INSERT INTO t (id) VALUES ('x')"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := chtest.New(t)
			_, err := chx.Migrate(testCtx(t), db.Conn, fstest.MapFS{"0001_x.sql": sqlFile(tt.stmt)}, "comp")
			if !errors.Is(err, chx.ErrNotIdempotent) {
				t.Fatalf("Migrate = %v, want ErrNotIdempotent", err)
			}
			if got := recorded(t, db.Conn, "comp"); len(got) != 0 {
				t.Fatalf("schema_migrations holds %v", got)
			}
		})
	}
}
