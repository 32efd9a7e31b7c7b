package vigil

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Event is what an agent reports (the Kaplaix event shape).
type Event struct {
	// EventID is Vigil's dedupe key; Report fills a fresh UUID.
	EventID string `json:"eventId"`
	// AgentID defaults to the client's agent; SessionID to the context's.
	AgentID   string `json:"agentId,omitempty"`
	SessionID string `json:"sessionId"`
	// SourceTimestamp defaults to now.
	SourceTimestamp time.Time `json:"sourceTimestamp"`
	// Category such as "tool_api", "llm", "retrieval".
	Category string `json:"category"`
	// SchemaVersion defaults to "1.0".
	SchemaVersion string         `json:"schemaVersion"`
	Payload       map[string]any `json:"payload"`
	PreviousHash  string         `json:"previousHash,omitempty"`
}

// QueuePolicy is what Report does when the buffer is full.
type QueuePolicy int

const (
	// BlockWhenFull (the default) makes Report wait for room, bounded by
	// its context: no event is lost, the agent slows down.
	BlockWhenFull QueuePolicy = iota
	// DropWhenFull makes Report return ErrQueueFull at once: the agent
	// never waits, the event is lost.
	DropWhenFull
)

type batchConfig struct {
	size     int
	linger   time.Duration
	maxQueue int
	full     QueuePolicy
	closeFor time.Duration
}

var defaultBatch = batchConfig{size: 100, linger: time.Second, maxQueue: 10000, closeFor: 10 * time.Second}

func (b batchConfig) validate() error {
	if b.size < 1 || b.size > 1000 || b.linger <= 0 || b.maxQueue < b.size || b.closeFor <= 0 {
		return fmt.Errorf("vigil: batching: want 1 ≤ size ≤ 1000 (Vigil's batch limit), linger > 0, maxQueue ≥ size, close timeout > 0")
	}
	return nil
}

// WithBatch sets the batch size (default 100, at most 1000) and linger
// (default 1 s): a batch is sent when it is full or its oldest event has
// waited linger, whichever comes first.
func WithBatch(size int, linger time.Duration) Option {
	return func(c *Client) { c.batch.size, c.batch.linger = size, linger }
}

// WithMaxQueue bounds the events held in memory (default 10,000, sent or
// not yet acknowledged) and says what Report does when they are that
// many (BlockWhenFull by default).
func WithMaxQueue(n int, p QueuePolicy) Option {
	return func(c *Client) { c.batch.maxQueue, c.batch.full = n, p }
}

// WithCloseTimeout bounds how long Close waits to send what is buffered
// (default 10 s); what is left then is dropped and reported.
func WithCloseTimeout(d time.Duration) Option { return func(c *Client) { c.batch.closeFor = d } }

// Report queues an event for the background sender. It returns once the
// event is buffered, not once Vigil has it (Flush waits for that). With a
// full buffer it waits for room (BlockWhenFull, bounded by ctx) or
// returns ErrQueueFull (DropWhenFull).
func (c *Client) Report(ctx context.Context, e Event) error {
	if e.EventID == "" {
		e.EventID = newID()
	}
	e.AgentID = first(e.AgentID, c.agent)
	e.SessionID = first(e.SessionID, sessionOf(ctx))
	if e.SourceTimestamp.IsZero() {
		e.SourceTimestamp = time.Now()
	}
	e.SourceTimestamp = e.SourceTimestamp.UTC()
	e.SchemaVersion = first(e.SchemaVersion, "1.0")
	if e.Payload == nil {
		e.Payload = map[string]any{}
	}
	return c.events.add(ctx, e)
}

// Flush sends everything reported so far and waits until Vigil has
// acknowledged it (or rejected it: see WithErrorHandler), or ctx ends.
func (c *Client) Flush(ctx context.Context) error { return c.events.flush(ctx) }

// Close flushes (bounded by WithCloseTimeout) and stops the sender.
// Events that could not be sent by then are dropped; the error says how
// many. Closing twice is harmless.
func (c *Client) Close() error { return c.events.close() }

// batcher buffers events and sends them in batches from one goroutine.
type batcher struct {
	c     *Client
	slots chan struct{} // one per buffered or in-flight event: the memory bound

	mu       sync.Mutex
	buf      []Event
	oldest   time.Time
	inflight int
	flushing int
	closing  bool
	changed  chan struct{} // closed and replaced on every change
	kick     chan struct{}
	stop     context.CancelFunc
	stopCtx  context.Context
	done     chan struct{}
	dropped  int
	once     sync.Once
}

func newBatcher(c *Client) *batcher {
	b := &batcher{c: c, slots: make(chan struct{}, c.batch.maxQueue), changed: make(chan struct{}), kick: make(chan struct{}, 1), done: make(chan struct{})}
	b.stopCtx, b.stop = context.WithCancel(context.Background())
	go b.run()
	return b
}

