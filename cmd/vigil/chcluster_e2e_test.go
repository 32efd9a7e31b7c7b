package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/cmd/vigil/stack"
	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tenant"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// TestClickHouseClusterLosesNothing: Vigil on a ClickHouse cluster of two
// replicas (one shard, Debian's ZooKeeper, --clickhouse-cluster). The
// stack writes through replica A (its DSN lists A, then B); a second
// api, on the same NATS, reads through replica B alone. Under a load of
// events and decisions:
//
//  1. every migrated table is a replicated table under a Distributed one
//     on both replicas, and what is written through A is read through B,
//     directly and through the second api;
//  2. A is killed (kill -9) mid-load: writing goes on through B, and what
//     is acknowledged meanwhile is on B;
//  3. A restarts and catches up: every acknowledged event and decision is
//     read back exactly once through either replica, and sealed once in
//     the ledger.
func TestClickHouseClusterLosesNothing(t *testing.T) {
	c := chtest.StartCluster(t, 2)
	db := c.NewDB()
	dirA := t.TempDir()
	writer := stacktest.Start(t, stacktest.Options{
		DataDir: dirA, DSN: c.DSN(db, 0, 1), ClickHouseCluster: c.Name, Log: testLogger(t), API: unlimited,
	})
	reader := stacktest.Start(t, stacktest.Options{
		DSN: c.DSN(db, 1), ClickHouseCluster: c.Name, Log: testLogger(t), API: unlimited,
		NATSURL: writer.NATS.ClientURL(), NATSCredsDir: stack.CredsDir(dirA),
		Services: []string{streams.ServiceAPI}, InstanceID: "api-b",
	})
	chA, chB := c.Open(t, db, 0), c.Open(t, db, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// 1. The schema, on both replicas.
	for name, ch := range map[string]driver.Conn{"A": chA, "B": chB} {
		engines := tableEngines(ctx, t, ch, db)
		for _, tbl := range readmodel.Tables {
			if strings.HasSuffix(tbl.Name, "_mv") || strings.Contains(tbl.Name, "_mv_") {
				if engines[tbl.Name] != "MaterializedView" {
					t.Errorf("replica %s: view %s is %q", name, tbl.Name, engines[tbl.Name])
				}
				continue
			}
			if engines[tbl.Name] != "Distributed" || !strings.HasPrefix(engines[tbl.Name+chx.LocalSuffix], "Replicated") {
				t.Errorf("replica %s: %s is %q over %q, want Distributed over Replicated*", name, tbl.Name, engines[tbl.Name], engines[tbl.Name+chx.LocalSuffix])
			}
		}
	}

	load := newFaultLoad(writer.BootstrapKey, "bot-chcluster", []string{writer.URL}, []string{writer.URL})
	load.pace = 100 * time.Millisecond
	if err := load.autoRegister(ctx); err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	loaded := make(chan struct{})
	go func() { defer close(loaded); load.Run(lctx, 4) }()
	defer func() { stopLoad(); <-loaded }()
	waitAcked := func(n int, what string) {
		t.Helper()
		testkit.EventuallyWithin(t, time.Minute, what, func() (bool, string) {
			return load.acked() >= n, fmt.Sprintf("%d writes acknowledged, want %d", load.acked(), n)
		})
	}
	waitAcked(60, "writes through replica A")
	events, decisions := load.snapshot()
	testkit.EventuallyWithin(t, time.Minute, "replica B to hold what was written through A", func() (bool, string) {
		return missingOn(ctx, chB, events, decisions)
	})
	if r := load.Check(ctx, reader.URL, time.Minute, nil); r.Err != nil || r.Lost != 0 || r.Duplicated != 0 {
		t.Fatalf("read through replica B's api: %+v", r)
	}

	// 2. Replica A dies mid-load; writing goes on through B.
	c.Kill(0)
	killedAt := load.acked()
	events, decisions = load.snapshot()
	t.Logf("killed replica A with %d writes acknowledged", killedAt)
	waitAcked(killedAt+60, "writes while replica A is down")
	after, afterDecisions := load.snapshot()
	for id := range events {
		delete(after, id)
	}
	for id := range decisions {
		delete(afterDecisions, id)
	}
	testkit.EventuallyWithin(t, time.Minute, "replica B to hold what was acknowledged while A was down", func() (bool, string) {
		return missingOn(ctx, chB, after, afterDecisions)
	})

	// 3. A comes back and catches up.
	c.Restart(0)
	waitAcked(load.acked()+40, "writes after replica A is back")
	stopLoad()
	<-loaded
	all, allDecisions := load.snapshot()
	for name, ch := range map[string]driver.Conn{"A": chA, "B": chB} {
		testkit.EventuallyWithin(t, 2*time.Minute, "replica "+name+" to hold every acknowledged write", func() (bool, string) {
			return missingOn(ctx, ch, all, allDecisions)
		})
	}
	for name, base := range map[string]string{"A (writer)": writer.URL, "B": reader.URL} {
		ledger := load.ledgerCheck(chB, tenant.Default, writer.URL)
		if name != "B" {
			ledger = load.ledgerCheck(chA, tenant.Default, writer.URL)
		}
		r := load.Check(ctx, base, time.Minute, ledger)
		t.Logf("read through %s: acked %d, lost %d, duplicated %d, ledger leaves %d (missing %d, doubled %d), failed requests %d (first: %s)",
			name, r.Acked, r.Lost, r.Duplicated, r.LedgerLeaves, r.LedgerMissing, r.LedgerDuplicated, r.Failures, r.FirstFailure)
		if r.Err != nil || r.Lost != 0 || r.Duplicated != 0 || r.LedgerMissing != 0 || r.LedgerDuplicated != 0 {
			t.Fatalf("after losing replica A and getting it back, read through %s: %+v", name, r)
		}
	}
}

// tableEngines maps each table of db on a replica to its engine.
func tableEngines(ctx context.Context, t *testing.T, ch driver.Conn, db string) map[string]string {
	t.Helper()
	rows, err := ch.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", db)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, e string
		if err := rows.Scan(&n, &e); err != nil {
			t.Fatal(err)
		}
		out[n] = e
	}
	return out
}

// missingOn reports whether the replica ch holds, in its own replicated
// tables (not through a Distributed one, which could read the other
// replica), every event and decision given, each once.
func missingOn(ctx context.Context, ch driver.Conn, events, decisions map[string]bool) (bool, string) {
	var state []string
	for _, q := range []struct {
		table, column string
		ids           map[string]bool
	}{
		{readmodel.Events.Name + chx.LocalSuffix, "event_id", events},
		{readmodel.Decisions.Name + chx.LocalSuffix, "decision_id", decisions},
	} {
		ids := slices.Collect(maps.Keys(q.ids))
		var n, distinct uint64
		err := ch.QueryRow(ctx, fmt.Sprintf("SELECT count(), uniqExact(%s) FROM %s FINAL WHERE tenant_id = ? AND has(?, %s)", q.column, q.table, q.column),
			tenant.Default, ids).Scan(&n, &distinct)
		if err != nil {
			return false, err.Error()
		}
		if n != uint64(len(ids)) || distinct != uint64(len(ids)) {
			state = append(state, fmt.Sprintf("%s: %d rows, %d distinct of %d acknowledged", q.table, n, distinct, len(ids)))
		}
	}
	return len(state) == 0, strings.Join(state, "; ")
}

// snapshot copies the acknowledged event and decision ids.
func (l *faultLoad) snapshot() (events, decisions map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	events = make(map[string]bool, len(l.events))
	for id := range l.events {
		events[id] = true
	}
	return events, maps.Clone(l.decisions)
}
