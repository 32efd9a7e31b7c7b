package natsx

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestFloorUndelivered: JetStream answers a publish before its consumers
// count the message, so a consumer can report nothing pending while a
// message it takes is stored but not delivered. The floor must treat such
// a message as not passed, and a message the consumer's filter skips as
// passed — whatever the consumer's counters say.
func TestFloorUndelivered(t *testing.T) {
	ns, err := StartEmbedded(EmbeddedOptions{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "UND", Subjects: []string{"und.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	pub := func(subj string) uint64 {
		ack, err := js.Publish(ctx, subj, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	kept1, skipped, kept2 := pub("und.kept"), pub("und.skipped"), pub("und.kept")
	f := NewConsumerFloor(js, "UND", "proj")
	info := func(delivered uint64, filters ...string) *jetstream.ConsumerInfo {
		return &jetstream.ConsumerInfo{Delivered: jetstream.SequenceInfo{Stream: delivered}, Config: jetstream.ConsumerConfig{FilterSubjects: filters}}
	}
	tests := []struct {
		name      string
		info      *jetstream.ConsumerInfo
		wanted    uint64
		undeliver bool
	}{
		{"a kept message not delivered yet", info(0, "und.kept"), kept1, true},
		{"a skipped message after the delivered one", info(kept1, "und.kept"), skipped, false},
		{"a kept message after a skipped one", info(kept1, "und.kept"), kept2, true},
		{"everything delivered", info(kept2, "und.kept"), kept2, false},
		{"no filter takes every message", info(kept1), skipped, true},
		{"another filter", info(0, "und.other"), kept2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.undelivered(ctx, tt.info, tt.wanted)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.undeliver {
				t.Fatalf("undelivered(delivered %d, wanted %d) = %v, want %v", tt.info.Delivered.Stream, tt.wanted, got, tt.undeliver)
			}
		})
	}
}
