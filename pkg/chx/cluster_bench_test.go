package chx_test

import (
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
)

// BenchmarkClusterInsert compares one 5,000-row insert into a plain
// ReplacingMergeTree table on a lone server with the same insert through
// a Distributed table over a replicated one (synchronous, two replicas),
// on the same box in one run. One op is one batch.
func BenchmarkClusterInsert(b *testing.B) {
	fsys := fstest.MapFS{"0001.sql": sqlFile(`CREATE TABLE IF NOT EXISTS rows (
		tenant_id String, id String, at DateTime, payload String, seq UInt64
	) ENGINE = ReplacingMergeTree(seq) PARTITION BY toYYYYMM(at) ORDER BY (tenant_id, id)`)}
	c := chtest.StartCluster(b, 2)
	cluster := c.Open(b, c.NewDB(), 0)
	plain := chtest.New(b).Conn
	for name, conn := range map[string]driver.Conn{"plain": plain, "distributed": cluster} {
		if _, err := chx.Migrate(testCtx(b), conn, fsys, "bench"); err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			ctx := testCtx(b)
			now := time.Now()
			for i := 0; b.Loop(); i++ {
				batch, err := conn.PrepareBatch(ctx, "INSERT INTO rows (tenant_id, id, at, payload, seq)")
				if err != nil {
					b.Fatal(err)
				}
				for j := range 5000 {
					if err := batch.Append("t1", fmt.Sprintf("%d-%d", i, j), now, `{"tool":"search","n":42}`, uint64(j)); err != nil {
						b.Fatal(err)
					}
				}
				if err := batch.Send(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*5000)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
