package ledger

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestDataWriteSizes holds each insert's size(i, col) equal to the length
// of the String value row(i) puts in col: the presizing of the first
// block trusts it (a wrong size changes only how much is allocated, but
// it would quietly bring back the growth it removes).
func TestDataWriteSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	str := func(max int) string { return strings.Repeat("x", rng.IntN(max+1)) }
	for round := range 20 {
		var leaves []*leafRow
		for i := range rng.IntN(50) {
			leaves = append(leaves, &leafRow{
				idx: uint64(i), key: "decision:" + str(40), kind: str(10), id: str(30), session: str(2) + str(20),
				trace: str(1) + str(32), leaf: make([]byte, 32), canonical: []byte(str(3000)), stream: str(8),
				seq: uint64(i), atMS: int64(i),
			})
		}
		tiles := map[tileID][]byte{}
		for i := range rng.IntN(10) {
			tiles[tileID{level: uint(i % 3), index: uint64(i)}] = make([]byte, 32*rng.IntN(257))
		}
		tenant := "t" + str(12)
		for _, w := range dataWrites(tenant, 7, leaves, tiles) {
			var r []any
			for i := range w.n {
				r = w.row(i, r[:0])
				if len(r) != len(w.table.Columns) {
					t.Fatalf("round %d %s row %d: %d values for %d columns", round, w.what, i, len(r), len(w.table.Columns))
				}
				for col, v := range r {
					want := -1
					switch v := v.(type) {
					case string:
						want = len(v)
					case []byte:
						want = len(v)
					}
					if got := w.size(i, col); want >= 0 && got != want {
						t.Fatalf("round %d %s row %d column %s: size %d, value %d bytes (%s)", round, w.what, i, w.table.Columns[col], got, want, fmt.Sprint(v)[:min(20, len(fmt.Sprint(v)))])
					}
				}
			}
		}
	}
}
