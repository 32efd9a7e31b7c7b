package natsx_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
)

// TestConsumerFloor: a wait on a durable consumer's floor returns once
// the consumer has acked up to the sequence, not before; a sequence its
// filter skips is passed once the consumer holds nothing.
func TestConsumerFloor(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	if err := natsx.EnsureStreams(ctx, env.JS, jetstream.StreamConfig{Name: "FLOOR", Subjects: []string{"floor.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	cons, err := env.JS.CreateOrUpdateConsumer(ctx, "FLOOR", jetstream.ConsumerConfig{Durable: "proj", FilterSubject: "floor.kept", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, subj := range []string{"floor.kept", "floor.kept", "floor.skipped"} {
		ack, err := env.JS.Publish(ctx, subj, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	floor := natsx.NewConsumerFloor(env.JS, "FLOOR", "proj")

	// Nothing acked: a bounded wait for the first message ends unmet.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = floor.WaitFor(short, seqs[0])
	cancel()
	if err == nil {
		t.Fatal("WaitFor returned before the consumer acked anything")
	}

	done := make(chan error, 1)
	go func() { done <- floor.WaitFor(ctx, seqs[1]) }()
	batch, err := cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("WaitFor(%d) returned after only the first message was acked: %v", seqs[1], err)
	default:
	}
	batch, err = cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitFor(%d) after both acks: %v", seqs[1], err)
	}
	// The skipped message: the consumer holds nothing, so it is passed.
	if err := floor.WaitFor(ctx, seqs[2]); err != nil {
		t.Fatalf("WaitFor(%d), a sequence the filter skips: %v", seqs[2], err)
	}
	if floor.At() < seqs[2] {
		t.Fatalf("At = %d after passing %d", floor.At(), seqs[2])
	}
}
