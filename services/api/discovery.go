package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/streams"
)

// discovery registers every agent that appears in an event without having
// been registered, so that agents show up in the registry however they
// report. It reads only the subject (tenant and agent are tokens of it),
// never the event body, so it keeps up with ingest cheaply.
type discovery struct {
	catalog *control.Catalog
	store   *control.Store
	log     *slog.Logger
	found   prometheus.Counter
	// maxAgents caps a tenant's agents (0: no cap); refused counts the
	// agents not registered because of it.
	maxAgents int
	refused   prometheus.Counter

	mu   sync.Mutex
	seen map[string]struct{}
	// warned is when each tenant's cap was last logged: a flood of new
	// ids logs once a minute, not once an event.
	warned map[string]time.Time
}

const maxSeen = 100000

func newDiscovery(catalog *control.Catalog, store *control.Store, maxAgents int, log *slog.Logger, reg prometheus.Registerer) (*discovery, error) {
	d := &discovery{catalog: catalog, store: store, log: log, seen: map[string]struct{}{}, warned: map[string]time.Time{}, maxAgents: maxAgents,
		found: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_agents_discovered_total", Help: "Agents registered automatically on their first event.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_agents_discovery_refused_total", Help: "Agents seen in events but not registered: their tenant is at its agent cap.",
		})}
	for _, c := range []prometheus.Collector{d.found, d.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("discovery metrics: %w", err)
		}
	}
	return d, nil
}

func discoveryConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: AgentDiscovery, Description: "INGEST events → register unknown agents on CONTROL",
		FilterSubject: streams.AllEventsReceived, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 10000,
	}
}

// parseSubject splits ingest.v1.event_received.<tenant>.<agent>.
func parseSubject(subj string) (tenant, agentID string, ok bool) {
	parts := strings.Split(subj, ".")
	if len(parts) != 5 {
		return "", "", false
	}
	id, err := streams.Untoken(parts[4])
	if err != nil {
		return "", "", false
	}
	return parts[3], id, true
}

func (d *discovery) run(ctx context.Context, cons jetstream.Consumer) error {
	cc, err := cons.Consume(func(m jetstream.Msg) { d.handle(ctx, m) }, jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("discovery: consume: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (d *discovery) handle(ctx context.Context, m jetstream.Msg) {
	tenant, id, ok := parseSubject(m.Subject())
	if !ok {
		_ = m.TermWithReason("unexpected subject")
		return
	}
	key := tenant + "\x00" + id
	d.mu.Lock()
	_, seen := d.seen[key]
	d.mu.Unlock()
	if seen || d.catalog.HasAgent(tenant, id) {
		_ = m.Ack()
		return
	}
	if d.maxAgents > 0 && d.catalog.AgentCount(tenant) >= d.maxAgents {
		// The event stays recorded; only the registry entry is refused.
		// Not remembered as seen, so the agent's next event registers it
		// once the tenant is below its cap again.
		d.refused.Inc()
		d.mu.Lock()
		warn := time.Since(d.warned[tenant]) > time.Minute
		if warn {
			if len(d.warned) >= maxSeen {
				clear(d.warned)
			}
			d.warned[tenant] = time.Now()
		}
		d.mu.Unlock()
		if warn {
			d.log.Warn("agents not discovered: tenant at its agent cap (vigil_agents_discovery_refused_total counts them)",
				slog.String("tenant", tenant), slog.String("agent", id), slog.Int("cap", d.maxAgents))
		}
		_ = m.Ack()
		return
	}
	at := time.Now().UTC()
	if meta, err := m.Metadata(); err == nil {
		at = meta.Timestamp.UTC()
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	seq, err := d.store.PutAgent(pctx, agent.Change{Op: agent.OpDiscovered, Tenant: tenant, Agent: agent.Discovered(id, at), At: at}, 0)
	if err == nil && d.maxAgents > 0 {
		// Count this agent before the next message is judged against the
		// cap (a batch of new ids arrives back to back).
		err = d.catalog.WaitFor(pctx, seq)
	}
	switch {
	case err == nil:
		d.found.Inc()
		d.log.Info("agent discovered", slog.String("tenant", tenant), slog.String("agent", id))
	case errors.Is(err, control.ErrConflict):
		// Registered meanwhile, by a person or another replica.
	default:
		d.log.Warn("discovery: register failed; will retry", slog.String("error", err.Error()))
		_ = m.NakWithDelay(time.Second)
		return
	}
	d.mu.Lock()
	if len(d.seen) >= maxSeen {
		clear(d.seen)
	}
	d.seen[key] = struct{}{}
	d.mu.Unlock()
	_ = m.Ack()
}
