package natstest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/streams"
)

// TestClusterSurvivesANode: an R3 stream on the three-node cluster keeps
// every acknowledged message, and keeps accepting writes, while one node
// is down, and the node catches up when it returns.
func TestClusterSurvivesANode(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	_, js := c.ConnectAs(t, natsauth.Admin, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cfg := streams.IngestConfig(streams.Options{Replicas: 3})
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	if got := s.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("replicas = %d, want 3", got)
	}
	publish := func(js jetstream.JetStream, from, to int) {
		for i := from; i < to; i++ {
			for {
				// Each attempt gets its own deadline: a publish sent while
				// the stream elects a new leader may never be answered, and
				// must not use up the whole test's time.
				actx, acancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(actx, "ingest.v1.event_received.acme.a1", []byte("x"), jetstream.WithMsgID(fmt.Sprintf("m%d", i)))
				acancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	publish(js, 0, 50)
	// Lose the node the stream's leader is on: a new leader takes over.
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost := -1
	for i := range c.Size() {
		if c.Server(i).Name() == info.Cluster.Leader {
			lost = i
		}
	}
	if lost < 0 {
		t.Fatalf("stream leader %q is no node of the cluster", info.Cluster.Leader)
	}
	// Write and watch through a node that stays up: the first client may
	// be connected to the node this stops.
	_, survivor := c.ConnectAs(t, natsauth.Admin, (lost+1)%c.Size())
	c.Stop(lost)
	publish(survivor, 50, 100)
	c.Start(lost)
	for {
		var info *jetstream.StreamInfo
		st, err := survivor.Stream(ctx, cfg.Name)
		if err == nil {
			info, err = st.Info(ctx)
		}
		if err == nil && info.State.Msgs == 100 && len(info.Cluster.Replicas) == 2 && info.Cluster.Replicas[0].Current && info.Cluster.Replicas[1].Current {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("stream after the node returned: %+v, %v", info, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
