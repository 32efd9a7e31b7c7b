package chx

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// On a ClickHouse cluster (--clickhouse-cluster) every table of a
// migration becomes two: a Replicated*MergeTree table named with
// LocalSuffix on every replica, which holds the rows, and a Distributed
// table under the migration's own name, through which every writer
// inserts and every reader (and analyst) queries, so no query changes.
// Materialized views read and write the local tables: a view fires only on
// the replica an insert lands on, never on the parts a replica fetches
// from another, so each row is aggregated once and the aggregate is then
// replicated like any other part. The rewriting is ClusterDDL's alone:
// the migration files are the single-node DDL, unchanged.

// LocalSuffix names the replicated table under each Distributed table.
const LocalSuffix = "_local"

// ddlTimeout bounds how long an ON CLUSTER statement waits for every
// replica to run it. A replica that is down runs it from ZooKeeper's task
// queue when it comes back; the migration goes on once the replica it is
// connected to has it.
const ddlTimeout = 60 * time.Second

// ErrClusterDDL marks a migration statement ClusterDDL cannot rewrite for
// a cluster: the migration fails rather than create a table that would
// not be replicated.
var ErrClusterDDL = errors.New("migration cannot be rewritten for a cluster")

var (
	createTableRe = regexp.MustCompile(`(?is)^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_]\w*)\s*\((.*)\)\s*ENGINE\s*=\s*([A-Za-z]+)(?:\s*\(([^()]*)\))?(.*)$`)
	createViewRe  = regexp.MustCompile(`(?is)^CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_]\w*)\s+TO\s+([A-Za-z_]\w*)\s+AS\s+(SELECT\s.*)$`)
	createDBRe    = regexp.MustCompile(`(?is)^CREATE\s+DATABASE\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_]\w*)$`)
	fromRe        = regexp.MustCompile(`(?i)\bFROM\s+([A-Za-z_]\w*)\b`)
	fromWordRe    = regexp.MustCompile(`(?i)\bFROM\b`)
	joinRe        = regexp.MustCompile(`(?i)\b(JOIN|UNION)\b`)
	orderByRe     = regexp.MustCompile(`(?i)\bORDER\s+BY\b`)
)

// mergeTrees are the engines ClusterDDL replicates (each has a
// Replicated variant taking the same arguments after the ZooKeeper path
// and replica name).
var mergeTrees = map[string]bool{
	"MergeTree": true, "ReplacingMergeTree": true, "SummingMergeTree": true, "AggregatingMergeTree": true,
	"CollapsingMergeTree": true, "VersionedCollapsingMergeTree": true,
}

// ClusterStatement is one statement of a migration rewritten for a
// cluster, with what tells whether it has taken effect on a replica.
type ClusterStatement struct {
	// SQL runs ON CLUSTER.
	SQL string
	// Table (or Database, for a CREATE DATABASE) is what SQL creates or
	// alters; Column, for an ADD COLUMN, the column it adds.
	Database, Table, Column string
	// Distributed, for an ADD COLUMN, is the Distributed table over
	// Table that must be given the column too (see Migrate).
	Distributed string
}

// ZooKeeperPath is where a replicated table of database db keeps its
// replicas' state: one path per shard ({shard} is each server's macro) and
// table, so that every database (a tenant of ClickHouse, a test) has its
// own.
func ZooKeeperPath(db, table string) string {
	return "/clickhouse/tables/{shard}/" + db + "/" + table
}

// ClusterDDL rewrites one migration statement (as Migrate accepts it,
// written for a single server) into the statements that apply it to
// database db on cluster:
//
//   - CREATE TABLE IF NOT EXISTS t (…) ENGINE = XMergeTree(args) … becomes
//     CREATE TABLE IF NOT EXISTS db.t_local ON CLUSTER c (…) ENGINE =
//     ReplicatedXMergeTree('<ZooKeeperPath>', '{replica}', args) … and
//     CREATE TABLE IF NOT EXISTS db.t ON CLUSTER c AS db.t_local ENGINE =
//     Distributed(c, db, t_local);
//   - CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS SELECT … FROM s …
//     (one source, no join) becomes the same view ON CLUSTER from
//     db.s_local to db.t_local;
//   - ALTER TABLE t ADD COLUMN c … alters db.t_local ON CLUSTER (Migrate
//     then gives the Distributed table the column);
//   - CREATE DATABASE IF NOT EXISTS d runs ON CLUSTER.
//
// Anything else, or a statement that names a database itself, fails
// with ErrClusterDDL.
func ClusterDDL(stmt, db, cluster string) ([]ClusterStatement, error) {
	if !dbNameRe.MatchString(db) || !dbNameRe.MatchString(cluster) {
		return nil, fmt.Errorf("%w: database %q and cluster %q must be plain identifiers", ErrClusterDDL, db, cluster)
	}
	stmt = strings.TrimSpace(stmt)
	if m := createTableRe.FindStringSubmatch(stmt); m != nil {
		return clusterTable(m, db, cluster)
	}
	if m := createViewRe.FindStringSubmatch(stmt); m != nil {
		return clusterView(m, db, cluster)
	}
	if m := createDBRe.FindStringSubmatch(stmt); m != nil {
		return []ClusterStatement{{SQL: "CREATE DATABASE IF NOT EXISTS " + m[1] + " ON CLUSTER " + cluster, Database: m[1]}}, nil
	}
	if m := addColumnRe.FindStringSubmatch(stmt); m != nil {
		table, column := m[1], strings.ReplaceAll(m[3], "`", "")
		if !dbNameRe.MatchString(table) || !dbNameRe.MatchString(column) {
			return nil, fmt.Errorf("%w: ALTER TABLE names %q.%q, not plain identifiers", ErrClusterDDL, table, column)
		}
		local := table + LocalSuffix
		return []ClusterStatement{{
			SQL:      fmt.Sprintf("ALTER TABLE %s.%s ON CLUSTER %s ADD COLUMN %s %s", db, local, cluster, column, strings.TrimSpace(m[4])),
			Database: db, Table: local, Column: column, Distributed: table,
		}}, nil
	}
	return nil, fmt.Errorf("%w: only CREATE TABLE … ENGINE = *MergeTree … ORDER BY, CREATE MATERIALIZED VIEW … TO, CREATE DATABASE and ALTER TABLE … ADD COLUMN are", ErrClusterDDL)
}

