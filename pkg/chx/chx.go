// Package chx connects to ClickHouse, applies embedded migrations and writes
// projections in batches. Every table it touches must work on ClickHouse
// 18.16 (CI) and on current releases (compose).
package chx

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/apperr"
)

var dbNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// Open connects to the DSN's database, creating it first if it does not
// exist, and checks the connection with a ping. The DSN may list several
// servers (clickhouse://h1:9000,h2:9000/vigil): the connection uses the
// first that answers and moves to the next when it fails.
func Open(ctx context.Context, dsn string) (driver.Conn, error) {
	return OpenCluster(ctx, dsn, "")
}

// OpenCluster is Open for the replicas of a ClickHouse cluster (named as
// in the servers' remote_servers), or Open itself when cluster is "": the
// database is created ON CLUSTER, Migrate rewrites its DDL for the cluster
// (ClusterDDL), and every insert into a Distributed table is synchronous
// (insert_distributed_sync), so it returns once a replica has stored the
// rows: a sink acks its messages only then.
func OpenCluster(ctx context.Context, dsn, cluster string) (driver.Conn, error) {
	if cluster != "" && !dbNameRe.MatchString(cluster) {
		return nil, fmt.Errorf("clickhouse cluster name %q is not a plain identifier", cluster)
	}
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse clickhouse dsn: %w", err)
	}
	db := opts.Auth.Database
	if db == "" {
		db = "default"
	}
	if !dbNameRe.MatchString(db) {
		return nil, fmt.Errorf("clickhouse database name %q is not a plain identifier", db)
	}
	tune(opts)
	if cluster != "" {
		opts.Settings["insert_distributed_sync"] = 1
	}
	if db != "default" {
		opts.Auth.Database = "default"
		boot, err := clickhouse.Open(opts)
		if err != nil {
			return nil, fmt.Errorf("open clickhouse: %w", err)
		}
		if cluster != "" {
			err = migrateCluster(ctx, boot, cluster, "CREATE DATABASE IF NOT EXISTS "+db)
		} else {
			err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db)
		}
		_ = boot.Close()
		if err != nil {
			return nil, fmt.Errorf("create database %s: %w", db, err)
		}
		opts.Auth.Database = db
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ping clickhouse: %w", err)
	}
	if cluster != "" {
		return &clusterConn{Conn: conn, cluster: cluster}, nil
	}
	return conn, nil
}

// tune sets connection options explicitly rather than trusting defaults
// that differ between driver releases.
func tune(o *clickhouse.Options) {
	if o.DialTimeout == 0 || o.DialTimeout == 30*time.Second {
		o.DialTimeout = 5 * time.Second
	}
	if o.MaxOpenConns == 0 {
		o.MaxOpenConns = 10
	}
	if o.MaxIdleConns == 0 {
		o.MaxIdleConns = 5
	}
	o.ConnMaxLifetime = 10 * time.Minute
}

// ReadError classifies a failed API read: a ClickHouse exception (a bad
// query: our bug) stays an internal error, anything else (connection
// refused, timeout) means the store is unavailable and the client should
// retry.
func ReadError(what string, err error) error {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return apperr.Unavailable(what+" is unavailable", 2*time.Second, err)
}