func (b *batcher) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *batcher) add(ctx context.Context, e Event) error {
	b.mu.Lock()
	closing := b.closing
	b.mu.Unlock()
	if closing {
		return ErrClosed
	}
	if b.c.batch.full == DropWhenFull {
		select {
		case b.slots <- struct{}{}:
		default:
			return ErrQueueFull
		}
	} else {
		select {
		case b.slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.done:
			return ErrClosed
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		<-b.slots
		return ErrClosed
	}
	if len(b.buf) == 0 {
		b.oldest = time.Now()
	}
	b.buf = append(b.buf, e)
	if len(b.buf) >= b.c.batch.size {
		b.notifyLocked()
	}
	return nil
}

func (b *batcher) flush(ctx context.Context) error {
	b.mu.Lock()
	b.flushing++
	b.notifyLocked()
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.flushing--
		b.mu.Unlock()
	}()
	for {
		b.mu.Lock()
		idle, ch := len(b.buf) == 0 && b.inflight == 0, b.changed
		b.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.done:
			return ErrClosed
		}
	}
}

func (b *batcher) close() error {
	b.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), b.c.batch.closeFor)
		defer cancel()
		_ = b.flush(ctx)
		b.mu.Lock()
		b.closing = true
		b.notifyLocked()
		b.mu.Unlock()
		b.stop() // an unfinished send gives up; what is left is dropped
		<-b.done
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Errorf("vigil: %d reported events could not be sent before Close", b.dropped)
	}
	return nil
}

// run is the sender: it sends a batch when one is full, when the oldest
// event has waited the linger, or when someone flushes.
func (b *batcher) run() {
	defer close(b.done)
	for {
		b.mu.Lock()
		n := len(b.buf)
		closing := b.closing
		due := n > 0 && (n >= b.c.batch.size || b.flushing > 0 || time.Since(b.oldest) >= b.c.batch.linger)
		wait := time.Duration(-1)
		if n > 0 && !due {
			wait = b.c.batch.linger - time.Since(b.oldest)
		}
		b.mu.Unlock()
		if closing {
			b.dropRest()
			return
		}
		if due {
			b.sendOne()
			continue
		}
		var t *time.Timer
		var tc <-chan time.Time
		if wait >= 0 {
			t = time.NewTimer(wait)
			tc = t.C
		}
		select {
		case <-b.kick:
		case <-tc:
		}
		if t != nil {
			t.Stop()
		}
	}
}

func (b *batcher) dropRest() {
	b.mu.Lock()
	n := len(b.buf)
	b.buf = nil
	b.dropped += n
	b.notifyLocked()
	b.mu.Unlock()
	b.release(n)
	if n > 0 && b.c.onError != nil {
		b.c.onError(fmt.Errorf("vigil: dropped %d events at Close", n))
	}
}

func (b *batcher) release(n int) {
	for range n {
		<-b.slots
	}
}

// batchResult is Vigil's answer to POST /v1/events/batch.
type batchResult struct {
	Results []struct {
		Index  int    `json:"index"`
		Status string `json:"status"`
		Error  *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"results"`
}

// sendOne sends the oldest batch until Vigil acknowledged it, retrying
// (same Idempotency-Key) while Vigil is unavailable; only Close stops it.
func (b *batcher) sendOne() {
	b.mu.Lock()
	n := min(len(b.buf), b.c.batch.size)
	batch := append([]Event(nil), b.buf[:n]...)
	b.buf = b.buf[n:]
	if len(b.buf) > 0 {
		b.oldest = time.Now() // the rest waits one linger more at most
	}
	b.inflight += n
	b.mu.Unlock()

	r := request{method: http.MethodPost, path: "/v1/events/batch", body: map[string]any{"events": batch}, idemKey: newID()}
	var retry []Event
	for pause := 0; ; pause++ {
		var res batchResult
		err := b.c.call(b.stopCtx, r, &res)
		if err == nil {
			for _, it := range res.Results {
				switch {
				case it.Status == "failed" && it.Index >= 0 && it.Index < len(batch):
					retry = append(retry, batch[it.Index]) // not stored in time: safe to resend
				case it.Status == "rejected" && b.c.onError != nil:
					msg := ""
					if it.Error != nil {
						msg = it.Error.Code + ": " + it.Error.Message
					}
					b.c.onError(fmt.Errorf("vigil: event %d of a batch rejected: %s", it.Index, msg))
				}
			}
			break
		}
		var ae *APIError
		if errors.As(err, &ae) {
			// Vigil refused the batch as a whole (bad key, too large…):
			// resending it cannot succeed.
			if b.c.onError != nil {
				b.c.onError(fmt.Errorf("vigil: batch of %d events refused: %w", len(batch), err))
			}
			break
		}
		if b.stopCtx.Err() != nil {
			b.mu.Lock()
			b.dropped += len(batch)
			b.mu.Unlock()
			if b.c.onError != nil {
				b.c.onError(fmt.Errorf("vigil: dropped %d events at Close: %w", len(batch), err))
			}
			break
		}
		// Unavailable or breaker open: wait and send the same batch again.
		d := b.c.delay(min(pause, 6), -1)
		if errors.Is(err, ErrBreakerOpen) {
			d = max(d, b.c.brk.cooldown/4)
		}
		_ = sleep(b.stopCtx, max(d, 10*time.Millisecond))
	}
	b.mu.Lock()
	b.inflight -= n
	if len(retry) > 0 {
		b.buf = append(retry, b.buf...)
		b.oldest = time.Now().Add(-b.c.batch.linger) // due at once
	}
	b.notifyLocked()
	b.mu.Unlock()
	b.release(n - len(retry))
}
