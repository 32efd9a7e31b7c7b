package mcpgate

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Event categories the gateway reports (POST /v1/events/batch).
const (
	// CategoryToolCall: a tools/call and what Vigil decided on it.
	CategoryToolCall = "mcp.tool_call"
	// CategoryToolResult: the (redacted) result the model received.
	CategoryToolResult = "mcp.tool_result"
	// CategoryToolReview: tool definitions the gateway held back and the
	// review it asked for.
	CategoryToolReview = "mcp.tool_review"
)

// reporter sends the gateway's events to Vigil in the background, in
// batches, so that reporting adds nothing to a call's latency. A full
// queue makes the caller wait (nothing is dropped); a batch Vigil does not
// store is retried, and given up (logged) only at shutdown.
type reporter struct {
	v       *vigil
	log     *slog.Logger
	agentID string
	session string
	queue   chan map[string]any
	done    chan struct{}
	stop    context.CancelFunc
	// mu guards closed: report holds it shared while it queues, close
	// exclusively while it closes the queue.
	mu     sync.RWMutex
	closed bool
}

// reportBatch and reportLinger shape the batches: up to reportBatch
// events, or what arrived within reportLinger of the first.
const (
	reportBatch  = 100
	reportLinger = 50 * time.Millisecond
	reportQueue  = 4096
)

func newReporter(v *vigil, log *slog.Logger, agentID, session string) *reporter {
	ctx, stop := context.WithCancel(context.Background())
	r := &reporter{v: v, log: log, agentID: agentID, session: session, queue: make(chan map[string]any, reportQueue), done: make(chan struct{}), stop: stop}
	go r.run(ctx)
	return r
}

// report queues one event; it waits while the queue is full, until ctx
// ends.
func (r *reporter) report(ctx context.Context, category string, payload map[string]any) {
	e := map[string]any{
		"eventId": newUUID(), "sessionId": r.session, "sourceTimestamp": time.Now().UTC().Format(time.RFC3339Nano),
		"category": category, "schemaVersion": "1.0", "payload": payload,
	}
	if r.agentID != "" {
		e["agentId"] = r.agentID
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		r.log.Error("mcp gateway: event after close not reported", slog.String("category", category))
		return
	}
	select {
	case r.queue <- e:
	case <-ctx.Done():
		r.log.Error("mcp gateway: event not reported", slog.String("category", category), slog.String("error", ctx.Err().Error()))
	}
}

func (r *reporter) run(ctx context.Context) {
	defer close(r.done)
	var batch []map[string]any
	var linger <-chan time.Time
	flush := func() {
		r.send(ctx, batch)
		batch, linger = nil, nil
	}
	for {
		select {
		case e, ok := <-r.queue:
			if !ok {
				if len(batch) > 0 {
					flush()
				}
				return
			}
			batch = append(batch, e)
			if len(batch) == 1 {
				linger = time.After(reportLinger)
			}
			if len(batch) >= reportBatch {
				flush()
			}
		case <-linger:
			flush()
		}
	}
}

// send posts a batch, retrying while Vigil cannot store it. After close
// began (ctx ended) it tries once more and then logs what it gives up.
func (r *reporter) send(ctx context.Context, batch []map[string]any) {
	backoff := 100 * time.Millisecond
	for {
		err := r.v.postEvents(context.WithoutCancel(ctx), batch)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrVigilUnavailable) || ctx.Err() != nil {
			r.log.Error("mcp gateway: events not reported", slog.Int("events", len(batch)), slog.String("error", err.Error()))
			return
		}
		r.log.Warn("mcp gateway: reporting events failed; retrying", slog.String("error", err.Error()))
		if sleep(ctx, backoff) != nil {
			continue // one last try, then give up above
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// close sends what is queued and stops. Sends still failing when ctx
// ends are given up (and logged).
func (r *reporter) close(ctx context.Context) {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		r.stop()
		<-r.done
	}
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
