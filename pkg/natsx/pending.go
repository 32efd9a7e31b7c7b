package natsx

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// PendingMetric is the name of the consumer-lag gauge: per durable
// consumer, the messages of its stream (matching its filter) not yet
// delivered to it. deploy/observability's alerts and dashboard read it.
const PendingMetric = "vigil_consumer_pending_messages"

// Pending tracks one durable consumer's lag from the messages it is
// delivered: each carries the server's count of the messages still
// pending after it (jetstream.MsgMetadata.NumPending), so the gauge costs
// no request to the server. It is as fresh as the last delivery: a
// consumer that has caught up reads 0, one that stopped being delivered
// to keeps its last value (and a dead process loses its series, which
// `up` shows).
type Pending struct{ g prometheus.Gauge }

// NewPending registers the gauge of consumer on reg. Registering the same
// consumer again (a component restarted in the same process) reuses the
// gauge already registered.
func NewPending(reg prometheus.Registerer, consumer string) (Pending, error) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        PendingMetric,
		Help:        "Messages of the consumer's stream not yet delivered to it (its lag), as of its last delivery.",
		ConstLabels: prometheus.Labels{"consumer": consumer},
	})
	if err := reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return Pending{}, fmt.Errorf("natsx: %s{consumer=%q}: %w", PendingMetric, consumer, err)
		}
		g = are.ExistingCollector.(prometheus.Gauge)
	}
	return Pending{g: g}, nil
}

// Observe records the lag a delivered message reports.
func (p Pending) Observe(m jetstream.Msg) {
	if p.g == nil {
		return
	}
	if md, err := m.Metadata(); err == nil {
		p.g.Set(float64(md.NumPending))
	}
}

// ObserveMetadata is Observe for a consumer that parsed the message's
// metadata already (each Metadata call parses the reply subject anew).
func (p Pending) ObserveMetadata(md *jetstream.MsgMetadata) {
	if p.g != nil && md != nil {
		p.g.Set(float64(md.NumPending))
	}
}

// Gauge is the registered gauge (tests read it).
func (p Pending) Gauge() prometheus.Gauge { return p.g }
