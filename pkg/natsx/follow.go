package natsx

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Follow feeds every message of stream matching filters, from the first,
// to apply in order (an ordered consumer: no acks, recreated after any
// gap), until ctx ends. It returns once consuming has started; in-memory
// projections (the CONTROL catalog, the approval board, the channel
// registry) are built on it.
func Follow(ctx context.Context, js jetstream.JetStream, stream string, filters []string, apply jetstream.MessageHandler) (jetstream.Consumer, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", stream, err)
	}
	cc, err := cons.Consume(apply)
	if err != nil {
		return nil, fmt.Errorf("follow %s: consume: %w", stream, err)
	}
	go func() {
		<-ctx.Done()
		cc.Stop()
	}()
	return cons, nil
}
