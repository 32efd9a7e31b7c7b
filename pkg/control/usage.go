package control

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/streams"
)

// UsageBucket is the JetStream KV bucket holding each key's last use, so
// every instance's listing shows the same "last used".
const UsageBucket = streams.KeyUsageBucket

// usage remembers when keys were last used in this process. Writing to
// the stream on every request would cost a round trip per call; instead
// uses are noted in memory and flushed every few seconds.
type usage struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// noteUse records that key id authenticated at now.
func (c *Catalog) noteUse(id string, now time.Time) {
	c.usage.mu.Lock()
	if c.usage.seen == nil {
		c.usage.seen = map[string]time.Time{}
	}
	c.usage.seen[id] = now
	c.usage.mu.Unlock()
}

func (c *Catalog) drainUsage() map[string]time.Time {
	c.usage.mu.Lock()
	defer c.usage.mu.Unlock()
	out := c.usage.seen
	c.usage.seen = nil
	return out
}

// Usage flushes the catalog's key uses to the UsageBucket and watches the
// bucket, so a listing reads every instance's uses from memory.
type Usage struct {
	kv  jetstream.KeyValue
	cat *Catalog
	log *slog.Logger

	mu   sync.RWMutex
	last map[string]time.Time
}

// OpenUsage creates or opens the usage bucket.
func OpenUsage(ctx context.Context, js jetstream.JetStream, cat *Catalog, replicas int, log *slog.Logger) (*Usage, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: UsageBucket, Description: "Last use of each API key", History: 1, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("key usage bucket: %w", err)
	}
	return &Usage{kv: kv, cat: cat, log: log, last: map[string]time.Time{}}, nil
}

// Run flushes uses every interval and follows the bucket until ctx ends,
// then flushes once more.
func (u *Usage) Run(ctx context.Context, every time.Duration) error {
	w, err := u.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("key usage: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			u.Flush(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			u.Flush(ctx)
		case e := <-w.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // nil marks the end of the initial values
			}
			if ms, err := strconv.ParseInt(string(e.Value()), 10, 64); err == nil {
				u.remember(e.Key(), time.UnixMilli(ms).UTC())
			}
		}
	}
}

func (u *Usage) remember(id string, at time.Time) {
	u.mu.Lock()
	if at.After(u.last[id]) {
		u.last[id] = at
	}
	u.mu.Unlock()
}

// Flush writes the uses noted since the last flush.
func (u *Usage) Flush(ctx context.Context) {
	for id, at := range u.cat.drainUsage() {
		u.remember(id, at)
		if _, err := u.kv.Put(ctx, id, []byte(strconv.FormatInt(at.UnixMilli(), 10))); err != nil {
			u.log.Warn("key usage: flush", slog.String("key", id), slog.String("error", err.Error()))
		}
	}
}

// LastUsed returns when key id was last used, or nil if never (as far as
// flushed uses tell).
func (u *Usage) LastUsed(id string) *time.Time {
	u.mu.RLock()
	defer u.mu.RUnlock()
	t, ok := u.last[id]
	if !ok {
		return nil
	}
	return &t
}

// UsageComponent flushes the catalog's key uses for a process that does
// not list keys (ingest): it opens the usage bucket when provisioning and
// flushes every 5 s as a worker.
func UsageComponent(js jetstream.JetStream, cat *Catalog, replicas int, log *slog.Logger) daemon.Component {
	var u *Usage
	return daemon.Component{
		Name: "key-usage",
		Provision: func(ctx context.Context) (err error) {
			u, err = OpenUsage(ctx, js, cat, replicas, log)
			return err
		},
		Workers: []daemon.Worker{func(ctx context.Context) error { return u.Run(ctx, 5*time.Second) }},
	}
}
