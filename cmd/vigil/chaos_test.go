package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/chtest"
)

// TestChaosShort runs this test binary as vigil (TestMain's subVigil)
// and the fault suite shortened (one round, 3 s phases
// and outage), as CI does: kill -9 of the all-in-one and of an ingest
// and a policy replica, ClickHouse cut off, a NATS cluster node lost.
// Every experiment must acknowledge writes through its fault and read
// every one back exactly once, in the API and in the ledger.
func TestChaosShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rs, err := chaosSuite(ctx, []string{"--short", "--clickhouse-dsn", chtest.DSN()}, &out, subVigil)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(chaosExperiments) {
		t.Fatalf("%d experiments ran, want %d", len(rs), len(chaosExperiments))
	}
	for _, r := range rs {
		if r.Acked < 50 || r.LedgerLeaves == 0 {
			t.Errorf("%s: %d writes acknowledged, %d ledger leaves: the load did not run", r.Name, r.Acked, r.LedgerLeaves)
		}
	}
}
