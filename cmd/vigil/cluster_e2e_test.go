package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// TestClusterLosesNothing: Vigil split into its services on a
// three-node JetStream cluster with R3 streams and buckets — two api,
// two ingest and two policy replicas, one ledger, and guardian, risk and
// notifier, each with its own NATS connections to its own node
// — under a load of events and decisions loses the node that leads
// INGEST and, a moment later, an ingest and a policy replica (killed:
// connections cut, nothing drained). Every event and decision that was
// acknowledged is read back through the api exactly once, and sealed
// exactly once in the ledger, whose tree size covers only distinct
// records.
func TestClusterLosesNothing(t *testing.T) {
	cluster := natstest.StartCluster(t, 3)
	db := chtest.New(t)
	dir := t.TempDir()
	so := streams.DefaultOptions
	so.Replicas = 3
	start := func(name string, node int, services ...string) *stacktest.Server {
		t.Helper()
		return stacktest.Start(t, stacktest.Options{
			DataDir: dir, DSN: db.DSN, Log: testLogger(t), API: unlimited,
			NATSURL: cluster.URL(node), NATSCredsDir: cluster.CredsDir,
			Services: services, InstanceID: name, Streams: so,
		})
	}
	// In the order each finds what it waits for at start: the api's
	// approval board reads GUARDIAN, the others' catalogs CONTROL, and
	// readers of a table wait for its owner's migration.
	start("guardian", 2, streams.ServiceGuardian)
	apiA := start("api-a", 0, streams.ServiceAPI)
	ingestA := start("ingest-a", 2, streams.ServiceIngest)
	start("policy-a", 1, streams.ServicePolicy)
	start("risk-notifier", 2, streams.ServiceRisk, streams.ServiceNotifier)
	ledger := start("ledger", 1, streams.ServiceLedger)
	policyB := start("policy-b", 2, streams.ServicePolicy)
	ingestB := start("ingest-b", 0, streams.ServiceIngest)
	apiB := start("api-b", 1, streams.ServiceAPI)
	if apiA.BootstrapKey == "" {
		t.Fatal("the first api replica created no key")
	}

	// Every stream and KV bucket (KV_*) was created with three replicas.
	_, admin := cluster.ConnectAs(t, natsauth.Admin, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	names := admin.ListStreams(ctx)
	n := 0
	for si := range names.Info() {
		n++
		if si.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3", si.Config.Name, si.Config.Replicas)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d streams and buckets", n)
	}

	load := newFaultLoad(apiA.BootstrapKey, "bot-cluster", []string{ingestA.URL, ingestB.URL}, []string{apiA.URL, apiB.URL})
	if err := load.autoRegister(ctx); err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	loaded := make(chan struct{})
	go func() { defer close(loaded); load.Run(lctx, 6) }()

	time.Sleep(2 * time.Second)
	lost := streamLeader(ctx, t, cluster, admin, streams.Ingest)
	before := load.acked()
	cluster.Stop(lost)
	t.Logf("lost node %d (INGEST's leader) with %d writes acknowledged", lost, before)
	time.Sleep(time.Second)
	ingestB.Kill()
	policyB.Kill()
	time.Sleep(3 * time.Second)
	cluster.Start(lost)
	time.Sleep(3 * time.Second)
	stopLoad()
	<-loaded
	if after := load.acked(); after < before+20 {
		t.Fatalf("%d writes acknowledged before the faults, %d at the end: the cluster stopped accepting", before, after)
	}

	r := load.Check(ctx, apiB.URL, 45*time.Second, load.ledgerCheck(db.Conn, tenant.Default, ledger.URL))
	t.Logf("acked %d, lost %d, duplicated %d, ledger leaves %d (missing %d, doubled %d), failed requests %d (first: %s), caught up in %v",
		r.Acked, r.Lost, r.Duplicated, r.LedgerLeaves, r.LedgerMissing, r.LedgerDuplicated, r.Failures, r.FirstFailure, r.CatchUp)
	if r.Err != nil || r.Lost != 0 || r.Duplicated != 0 || r.LedgerMissing != 0 || r.LedgerDuplicated != 0 {
		t.Fatalf("after losing a NATS node and two replicas: %+v", r)
	}
}

// streamLeader is the index of the cluster node that leads stream.
func streamLeader(ctx context.Context, t *testing.T, c *natstest.Cluster, js jetstream.JetStream, stream string) int {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := c.Node(info.Cluster.Leader)
	if i < 0 {
		t.Fatalf("stream %s: leader %q is no node of the cluster", stream, info.Cluster.Leader)
	}
	return i
}