func clusterTable(m []string, db, cluster string) ([]ClusterStatement, error) {
	name, columns, engine, args, rest := m[1], m[2], m[3], strings.TrimSpace(m[4]), m[5]
	if !mergeTrees[engine] {
		return nil, fmt.Errorf("%w: table %s has engine %s, not one of the MergeTree family (written for one server)", ErrClusterDDL, name, engine)
	}
	// The old syntax (MergeTree(date, key, granularity)) puts the key in
	// the engine's arguments, where a replicated engine's would be wrong.
	if !orderByRe.MatchString(rest) {
		return nil, fmt.Errorf("%w: table %s has no ORDER BY clause", ErrClusterDDL, name)
	}
	local := name + LocalSuffix
	params := fmt.Sprintf("'%s', '{replica}'", ZooKeeperPath(db, local))
	if args != "" {
		params += ", " + args
	}
	return []ClusterStatement{
		{
			SQL:      fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s ON CLUSTER %s (%s) ENGINE = Replicated%s(%s)%s", db, local, cluster, columns, engine, params, rest),
			Database: db, Table: local,
		},
		{SQL: distributedDDL(db, name, name, cluster), Database: db, Table: name},
	}, nil
}

// distributedDDL creates table as the Distributed table over base's
// replicated table. It has no sharding key: an insert into a cluster of
// more than one shard fails rather than spread rows that the
// ReplacingMergeTree tables could then no longer deduplicate.
func distributedDDL(db, table, base, cluster string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s ON CLUSTER %s AS %s.%s ENGINE = Distributed(%s, %s, %s)",
		db, table, cluster, db, base+LocalSuffix, cluster, db, base+LocalSuffix)
}

func clusterView(m []string, db, cluster string) ([]ClusterStatement, error) {
	name, to, sel := m[1], m[2], m[3]
	if len(fromWordRe.FindAllString(sel, -1)) != 1 || joinRe.MatchString(sel) || strings.Contains(sel, "(SELECT") || strings.Contains(strings.ToUpper(sel), "( SELECT") {
		return nil, fmt.Errorf("%w: view %s must select from exactly one table, with no join, union or subquery", ErrClusterDDL, name)
	}
	src := fromRe.FindStringSubmatch(sel)
	if src == nil {
		return nil, fmt.Errorf("%w: view %s selects from no plain table name", ErrClusterDDL, name)
	}
	sel = fromRe.ReplaceAllLiteralString(sel, "FROM "+db+"."+src[1]+LocalSuffix)
	return []ClusterStatement{{
		SQL:      fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS %s.%s ON CLUSTER %s TO %s.%s AS %s", db, name, cluster, db, to+LocalSuffix, sel),
		Database: db, Table: name,
	}}, nil
}

// clusterConn is a connection opened for a cluster (OpenCluster): the
// migration runner rewrites its DDL (ClusterDDL).
type clusterConn struct {
	driver.Conn
	cluster string
}

// Cluster is the cluster conn was opened for by OpenCluster, or "" for a
// single server.
func Cluster(conn driver.Conn) string {
	if c, ok := conn.(*clusterConn); ok {
		return c.cluster
	}
	return ""
}

// migrateCluster applies one migration statement on the cluster conn is
// connected to, as ClusterDDL rewrites it.
func migrateCluster(ctx context.Context, conn driver.Conn, cluster, stmt string) error {
	var db string
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&db); err != nil {
		return fmt.Errorf("current database: %w", err)
	}
	steps, err := ClusterDDL(stmt, db, cluster)
	if err != nil {
		return err
	}
	for _, s := range steps {
		if err := onCluster(ctx, conn, s.SQL, func() (bool, error) { return done(ctx, conn, s) }); err != nil {
			return err
		}
		if s.Distributed != "" {
			if err := syncDistributed(ctx, conn, db, s.Distributed, cluster); err != nil {
				return err
			}
		}
	}
	return nil
}

