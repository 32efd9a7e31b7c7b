package risk

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/streams"
)

// A partition reads POLICY in one of two modes, switched by how far
// behind it is.
//
//   - At the tail it reads its own shards only (streams.DecisionsOfPartition):
//     the server delivers it none of the other partitions' decisions.
//   - Far behind (a rebuild from the start of POLICY, a backlog) it reads
//     every decision (streams.AllDecisions) and passes over the others'.
//     nats-server finds a multi-filter consumer's next message by
//     intersecting the block's subjects with the filters whenever the
//     consumer is further behind than the block has subjects, and looks
//     up the first message of every matching subject each time: per
//     message delivered, a cost that grows with the agents in the block
//     (a rebuild of 50,000 decisions of 200 agents ran at a third of the
//     single-filter rate: BenchmarkConsume). With the one filter that
//     almost every message matches, the rebuild runs at its former rate.
//
// The modes switch with hysteresis (reading its own shards, a partition
// is about N times as far behind as its own pending count says); the new
// consumer starts right after the last decision folded in, so nothing is
// read twice or skipped.
const (
	// tailLag: reading every decision, switch to the own shards once
	// fewer than this many decisions are pending.
	tailLag = 500
	// catchUpLag: reading the own shards, switch to every decision once
	// more than this many of the partition's own are pending.
	catchUpLag = 1000
)

// reader is a partition's consumer of POLICY's decisions.
type reader struct {
	p   *partition
	ctx context.Context
	// split is false when the partition's filters are AllDecisions anyway
	// (a partition count coprime with the shard count): one mode only.
	split bool

	// switchTo asks the partition's run loop to switch modes (true: own
	// shards only).
	switchTo chan bool
	current  atomic.Value // jetstream.Consumer: what waitFolded asks
	owned    prometheus.Gauge

	mu       sync.Mutex // held while a decision is folded in
	gen      uint64     // a handler of another generation is stale
	last     uint64     // last POLICY sequence folded in
	ownOnly  bool
	consumer jetstream.ConsumeContext
}

func newReader(ctx context.Context, p *partition) *reader {
	return &reader{p: p, ctx: ctx, split: len(streams.DecisionsOfPartition(p.idx, p.n)) > 1, switchTo: make(chan bool, 1), owned: p.svc.ownShards}
}

// start begins reading from POLICY's first decision: every decision, or
// its own shards only when fewer than tailLag decisions are on POLICY. It
// returns the info of the consumer it reads with.
func (r *reader) start() (*jetstream.ConsumerInfo, error) {
	c, err := r.restart(false)
	if err != nil {
		return nil, err
	}
	info, err := c.Info(r.ctx)
	if err != nil {
		return nil, fmt.Errorf("risk decisions: %w", err)
	}
	if !r.split || info.NumPending >= tailLag {
		return info, nil
	}
	if c, err = r.restart(true); err != nil {
		return nil, err
	}
	if info, err = c.Info(r.ctx); err != nil {
		return nil, fmt.Errorf("risk decisions: %w", err)
	}
	return info, nil
}

// switchMode restarts the reader in the mode asked unless it is in it.
func (r *reader) switchMode(ownOnly bool) error {
	r.mu.Lock()
	same := r.ownOnly == (ownOnly && r.split)
	r.mu.Unlock()
	if same {
		return nil
	}
	_, err := r.restart(ownOnly)
	return err
}

// restart stops the current consumer and reads on from the decision after
// the last folded in, in the given mode.
func (r *reader) restart(ownOnly bool) (jetstream.Consumer, error) {
	ownOnly = ownOnly && r.split
	r.stop()
	// stop moved the generation on, so the old consumer's deliveries no
	// longer advance r.last.
	r.mu.Lock()
	gen, from := r.gen, r.last+1
	r.mu.Unlock()
	filters := []string{streams.AllDecisions}
	if ownOnly {
		filters = streams.DecisionsOfPartition(r.p.idx, r.p.n)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	c, err := r.p.svc.deps.JS.OrderedConsumer(r.ctx, streams.Policy, cfg)
	if err != nil {
		return nil, fmt.Errorf("risk decisions: %w", err)
	}
	r.current.Store(c)
	cc, err := c.Consume(func(m jetstream.Msg) { r.handle(gen, m) }, jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("risk decisions: %w", err)
	}
	r.mu.Lock()
	r.consumer, r.ownOnly = cc, ownOnly
	r.mu.Unlock()
	if ownOnly {
		r.owned.Inc()
	}
	return c, nil
}

// stop ends the current consumer; deliveries already in flight are dropped
// by their generation.
func (r *reader) stop() {
	r.mu.Lock()
	r.gen++
	cc, was := r.consumer, r.ownOnly
	r.consumer, r.ownOnly = nil, false
	r.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
	if was {
		r.owned.Dec()
	}
}

func (r *reader) handle(gen uint64, m jetstream.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen != r.gen {
		return // a consumer being replaced: its successor reads this on
	}
	seq, pending, ok := r.p.onDecision(r.ctx, m)
	if !ok {
		return
	}
	r.last = seq
	if !r.split {
		return
	}
	switch {
	case !r.ownOnly && pending < tailLag:
		r.ask(true)
	case r.ownOnly && pending > catchUpLag:
		r.ask(false)
	}
}

// ask requests a switch without blocking; one pending request is enough.
func (r *reader) ask(ownOnly bool) {
	select {
	case r.switchTo <- ownOnly:
	default:
	}
}

// info is the current consumer's info.
func (r *reader) info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c, _ := r.current.Load().(jetstream.Consumer)
	if c == nil {
		return nil, fmt.Errorf("risk decisions: no consumer yet")
	}
	return c.Info(ctx)
}
