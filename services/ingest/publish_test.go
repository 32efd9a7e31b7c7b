package ingest_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

// TestPublishConnections: with Deps.Publish the receivers publish over
// every one of those connections (each authenticated as the ingest user,
// as main and the stack open them), and every event acknowledged is in
// INGEST once: single events spread over the connections, a batch stays
// on one.
func TestPublishConnections(t *testing.T) {
	env := natstest.Start(t)
	var (
		ncs  []*nats.Conn
		pubs []jetstream.JetStream
	)
	for range 3 {
		nc, js := env.ConnectAs(t, streams.ServiceIngest)
		ncs, pubs = append(ncs, nc), append(pubs, js)
	}
	s := startServer(t, env, pubs) // one single event, to wait for the key
	ids := newBenchIDs()
	const singles = 30
	var wg sync.WaitGroup
	errs := make(chan error, singles)
	for range singles {
		wg.Go(func() { errs <- s.post("/v1/events", benchEvent(ids), wantAccepted) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var before []uint64
	for i, nc := range ncs {
		st := nc.Stats()
		if st.OutMsgs == 0 {
			t.Errorf("publish connection %d sent nothing", i)
		}
		before = append(before, st.OutMsgs)
	}
	if err := s.post("/v1/events/batch", benchBatch(ids, 100), wantBatch100); err != nil {
		t.Fatal(err)
	}
	var grew []int
	for i, nc := range ncs {
		if d := nc.Stats().OutMsgs - before[i]; d > 0 {
			if d != 100 {
				t.Errorf("connection %d sent %d messages of the batch, want all 100 or none", i, d)
			}
			grew = append(grew, i)
		}
	}
	if len(grew) != 1 {
		t.Errorf("the batch went out on connections %v, want one", grew)
	}
	stream, err := env.JS.Stream(context.Background(), streams.Ingest)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(1 + singles + 100); info.State.Msgs != want {
		t.Fatalf("INGEST holds %d messages, want %d", info.State.Msgs, want)
	}
}

// TestPublishConnsValidated: PublishConns is 1-64.
func TestPublishConnsValidated(t *testing.T) {
	for n, ok := range map[int]bool{0: false, 1: true, 4: true, 64: true, 65: false} {
		c := ingest.DefaultConfig()
		c.RedactionKey = make([]byte, 32)
		c.PublishConns = n
		err := c.Validate()
		if (err == nil) != ok {
			t.Errorf("PublishConns %d: %v", n, err)
		}
		if err != nil && !strings.Contains(err.Error(), "PublishConns") {
			t.Errorf("PublishConns %d: error %v does not name it", n, err)
		}
	}
}