// onCluster runs an ON CLUSTER statement unless applied reports that it
// has taken effect on the connected replica already. Running it anyway
// would be harmless (every statement is idempotent) but would wait for
// every replica, and a start with one replica down should not. A
// statement that fails or times out waiting for another replica is a
// success once the connected replica has applied it: ZooKeeper keeps the
// task for the others.
func onCluster(ctx context.Context, conn driver.Conn, stmt string, applied func() (bool, error)) error {
	if ok, err := applied(); err != nil || ok {
		return err
	}
	qctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"distributed_ddl_task_timeout": int(ddlTimeout / time.Second),
	}))
	err := conn.Exec(qctx, stmt)
	if err == nil {
		return nil
	}
	if ok, cerr := applied(); cerr == nil && ok {
		return nil
	}
	return err
}

// done reports whether s has taken effect on the connected replica.
func done(ctx context.Context, conn driver.Conn, s ClusterStatement) (bool, error) {
	var n uint64
	var err error
	switch {
	case s.Table == "":
		err = conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", s.Database).Scan(&n)
	case s.Column != "":
		err = conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", s.Database, s.Table, s.Column).Scan(&n)
	default:
		err = conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", s.Database, s.Table).Scan(&n)
	}
	if err != nil {
		return false, fmt.Errorf("look up %s.%s: %w", s.Database, s.Table, err)
	}
	return n > 0, nil
}

// syncDistributed gives the Distributed table the columns of the table
// under it after an ADD COLUMN. ClickHouse 18.16 refuses ALTER … ON
// CLUSTER on a Distributed table over replicated shards, so a new one is
// created and swapped in by one RENAME (atomic on each replica: a reader
// or writer sees the old table or the new one, never none).
func syncDistributed(ctx context.Context, conn driver.Conn, db, table, cluster string) error {
	same := func() (bool, error) {
		// As sets: what matters is that no column is missing.
		rows, err := conn.Query(ctx, `SELECT table, arrayStringConcat(arraySort(groupArray(concat(name, ' ', type))), ',')
			FROM system.columns WHERE database = ? AND table IN (?, ?) GROUP BY table`, db, table, table+LocalSuffix)
		if err != nil {
			return false, fmt.Errorf("columns of %s: %w", table, err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var t, cols string
			if err := rows.Scan(&t, &cols); err != nil {
				return false, err
			}
			got = append(got, cols)
		}
		return len(got) == 2 && got[0] == got[1], rows.Err()
	}
	if ok, err := same(); err != nil || ok {
		return err
	}
	next, prev := table+"__vigil_next", table+"__vigil_prev"
	never := func() (bool, error) { return false, nil }
	for _, stmt := range []string{
		// A leftover of a run that stopped half-way may have old columns.
		fmt.Sprintf("DROP TABLE IF EXISTS %s.%s ON CLUSTER %s", db, next, cluster),
		fmt.Sprintf("DROP TABLE IF EXISTS %s.%s ON CLUSTER %s", db, prev, cluster),
		distributedDDL(db, next, table, cluster),
		fmt.Sprintf("RENAME TABLE %s.%s TO %s.%s, %s.%s TO %s.%s ON CLUSTER %s", db, table, db, prev, db, next, db, table, cluster),
		fmt.Sprintf("DROP TABLE IF EXISTS %s.%s ON CLUSTER %s", db, prev, cluster),
	} {
		if err := onCluster(ctx, conn, stmt, never); err != nil {
			// The swap is done when the columns match, whatever a replica
			// that is down says.
			if ok, cerr := same(); cerr == nil && ok {
				return nil
			}
			return fmt.Errorf("give %s.%s the columns of %s: %w", db, table, table+LocalSuffix, err)
		}
	}
	return nil
}

// syncTimeout bounds one SyncReplica: while a replica that holds parts
// this one lacks is down, it fails after this long (and the caller
// retries) rather than hang.
const syncTimeout = 20 * time.Second

// SyncReplica waits until the replica conn's next query reaches has
// fetched every part the other replicas committed to tables (named as
// the migrations name them), so that what it reads next includes every
// insert acknowledged through any replica. It fails when that cannot be
// known, e.g. a replica holding parts not yet fetched is down. A writer
// that derives what it writes from what it wrote before (the ledger's
// tree) calls it before reloading its state. On a single server it does
// nothing.
func SyncReplica(ctx context.Context, conn driver.Conn, tables ...string) error {
	if Cluster(conn) == "" {
		return nil
	}
	qctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"receive_timeout": int(syncTimeout / time.Second),
	}))
	for _, t := range tables {
		if err := conn.Exec(qctx, "SYSTEM SYNC REPLICA "+t+LocalSuffix); err != nil {
			return fmt.Errorf("sync replica of %s: %w", t, err)
		}
	}
	return nil
}
