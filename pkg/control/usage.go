package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// UsageBucket is the JetStream KV bucket holding each key's last use, so
// every instance's listing shows the same "last used".
const UsageBucket = "key_usage"

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

// Usage flushes the catalog's key uses to the UsageBucket and reads them
// back for listings.
type Usage struct {
	kv  jetstream.KeyValue
	cat *Catalog
	log *slog.Logger
}

// OpenUsage creates or opens the usage bucket.
func OpenUsage(ctx context.Context, js jetstream.JetStream, cat *Catalog, replicas int, log *slog.Logger) (*Usage, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: UsageBucket, Description: "Last use of each API key", History: 1, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("key usage bucket: %w", err)
	}
	return &Usage{kv: kv, cat: cat, log: log}, nil
}

// Run flushes uses every interval until ctx ends, and once more then.
func (u *Usage) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			u.Flush(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			u.Flush(ctx)
		}
	}
}

// Flush writes the uses noted since the last flush.
func (u *Usage) Flush(ctx context.Context) {
	for id, at := range u.cat.drainUsage() {
		if _, err := u.kv.Put(ctx, id, []byte(strconv.FormatInt(at.UnixMilli(), 10))); err != nil {
			u.log.Warn("key usage: flush", slog.String("key", id), slog.String("error", err.Error()))
		}
	}
}

// LastUsed returns when key id was last used, or nil if never (as far as
// flushed uses tell).
func (u *Usage) LastUsed(ctx context.Context, id string) (*time.Time, error) {
	e, err := u.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ms, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return nil, nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t, nil
}
