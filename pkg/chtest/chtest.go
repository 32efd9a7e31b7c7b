// Package chtest gives each test its own database on a real ClickHouse
// server. The server is found through VIGIL_TEST_CLICKHOUSE_DSN (default
// clickhouse://127.0.0.1:9000); when none answers the test fails, unless
// VIGIL_TEST_SKIP_CLICKHOUSE=1 asks for a skip, because a storage test
// that silently does not run proves nothing.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chx"
)

// DSN returns the server DSN tests use, without a database.
func DSN() string {
	if d := os.Getenv("VIGIL_TEST_CLICKHOUSE_DSN"); d != "" {
		return strings.TrimRight(d, "/")
	}
	return "clickhouse://127.0.0.1:9000"
}

// DB is a fresh database for one test.
type DB struct {
	Conn driver.Conn
	Name string
	// DSN points at the database, for code under test that opens its own
	// connection.
	DSN string
}

// New creates a uniquely named database, dropped when the test passes and
// kept for inspection when it fails.
func New(t testing.TB) *DB {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "vigil_test_" + hex.EncodeToString(b[:])
	dsn := DSN() + "/" + name
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := chx.Open(ctx, dsn)
	if err != nil {
		if os.Getenv("VIGIL_TEST_SKIP_CLICKHOUSE") == "1" {
			t.Skipf("clickhouse unavailable: %v", err)
		}
		t.Fatalf("clickhouse unavailable (start it with `make clickhouse`): %v", err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
		} else {
			t.Logf("kept clickhouse database %s for inspection", name)
		}
		_ = conn.Close()
	})
	return &DB{Conn: conn, Name: name, DSN: dsn}
}
