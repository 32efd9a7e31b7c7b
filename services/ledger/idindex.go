package ledger

import (
	"hash/maphash"
	"strings"
	"sync"

	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// idIndexGeneration bounds one generation of the record-id index: two
// generations (at most 2×2²⁰ entries, ~24 bytes each in the map, ~50 MiB)
// are kept, so memory stays bounded however long the logs grow.
const idIndexGeneration = 1 << 20

// idIndex maps a tenant's record key ("event:<id>", "decision:<id>") to
// its leaf index, so that a proof by record id needs no ClickHouse read:
// with the tiles in memory it is served from memory alone. It holds only
// what this process knows to be committed — keys of batches it committed
// itself, and keys a ClickHouse lookup verified against their leaf — so
// a lookup row left by a crashed batch is never trusted. Keys are
// 128-bit keyed hashes of tenant and key (random seeds per process, so
// no one can aim for a collision; by chance one is ~2⁻⁸⁸ at 2²¹ keys).
// When a generation fills, the older one is dropped: recent records stay
// served from memory, older ones fall back to the ClickHouse lookup.
type idIndex struct {
	seeds     [2]maphash.Seed
	mu        sync.RWMutex
	cur, prev map[[2]uint64]uint64
	limit     int
}

func newIDIndex(limit int) *idIndex {
	return &idIndex{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, cur: map[[2]uint64]uint64{}, limit: limit}
}

func (x *idIndex) hash(tenant, key string) [2]uint64 {
	h := func(seed maphash.Seed) uint64 {
		var m maphash.Hash
		m.SetSeed(seed)
		m.WriteString(tenant)
		m.WriteByte(0)
		m.WriteString(key)
		return m.Sum64()
	}
	return [2]uint64{h(x.seeds[0]), h(x.seeds[1])}
}

// add files committed leaves of tenant under their record keys.
func (x *idIndex) add(tenant string, rows []*leafRow) {
	type entry struct {
		h   [2]uint64
		idx uint64
	}
	es := make([]entry, 0, len(rows))
	for _, r := range rows {
		// Only ids a proof by record id asks for: control and approval
		// records are proven through their session or by index.
		if strings.HasPrefix(r.key, evidence.KindEvent+":") || strings.HasPrefix(r.key, evidence.KindDecision+":") {
			es = append(es, entry{x.hash(tenant, r.key), r.idx})
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range es {
		if len(x.cur) >= x.limit {
			x.prev, x.cur = x.cur, make(map[[2]uint64]uint64, len(x.cur))
		}
		x.cur[e.h] = e.idx
	}
}

// get returns the leaf index of tenant's record key, if known.
func (x *idIndex) get(tenant, key string) (uint64, bool) {
	h := x.hash(tenant, key)
	x.mu.RLock()
	defer x.mu.RUnlock()
	if i, ok := x.cur[h]; ok {
		return i, true
	}
	i, ok := x.prev[h]
	return i, ok
}

// reset drops every entry (tests and benchmarks: what a restart loses).
func (x *idIndex) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.cur, x.prev = map[[2]uint64]uint64{}, nil
}
