package ledger

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// newService is a ledger without consumers, for driving integration
// directly.
func newService(t testing.TB, db *chtest.DB) *Service {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Seed = testSeed
	js := natstest.Start(t).JS
	svc, err := New(cfg, Deps{JS: js, CH: db.Conn, Log: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := svc.EnsureStreams(context.Background()); err != nil {
		t.Fatal(err)
	}
	return svc
}

// synthetic builds n control records starting at id from.
func synthetic(t testing.TB, tenant string, from, n int) []pending {
	t.Helper()
	out := make([]pending, n)
	for i := range out {
		env := evidence.Envelope{Kind: evidence.KindControl, Tenant: tenant, ID: fmt.Sprint(from + i), Session: fmt.Sprintf("s-%d", (from+i)%7),
			Record: []byte(fmt.Sprintf(`{"change":{"n":%d},"subject":"control.v1.test.%s.x"}`, from+i, tenant))}
		c, err := env.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = pending{tenant: env.Tenant, rank: 2, row: leafRow{key: env.Key(), kind: env.Kind, id: env.ID, session: env.Session, canonical: c, leaf: evidence.LeafHash(c), stream: "CONTROL", seq: uint64(from + i + 1)}}
	}
	return out
}

// reference is an independent in-memory tree over the same leaves.
type reference struct{ leaves [][]byte }

func (r *reference) add(ps []pending) {
	for _, p := range ps {
		r.leaves = append(r.leaves, p.row.leaf)
	}
}

func (r *reference) root(size uint64) []byte {
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for _, l := range r.leaves[:size] {
		_ = rng.Append(l, nil)
	}
	h, _ := rng.GetRootHash(nil)
	return h
}

func TestTiledProofsAcrossTileBoundaries(t *testing.T) {
	db := chtest.New(t)
	svc := newService(t, db)
	ctx := testCtx(t)
	var ref reference
	var sizes []uint64
	next := 0
	// Batch sizes chosen to end on, just before and just after tile
	// boundaries at levels 0 and 1 (256 and 65536 leaves).
	for _, n := range []int{1, 254, 1, 1, 300, 65536 - 557, 1, 2000, 3} {
		ps := synthetic(t, "acme", next, n)
		if err := svc.appendTenant(ctx, "acme", ps, time.Now()); err != nil {
			t.Fatal(err)
		}
		ref.add(ps)
		next += n
		sizes = append(sizes, uint64(next))
	}
	check := func(svc *Service) {
		t.Helper()
		cp, err := svc.LatestCheckpoint(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		size := cp.TreeSize
		if size != uint64(len(ref.leaves)) {
			t.Fatalf("size %d, want %d", size, len(ref.leaves))
		}
		root := ref.root(size)
		if cp.RootHash != evidence.HashString(root) {
			t.Fatalf("root %s differs from the reference tree's %x", cp.RootHash, root)
		}
		idxs := []uint64{0, 1, 255, 256, 257, 65535, 65536, size - 1}
		for range 40 {
			idxs = append(idxs, rand.Uint64N(size))
		}
		for _, i := range idxs {
			p, st, err := svc.InclusionProof(ctx, "acme", i)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, st.size, ref.leaves[i], p, root); err != nil {
				t.Fatalf("inclusion of %d in %d: %v", i, size, err)
			}
		}
		for _, from := range sizes {
			c, err := svc.ConsistencyProof(ctx, "acme", from, 0)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := evidence.DecodeProof(c.Proof)
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, from, size, p, ref.root(from), root); err != nil {
				t.Fatalf("consistency %d → %d: %v", from, size, err)
			}
		}
	}
	check(svc)

	// A restarted ledger loads its right edge from the tiles and keeps
	// extending the same tree.
	svc2 := newService(t, db)
	ps := synthetic(t, "acme", next, 700)
	if err := svc2.appendTenant(ctx, "acme", ps, time.Now()); err != nil {
		t.Fatal(err)
	}
	ref.add(ps)
	next += 700
	check(svc2)
	// Batches larger than an insert block (insertBlock rows) went in as
	// several blocks of one INSERT: every leaf and lookup row landed once,
	// with the leaf hash of its record (SHA-256 of 0x00 and the record
	// digest).
	rows, err := db.Conn.Query(ctx, "SELECT count(), uniqExact(idx), max(idx), countIf(leaf_hash != lower(hex(SHA256(concat(unhex('00'), SHA256(canonical)))))) FROM ledger_leaves WHERE tenant_id = 'acme'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n, uniq, maxIdx, badHash uint64
	if !rows.Next() || rows.Scan(&n, &uniq, &maxIdx, &badHash) != nil {
		t.Fatalf("count leaves: %v", rows.Err())
	}
	if n != uint64(next) || uniq != n || maxIdx != n-1 || badHash != 0 {
		t.Fatalf("ledger_leaves: %d rows, %d indices, max %d, %d bad hashes; want %d leaves once each", n, uniq, maxIdx, badHash, next)
	}
	var keys uint64
	if err := db.Conn.QueryRow(ctx, "SELECT uniqExact(lookup_key) FROM ledger_lookup WHERE tenant_id = 'acme' AND lookup_key NOT LIKE 'session:%'").Scan(&keys); err != nil || keys != uint64(next) {
		t.Fatalf("ledger_lookup: %d record keys (%v), want %d", keys, err, next)
	}
}

func TestCrashedBatchLeftoversAreIgnored(t *testing.T) {
	db := chtest.New(t)
	svc := newService(t, db)
	ctx := testCtx(t)
	var ref reference
	first := synthetic(t, "acme", 0, 100)
	if err := svc.appendTenant(ctx, "acme", first, time.Now()); err != nil {
		t.Fatal(err)
	}
	ref.add(first)

	// A batch that wrote leaves, lookups and tiles, then died before its
	// checkpoint: records 100..149 at indices 100..149, plus garbage
	// tiles.
	crashed := synthetic(t, "acme", 100, 50)
	crashedState, _ := svc.logs["acme"].clone()
	var hashes [][]byte
	rows := make([]leafRow, len(crashed))
	for i, p := range crashed {
		p.row.idx = 100 + uint64(i)
		rows[i], hashes = p.row, append(hashes, p.row.leaf)
	}
	tiles, _, err := crashedState.appendLeaves(hashes)
	if err != nil {
		t.Fatal(err)
	}
	// What the crashed batch wrote past the committed prefix is replaced
	// by garbage (as if its leaves had been other records).
	for id, h := range tiles {
		committed := int(100>>(id.level*TileHeight)) - int(id.index*TileWidth)
		keep := max(0, committed) * hashSize
		tiles[id] = append(bytes.Clone(h[:keep]), bytes.Repeat([]byte{0xee}, len(h)-keep)...)
	}
	s := store{ch: db.Conn}
	if err := s.insert(ctx, readmodel.LedgerLeaves, leafRows("acme", rows, uint64(time.Now().UnixNano()))); err != nil {
		t.Fatal(err)
	}
	var krows, trows [][]any
	for _, r := range rows {
		krows = append(krows, []any{"acme", r.key, r.idx, uint64(time.Now().UnixNano())})
	}
	for id, h := range tiles {
		trows = append(trows, []any{"acme", uint8(id.level), id.index, string(h), uint64(time.Now().UnixNano())})
	}
	if err := s.insert(ctx, readmodel.LedgerLookup, krows); err != nil {
		t.Fatal(err)
	}
	if err := s.insert(ctx, readmodel.LedgerTiles, trows); err != nil {
		t.Fatal(err)
	}

	// The restarted ledger sees size 100; the crashed batch's records
	// arrive again, in a different order, after 20 other records.
	svc2 := newService(t, db)
	if l, err := svc2.Lineage(ctx, "acme", "s-3"); err != nil || len(l.Records) != len(idxsOfSession(first, "s-3")) {
		t.Fatalf("session s-3 before replay: %v, %d records", err, len(l.Records))
	}
	other := synthetic(t, "acme", 1000, 20)
	if err := svc2.appendTenant(ctx, "acme", other, time.Now()); err != nil {
		t.Fatal(err)
	}
	ref.add(other)
	for i, j := 0, len(crashed)-1; i < j; i, j = i+1, j-1 {
		crashed[i], crashed[j] = crashed[j], crashed[i]
	}
	// Same stream rank and descending sequences: appendTenant sorts them
	// back by sequence.
	if err := svc2.appendTenant(ctx, "acme", crashed, time.Now()); err != nil {
		t.Fatal(err)
	}
	// They were appended in sequence order.
	slices.SortFunc(crashed, func(a, b pending) int { return cmpU64(a.row.seq, b.row.seq) })
	ref.add(crashed)
	cp, _ := svc2.LatestCheckpoint(ctx, "acme")
	if cp.TreeSize != 170 || cp.RootHash != evidence.HashString(ref.root(170)) {
		t.Fatalf("after replay: size %d root %s, want 170 %x", cp.TreeSize, cp.RootHash, ref.root(170))
	}
	root := ref.root(170)
	for i := range uint64(170) {
		p, st, err := svc2.InclusionProof(ctx, "acme", i)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, st.size, ref.leaves[i], p, root); err != nil {
			t.Fatalf("inclusion of %d: %v", i, err)
		}
	}
	// Each record is found at its committed index only (the crashed
	// batch's lookup rows point elsewhere).
	l, err := svc2.Lineage(ctx, "acme", "s-3")
	if err != nil {
		t.Fatal(err)
	}
	want := len(idxsOfSession(first, "s-3")) + len(idxsOfSession(other, "s-3")) + len(idxsOfSession(crashed, "s-3"))
	if len(l.Records) != want {
		t.Fatalf("session s-3 has %d records, want %d", len(l.Records), want)
	}
	checkLineage(t, svc2, "acme", l)
	// Replaying everything again appends nothing.
	if err := svc2.appendTenant(ctx, "acme", append(append(first, other...), crashed...), time.Now()); err != nil {
		t.Fatal(err)
	}
	if cp, _ := svc2.LatestCheckpoint(ctx, "acme"); cp.TreeSize != 170 {
		t.Fatalf("replay appended: size %d", cp.TreeSize)
	}
}

func idxsOfSession(ps []pending, s string) []int {
	var out []int
	for i, p := range ps {
		if p.row.session == s {
			out = append(out, i)
		}
	}
	return out
}

func leafRows(tenant string, rows []leafRow, version uint64) [][]any {
	out := make([][]any, len(rows))
	for i, l := range rows {
		out[i] = []any{tenant, l.idx, l.key, l.kind, l.id, l.session, leafHashOf(l.canonical), string(l.canonical), l.stream, l.seq, l.atMS, version}
	}
	return out
}

// A complete tile's upper nodes, read instead of recomputed, are the
// nodes recomputed from its hashes.
func TestTileUpperNodes(t *testing.T) {
	tile := make([]byte, fullTileLen)
	for i := range TileWidth {
		copy(tile[i*hashSize:], evidence.LeafHash([]byte(fmt.Sprint(i))))
	}
	up := withUpper(tile, nil)
	if len(up) != fullTileLen+upperLen || !bytes.Equal(up[:fullTileLen], tile) {
		t.Fatalf("withUpper: %d bytes", len(up))
	}
	if part := withUpper(tile[:fullTileLen-hashSize], nil); len(part) != fullTileLen-hashSize {
		t.Fatalf("a partial tile got upper nodes")
	}
	for tileIdx := range uint64(3) {
		for r := uint(0); r < TileHeight; r++ {
			for i := range uint64(TileWidth >> r) {
				id := compact.NewNodeID(r+TileHeight, tileIdx*(TileWidth>>r)+i) // a node of a level-1 tile
				want, err := nodeHash(id, tile)
				if err != nil {
					t.Fatal(err)
				}
				got, err := nodeHash(id, up)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("node %d/%d: %x, want %x (%v)", id.Level, id.Index, got, want, err)
				}
			}
		}
	}
}

