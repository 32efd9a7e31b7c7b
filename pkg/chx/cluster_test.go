package chx_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/chx"
)

// TestClusterDDL: each form of migration statement is rewritten into the
// statements its cluster form needs, and anything the rewriting cannot
// make replicated is refused.
func TestClusterDDL(t *testing.T) {
	for _, tc := range []struct {
		name, stmt string
		want       []string
	}{
		{
			name: "engine without parentheses",
			stmt: "CREATE TABLE IF NOT EXISTS audit_log (\n  tenant_id String,\n  seq UInt64\n) ENGINE = ReplacingMergeTree\nORDER BY (tenant_id, seq)",
			want: []string{
				"CREATE TABLE IF NOT EXISTS db.audit_log_local ON CLUSTER c (\n  tenant_id String,\n  seq UInt64\n) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/audit_log_local', '{replica}')\nORDER BY (tenant_id, seq)",
				"CREATE TABLE IF NOT EXISTS db.audit_log ON CLUSTER c AS db.audit_log_local ENGINE = Distributed(c, db, audit_log_local)",
			},
		},
		{
			name: "version argument, partition, settings",
			stmt: "CREATE TABLE IF NOT EXISTS events (a String, v UInt64, t DateTime) ENGINE = ReplacingMergeTree(v)\nPARTITION BY toYYYYMM(t)\nORDER BY (a)\nSETTINGS index_granularity = 256",
			want: []string{
				"CREATE TABLE IF NOT EXISTS db.events_local ON CLUSTER c (a String, v UInt64, t DateTime) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/events_local', '{replica}', v)\nPARTITION BY toYYYYMM(t)\nORDER BY (a)\nSETTINGS index_granularity = 256",
				"CREATE TABLE IF NOT EXISTS db.events ON CLUSTER c AS db.events_local ENGINE = Distributed(c, db, events_local)",
			},
		},
		{
			name: "aggregate function columns and empty arguments",
			stmt: "CREATE TABLE IF NOT EXISTS agg (k String, n AggregateFunction(uniqExact, String)) ENGINE = AggregatingMergeTree() ORDER BY k",
			want: []string{
				"CREATE TABLE IF NOT EXISTS db.agg_local ON CLUSTER c (k String, n AggregateFunction(uniqExact, String)) ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/agg_local', '{replica}') ORDER BY k",
				"CREATE TABLE IF NOT EXISTS db.agg ON CLUSTER c AS db.agg_local ENGINE = Distributed(c, db, agg_local)",
			},
		},
		{
			name: "materialized view between local tables",
			stmt: "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO agg AS\nSELECT k, uniqExactState(id) AS n\nFROM events\nWHERE source != 'baseline'\nGROUP BY k",
			want: []string{
				"CREATE MATERIALIZED VIEW IF NOT EXISTS db.mv ON CLUSTER c TO db.agg_local AS SELECT k, uniqExactState(id) AS n\nFROM db.events_local\nWHERE source != 'baseline'\nGROUP BY k",
			},
		},
		{
			name: "add column to the local table",
			stmt: "ALTER TABLE events ADD COLUMN redactions UInt32 DEFAULT 0",
			want: []string{"ALTER TABLE db.events_local ON CLUSTER c ADD COLUMN redactions UInt32 DEFAULT 0"},
		},
		{
			name: "database",
			stmt: "CREATE DATABASE IF NOT EXISTS other",
			want: []string{"CREATE DATABASE IF NOT EXISTS other ON CLUSTER c"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chx.ClusterDDL(tc.stmt, "db", "c")
			if err != nil {
				t.Fatal(err)
			}
			var sqls []string
			for _, s := range got {
				sqls = append(sqls, s.SQL)
			}
			if strings.Join(sqls, "\n;\n") != strings.Join(tc.want, "\n;\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(sqls, "\n;\n"), strings.Join(tc.want, "\n;\n"))
			}
		})
	}

	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS t (a String) ENGINE = Memory",
		"CREATE TABLE IF NOT EXISTS t (a String) ENGINE = Log",
		"CREATE TABLE IF NOT EXISTS t (a String) ENGINE = ReplicatedMergeTree('/p', '{replica}') ORDER BY a",
		"CREATE TABLE IF NOT EXISTS t (d Date, a String) ENGINE = MergeTree(d, (a), 8192)",
		"CREATE TABLE IF NOT EXISTS other.t (a String) ENGINE = MergeTree ORDER BY a",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS mv ENGINE = MergeTree ORDER BY a AS SELECT a FROM t",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO agg AS SELECT a FROM t JOIN u USING a",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO agg AS SELECT a FROM (SELECT a FROM t)",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO agg AS SELECT a FROM t UNION ALL SELECT a FROM u",
		"CREATE VIEW IF NOT EXISTS v AS SELECT a FROM t",
		"ALTER TABLE other.events ADD COLUMN x UInt8",
		"DROP TABLE events",
		"",
	} {
		if got, err := chx.ClusterDDL(stmt, "db", "c"); !errors.Is(err, chx.ErrClusterDDL) {
			t.Errorf("%q: got %v, %v; want ErrClusterDDL", stmt, got, err)
		}
	}
	if _, err := chx.ClusterDDL("CREATE DATABASE IF NOT EXISTS x", "db", "c; DROP"); !errors.Is(err, chx.ErrClusterDDL) {
		t.Errorf("a cluster name that is no identifier: %v", err)
	}
}

// onCluster is what every rewritten statement must carry: ON CLUSTER and
// the database on every table it names.
var onClusterRe = regexp.MustCompile(`^(CREATE (TABLE|MATERIALIZED VIEW|DATABASE) IF NOT EXISTS|ALTER TABLE) [A-Za-z_][\w.]* ON CLUSTER c\b`)

// FuzzClusterDDL: whatever the statement, the rewriting either refuses
// it or produces statements that all run ON CLUSTER, and never a table
// that is not replicated.
func FuzzClusterDDL(f *testing.F) {
	for _, s := range []string{
		"CREATE TABLE IF NOT EXISTS t (a String, n AggregateFunction(any, String)) ENGINE = AggregatingMergeTree() ORDER BY a",
		"CREATE TABLE IF NOT EXISTS t (a String) ENGINE = ReplacingMergeTree(v) PARTITION BY x ORDER BY a SETTINGS index_granularity = 16",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS SELECT a FROM s GROUP BY a",
		"ALTER TABLE t ADD COLUMN x String DEFAULT ''",
		"CREATE DATABASE IF NOT EXISTS d",
		"CREATE TABLE IF NOT EXISTS t (a String) ENGINE = Memory",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stmt string) {
		got, err := chx.ClusterDDL(stmt, "db", "c")
		if err != nil {
			if !errors.Is(err, chx.ErrClusterDDL) {
				t.Fatalf("error %v does not wrap ErrClusterDDL", err)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("no statement and no error")
		}
		for _, s := range got {
			if !onClusterRe.MatchString(s.SQL) {
				t.Errorf("%q rewrote to %q, which does not run ON CLUSTER on a qualified name", stmt, s.SQL)
			}
			if strings.Contains(s.SQL, "ENGINE = ") && !strings.Contains(s.SQL, "ENGINE = Replicated") && !strings.Contains(s.SQL, "ENGINE = Distributed(c, db, ") {
				t.Errorf("%q rewrote to %q: a table that is neither replicated nor distributed", stmt, s.SQL)
			}
		}
	})
}
