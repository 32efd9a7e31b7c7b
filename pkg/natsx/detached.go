package natsx

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Detached is a delivered JetStream message reduced to what settling it
// needs: its subject and its ack subject. A consumer that holds many
// messages between taking them in and acking them (the ledger holds two
// batches of ten thousand until their checkpoint commits) keeps this
// instead of the message once it has read the data, so the message's
// data, headers and client state are collected: about 1 KB of a typical
// event record, against ~200 bytes kept.
//
// Acks go out exactly as nats.go sends them (jetstream.Msg: the same
// bodies, published on the same connection to the same ack subject), and
// like it a Detached refuses a second final ack (ErrMsgAlreadyAckd).
// Data and Headers are nil and Metadata fails: read them before
// detaching.
type Detached struct {
	nc      *nats.Conn
	subject string
	reply   string

	mu    sync.Mutex
	acked bool
}

var _ jetstream.Msg = (*Detached)(nil)

// ErrDetached is Metadata's error on a Detached message.
var ErrDetached = errors.New("natsx: detached message keeps no metadata")

// The ack bodies of the JetStream protocol, as nats.go sends them.
var (
	ackAck      = []byte("+ACK")
	ackNak      = []byte("-NAK")
	ackProgress = []byte("+WPI")
	ackTerm     = []byte("+TERM")
)

// Detach returns m reduced to its subjects; nc must be the connection m
// was delivered on (jetstream.JetStream.Conn()), which its acks then go
// out on as m's would.
func Detach(nc *nats.Conn, m jetstream.Msg) *Detached {
	return &Detached{nc: nc, subject: m.Subject(), reply: m.Reply()}
}

// Metadata is not kept: it fails with ErrDetached.
func (d *Detached) Metadata() (*jetstream.MsgMetadata, error) { return nil, ErrDetached }

// Data is not kept: nil.
func (d *Detached) Data() []byte { return nil }

// Headers are not kept: nil.
func (d *Detached) Headers() nats.Header { return nil }

// Subject is the subject the message was published to.
func (d *Detached) Subject() string { return d.subject }

// Reply is the message's ack subject.
func (d *Detached) Reply() string { return d.reply }

// Ack acknowledges the message.
func (d *Detached) Ack() error { return d.ack(context.Background(), ackAck, false) }

// DoubleAck acknowledges the message and waits for the server to confirm.
func (d *Detached) DoubleAck(ctx context.Context) error { return d.ack(ctx, ackAck, true) }

// Nak has the message redelivered now.
func (d *Detached) Nak() error { return d.ack(context.Background(), ackNak, false) }

// NakWithDelay has the message redelivered after delay.
func (d *Detached) NakWithDelay(delay time.Duration) error {
	if delay <= 0 {
		return d.Nak()
	}
	return d.ack(context.Background(), fmt.Appendf(nil, "%s {\"delay\": %d}", ackNak, delay.Nanoseconds()), false)
}

// InProgress resets the message's AckWait.
func (d *Detached) InProgress() error { return d.ack(context.Background(), ackProgress, false) }

// Term stops the message's redelivery.
func (d *Detached) Term() error { return d.ack(context.Background(), ackTerm, false) }

// TermWithReason stops the message's redelivery, with a reason the
// server reports in its advisory.
func (d *Detached) TermWithReason(reason string) error {
	if reason == "" {
		return d.Term()
	}
	return d.ack(context.Background(), fmt.Appendf(nil, "%s %s", ackTerm, reason), false)
}

// ack sends body to the ack subject (as a request when sync), as
// nats.go's jetStreamMsg.ackReply does.
func (d *Detached) ack(ctx context.Context, body []byte, sync bool) error {
	if d.nc == nil {
		return jetstream.ErrMsgNotBound
	}
	if d.reply == "" {
		return jetstream.ErrMsgNoReply
	}
	d.mu.Lock()
	acked := d.acked
	d.mu.Unlock()
	if acked {
		return jetstream.ErrMsgAlreadyAckd
	}
	var err error
	if sync {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 5*time.Second) // jetstream's default API timeout
			defer cancel()
		}
		_, err = d.nc.RequestWithContext(ctx, d.reply, body)
	} else {
		err = d.nc.Publish(d.reply, body)
	}
	if err != nil {
		return err
	}
	// In progress may be sent any number of times; anything else settles.
	if string(body) != string(ackProgress) {
		d.mu.Lock()
		d.acked = true
		d.mu.Unlock()
	}
	return nil
}
