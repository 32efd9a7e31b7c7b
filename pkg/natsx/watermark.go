package natsx

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Watermark is how far a projection has got through a stream: the highest
// stream sequence it has applied. It only moves forward. Readers wait on
// it with WaitFor; it is the one waiting primitive behind every
// read-your-writes in Vigil (the CONTROL catalog, the settings view, the
// risk partitions and, through ConsumerFloor, the ClickHouse projectors).
type Watermark struct {
	mu      sync.Mutex
	at      uint64
	changed chan struct{} // closed and replaced whenever at advances
}

// At returns the highest sequence applied so far.
func (w *Watermark) At() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.at
}

// Advance records that every sequence up to seq is applied. A lower seq
// than the current one changes nothing.
func (w *Watermark) Advance(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq <= w.at {
		return
	}
	w.at = seq
	if w.changed != nil {
		close(w.changed)
		w.changed = nil
	}
}

// WaitFor blocks until the watermark reaches seq or ctx ends; then it
// returns ctx's error (wrapped).
func (w *Watermark) WaitFor(ctx context.Context, seq uint64) error {
	for {
		w.mu.Lock()
		if w.at >= seq {
			w.mu.Unlock()
			return nil
		}
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for stream sequence %d: %w", seq, ctx.Err())
		}
	}
}

// ConsumerFloor is the progress of a durable consumer that acks a message
// only once its effect is stored (a ClickHouse projector acks after the
// insert): at or below its ack floor every message is projected. It is
// read from the server, so every process sees the same floor whichever
// instance runs the consumer.
//
// The floor is polled only while someone waits, by one goroutine per
// ConsumerFloor however many requests wait, and read again at most every
// Interval.
type ConsumerFloor struct {
	js       jetstream.JetStream
	stream   string
	consumer string
	// Interval is the pause between two reads of the consumer's state
	// while a reader waits.
	Interval time.Duration

	wm      Watermark
	mu      sync.Mutex
	waiters int
	wanted  uint64 // the highest sequence a current waiter waits for
	polling bool
	wake    chan struct{} // signals the poller that a waiter arrived
}

// NewConsumerFloor returns the floor of durable consumer on stream.
func NewConsumerFloor(js jetstream.JetStream, stream, consumer string) *ConsumerFloor {
	return &ConsumerFloor{js: js, stream: stream, consumer: consumer, Interval: 5 * time.Millisecond}
}

// Stream names the stream whose sequences the floor counts.
func (f *ConsumerFloor) Stream() string { return f.stream }

// At returns the last floor read (0 before the first wait).
func (f *ConsumerFloor) At() uint64 { return f.wm.At() }

// WaitFor blocks until every message of the stream up to seq that the
// consumer takes is acked, or ctx ends. A consumer that has nothing
// pending or unacked has passed every sequence stored before it was
// asked, including sequences its filter skips.
func (f *ConsumerFloor) WaitFor(ctx context.Context, seq uint64) error {
	if f.wm.At() >= seq {
		return nil
	}
	f.mu.Lock()
	f.waiters++
	f.wanted = max(f.wanted, seq)
	if !f.polling {
		f.polling = true
		f.wake = make(chan struct{}, 1)
		go f.poll()
	} else {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.waiters--
		f.mu.Unlock()
	}()
	return f.wm.WaitFor(ctx, seq)
}

// poll reads the consumer's state until no one waits.
func (f *ConsumerFloor) poll() {
	for {
		f.mu.Lock()
		if f.waiters == 0 {
			f.polling, f.wanted = false, 0
			f.mu.Unlock()
			return
		}
		// Every current waiter's sequence was stored before it started
		// waiting, so before this read of the consumer.
		wanted, wake := f.wanted, f.wake
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		floor, err := f.read(ctx, wanted)
		cancel()
		if err == nil {
			f.wm.Advance(floor)
		}
		select {
		case <-time.After(f.Interval):
		case <-wake:
		}
	}
}

// read returns the consumer's ack floor, or wanted when it holds nothing
// (no consumer yet counts as a floor of 0).
func (f *ConsumerFloor) read(ctx context.Context, wanted uint64) (uint64, error) {
	cons, err := f.js.Consumer(ctx, f.stream, f.consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s on %s: %w", f.consumer, f.stream, err)
	}
	info := cons.CachedInfo()
	if info.NumPending == 0 && info.NumAckPending == 0 {
		// JetStream sends the publish ack before it tells the stream's
		// consumers of the new message, so just after a write "nothing
		// pending" may not count it yet. The consumer has passed wanted
		// only if it takes no message it has not delivered up to wanted
		// (sequences its filter skips are passed).
		taken, err := f.undelivered(ctx, info, wanted)
		if err != nil {
			return 0, err
		}
		if !taken {
			return max(info.AckFloor.Stream, wanted), nil
		}
	}
	return info.AckFloor.Stream, nil
}

// undelivered reports whether the stream holds a message after what the
// consumer has delivered, up to wanted, that the consumer's filters take.
func (f *ConsumerFloor) undelivered(ctx context.Context, info *jetstream.ConsumerInfo, wanted uint64) (bool, error) {
	from := info.Delivered.Stream + 1
	if from > wanted {
		return false, nil
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	if len(filters) == 0 {
		filters = []string{">"}
	}
	st, err := f.js.Stream(ctx, f.stream)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", f.stream, err)
	}
	for _, filter := range filters {
		msg, err := st.GetMsg(ctx, from, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("next %s message on %s from %d: %w", filter, f.stream, from, err)
		}
		if msg.Sequence <= wanted {
			return true, nil
		}
	}
	return false, nil
}
