package chx_test

import (
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// clusterMigrations has every form of statement Vigil's migrations use,
// and a summing view whose totals would show a row aggregated twice.
var clusterMigrations = fstest.MapFS{
	"0001_events.sql": sqlFile(`CREATE TABLE IF NOT EXISTS events (
		tenant_id String, event_id String, source_time DateTime, seq UInt64
	) ENGINE = ReplacingMergeTree(seq)
	PARTITION BY toYYYYMM(source_time)
	ORDER BY (tenant_id, event_id)`),
	"0002_totals.sql": sqlFile(`CREATE TABLE IF NOT EXISTS totals (tenant_id String, n UInt64)
	ENGINE = SummingMergeTree ORDER BY tenant_id`),
	"0003_totals_mv.sql": sqlFile(`CREATE MATERIALIZED VIEW IF NOT EXISTS totals_mv TO totals AS
	SELECT tenant_id, count() AS n FROM events GROUP BY tenant_id`),
	"0004_sessions.sql": sqlFile(`CREATE TABLE IF NOT EXISTS sessions (tenant_id String, ids AggregateFunction(uniqExact, String))
	ENGINE = AggregatingMergeTree() ORDER BY tenant_id SETTINGS index_granularity = 16`),
	"0005_sessions_mv.sql": sqlFile(`CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_mv TO sessions AS
	SELECT tenant_id, uniqExactState(event_id) AS ids FROM events GROUP BY tenant_id`),
	"0006_events_redactions.sql": sqlFile(`ALTER TABLE events ADD COLUMN redactions UInt32 DEFAULT 0`),
}

// TestMigrateOnCluster: on a cluster of two replicas, migrations create
// replicated tables under Distributed ones on both; rows inserted
// through one replica are read through the other, each aggregated once by
// the views; the added column reaches the Distributed table; and running
// the migrations again, through either replica, changes nothing.
func TestMigrateOnCluster(t *testing.T) {
	c := chtest.StartCluster(t, 2)
	db := c.NewDB()
	a, b := c.Open(t, db, 0), c.Open(t, db, 1)
	if chx.Cluster(a) != c.Name {
		t.Fatalf("Cluster(conn) = %q", chx.Cluster(a))
	}
	ctx := testCtx(t)
	applied, err := chx.Migrate(ctx, a, clusterMigrations, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(clusterMigrations) {
		t.Fatalf("applied %v", applied)
	}

	want := map[string]string{
		"events": "Distributed", "events_local": "ReplicatedReplacingMergeTree",
		"totals": "Distributed", "totals_local": "ReplicatedSummingMergeTree", "totals_mv": "MaterializedView",
		"sessions": "Distributed", "sessions_local": "ReplicatedAggregatingMergeTree", "sessions_mv": "MaterializedView",
		"schema_migrations": "Distributed", "schema_migrations_local": "ReplicatedReplacingMergeTree",
	}
	for name, conn := range map[string]driver.Conn{"a": a, "b": b} {
		rows, err := conn.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", db)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var n, e string
			if err := rows.Scan(&n, &e); err != nil {
				t.Fatal(err)
			}
			got[n] = e
		}
		rows.Close()
		for tbl, engine := range want {
			if got[tbl] != engine {
				t.Errorf("replica %s: table %s has engine %q, want %q (tables: %v)", name, tbl, got[tbl], engine, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("replica %s has tables %v, want %v", name, got, want)
		}
		for _, tbl := range []string{"events", "events_local"} {
			var n uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = 'redactions'", db, tbl).Scan(&n); err != nil || n != 1 {
				t.Errorf("replica %s: %s has no redactions column (%v)", name, tbl, err)
			}
		}
	}

	// Two inserts through a, one through b, all through the Distributed
	// tables.
	const perInsert = 50
	now := time.Now().Truncate(time.Second)
	for i, conn := range []driver.Conn{a, a, b} {
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO events (tenant_id, event_id, source_time, seq, redactions)")
		if err != nil {
			t.Fatal(err)
		}
		for j := range perInsert {
			if err := batch.Append("t1", fmt.Sprintf("%d-%d", i, j), now, uint64(j), uint32(0)); err != nil {
				t.Fatal(err)
			}
		}
		if err := batch.Send(); err != nil {
			t.Fatal(err)
		}
	}
	const total = 3 * perInsert
	// Each replica holds every row (read from its own replicated table),
	// and the views aggregated each row once.
	for name, conn := range map[string]driver.Conn{"a": a, "b": b} {
		testkit.EventuallyWithin(t, time.Minute, "replica "+name+" to hold every row once", func() (bool, string) {
			var events, local, summed, distinct uint64
			err := conn.QueryRow(ctx, `SELECT
				(SELECT count() FROM events FINAL),
				(SELECT count() FROM events_local),
				(SELECT sum(n) FROM totals_local),
				(SELECT uniqExactMerge(ids) FROM sessions_local)`).Scan(&events, &local, &summed, &distinct)
			state := fmt.Sprintf("events %d, local %d, totals %d, sessions %d, want %d (%v)", events, local, summed, distinct, total, err)
			return err == nil && events == total && local == total && summed == total && distinct == total, state
		})
	}

	// Again, through either replica: nothing to apply, and statements
	// applied anew (another component) change nothing.
	for name, conn := range map[string]driver.Conn{"a": a, "b": b} {
		if again, err := chx.Migrate(ctx, conn, clusterMigrations, "test"); err != nil || len(again) != 0 {
			t.Errorf("migrating again through %s: applied %v, %v", name, again, err)
		}
		if again, err := chx.Migrate(ctx, conn, clusterMigrations, "test-"+name); err != nil || len(again) != len(clusterMigrations) {
			t.Errorf("re-applying every statement through %s: applied %v, %v", name, again, err)
		}
	}
	var n uint64
	if err := b.QueryRow(ctx, "SELECT count() FROM events FINAL").Scan(&n); err != nil || n != total {
		t.Errorf("after migrating again: %d events (%v), want %d", n, err, total)
	}
}