// The upper nodes appendLeaves collects for the tiles it completes are
// exactly those withUpper recomputes from the tiles, whatever the batch
// sizes, across clones, and after a reload (whose edge tiles' upper nodes
// are unknown, so those tiles get theirs recomputed).
func TestAppendCollectsUpperNodes(t *testing.T) {
	db := chtest.New(t)
	svc := newService(t, db)
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(1, 2))
	next := 0
	check := func(svc *Service) {
		t.Helper()
		st, err := svc.state(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		s := st
		for range 12 {
			n := 1 + r.IntN(900)
			if r.IntN(4) == 0 {
				n = 256 - int(s.size%256) // end on a level-0 tile boundary
			}
			hashes := make([][]byte, n)
			for i := range hashes {
				hashes[i] = evidence.LeafHash(fmt.Appendf(nil, "%d", next+i))
			}
			next += n
			c, err := s.clone()
			if err != nil {
				t.Fatal(err)
			}
			tiles, uppers, err := c.appendLeaves(hashes)
			if err != nil {
				t.Fatal(err)
			}
			for id, u := range uppers {
				tile := tiles[id]
				if len(tile) != fullTileLen {
					t.Fatalf("upper nodes for tile %d/%d of %d hashes", id.level, id.index, len(tile)/hashSize)
				}
				if want := withUpper(tile, nil); !bytes.Equal(withUpper(tile, u), want) {
					t.Fatalf("tile %d/%d: collected upper nodes differ from the recomputed ones", id.level, id.index)
				}
			}
			s = c
		}
	}
	check(svc)
	// Build up committed state through the service, then reload it.
	for range 3 {
		n := 300 + r.IntN(700)
		if err := svc.appendTenant(ctx, "acme", synthetic(t, "acme", next, n), time.Now()); err != nil {
			t.Fatal(err)
		}
		next += n
	}
	svc.tileMu.Lock()
	for k, tile := range svc.tiles {
		if len(tile) > fullTileLen && !bytes.Equal(tile, withUpper(tile[:fullTileLen], nil)) {
			t.Fatalf("cached tile %d/%d has wrong upper nodes", k.id.level, k.id.index)
		}
	}
	svc.tileMu.Unlock()
	check(newService(t, db))
}
