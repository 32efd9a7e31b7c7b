package natsx_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
)

// A Detached message settles exactly as the message it was detached from
// would: the same ack bodies on the same ack subjects (seen by a
// subscriber on $JS.ACK.>, for nats.go's own and the detached message
// side by side), and the server acts on them (acked and terminated
// messages leave the pending set, a nak is redelivered).
func TestDetachedAcksAsTheMessage(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	if _, err := env.JS.CreateStream(ctx, baseConfig("DETACH", "detach.>")); err != nil {
		t.Fatal(err)
	}
	cons, err := env.JS.CreateOrUpdateConsumer(ctx, "DETACH", jetstream.ConsumerConfig{
		Durable: "d", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxDeliver: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every settlement, in pairs: nats.go's on message 2i, the detached
	// one's on message 2i+1.
	settle := []struct {
		name string
		do   func(jetstream.Msg) error
	}{
		{"ack", jetstream.Msg.Ack},
		{"nak", jetstream.Msg.Nak},
		{"nak with delay", func(m jetstream.Msg) error { return m.NakWithDelay(time.Hour) }},
		{"in progress", jetstream.Msg.InProgress},
		{"term", jetstream.Msg.Term},
		{"term with reason", func(m jetstream.Msg) error { return m.TermWithReason("unsealable record: x") }},
		{"double ack", func(m jetstream.Msg) error { return m.DoubleAck(ctx) }},
	}
	for i := range 2 * len(settle) {
		if _, err := env.JS.Publish(ctx, fmt.Sprintf("detach.%d", i), []byte("payload")); err != nil {
			t.Fatal(err)
		}
	}
	acks := make(chan *nats.Msg, 64)
	sub, err := env.Conn.ChanSubscribe("$JS.ACK.>", acks)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2*len(settle), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 2*len(settle) {
		t.Fatalf("fetched %d messages, want %d (%v)", len(msgs), 2*len(settle), batch.Error())
	}
	nextAck := func() *nats.Msg {
		select {
		case m := <-acks:
			return m
		case <-ctx.Done():
			t.Fatal("no ack seen")
			return nil
		}
	}
	for i, s := range settle {
		orig, d := msgs[2*i], natsx.Detach(env.JS.Conn(), msgs[2*i+1])
		if d.Subject() != msgs[2*i+1].Subject() || d.Reply() != msgs[2*i+1].Reply() || d.Data() != nil {
			t.Fatalf("%s: detached %q %q %q", s.name, d.Subject(), d.Reply(), d.Data())
		}
		if err := s.do(orig); err != nil {
			t.Fatalf("%s, nats.go: %v", s.name, err)
		}
		want := nextAck()
		if err := s.do(d); err != nil {
			t.Fatalf("%s, detached: %v", s.name, err)
		}
		got := nextAck()
		if want.Subject != orig.Reply() || got.Subject != d.Reply() || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("%s: detached sent %q to %s, nats.go %q to %s", s.name, got.Data, got.Subject, want.Data, want.Subject)
		}
		// Only an in-progress ack may be sent again, as with nats.go.
		errOrig, errDet := orig.Ack(), d.Ack()
		if !errors.Is(errDet, errOrig) && (errOrig != nil || errDet != nil) {
			t.Fatalf("%s, then ack: detached %v, nats.go %v", s.name, errDet, errOrig)
		}
		if errOrig == nil {
			nextAck()
			nextAck()
		}
	}
	// The server acted on both alike: the two naked at once (messages 3
	// and 4) are redelivered; the two naked for an hour (5 and 6) wait,
	// unacked; every other one is settled.
	again, err := cons.Fetch(2, jetstream.FetchMaxWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var redelivered []uint64
	for m := range again.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		redelivered = append(redelivered, md.Sequence.Stream)
		if err := m.DoubleAck(ctx); err != nil { // the server has it before Info below
			t.Fatal(err)
		}
	}
	if fmt.Sprint(redelivered) != "[3 4]" {
		t.Fatalf("redelivered %v, want [3 4]", redelivered)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 2 || info.AckFloor.Stream != 4 || info.NumPending != 0 {
		t.Fatalf("after settling: %d ack pending, ack floor %d, %d pending", info.NumAckPending, info.AckFloor.Stream, info.NumPending)
	}
	if _, err := natsx.Detach(env.JS.Conn(), msgs[0]).Metadata(); !errors.Is(err, natsx.ErrDetached) {
		t.Fatalf("Metadata: %v", err)
	}
	var empty natsx.Detached
	if err := empty.Ack(); !errors.Is(err, jetstream.ErrMsgNotBound) {
		t.Fatalf("unbound ack: %v", err)
	}
}
