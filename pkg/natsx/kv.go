package natsx

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsistentKeyValue creates or updates the bucket cfg describes and opens
// it. On a NATS cluster (cfg.Replicas > 1) its reads are served by the
// stream's leader rather than by any replica (direct get): a write or
// delete acknowledged through one process is what the next read from any
// other sees, where a follower could still be applying it. A
// single-replica bucket has one server, which answers direct gets
// consistently and faster (docs/benchmarks.md).
func ConsistentKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
		return nil, fmt.Errorf("%s bucket: %w", cfg.Bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("%s bucket: %w", cfg.Bucket, err)
	}
	if sc := st.CachedInfo().Config; sc.AllowDirect && cfg.Replicas > 1 {
		sc.AllowDirect = false
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("%s bucket: read from the leader: %w", cfg.Bucket, err)
		}
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("%s bucket: %w", cfg.Bucket, err)
	}
	return kv, nil
}
