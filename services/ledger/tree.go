package ledger

import (
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// Tiles: the tree is stored as tiles of TileWidth hashes, as Tessera
// does. Tile (L, t) holds the hashes of the perfect nodes at level
// TileHeight*L with indices [t*TileWidth, (t+1)*TileWidth); the nodes of
// the TileHeight-1 levels above them are recomputed from the tile. Any
// node of a tree of n leaves is in one of ceil(log256 n) tile levels, so
// an inclusion or consistency proof reads at most a few tiles per level:
// O(log n) reads, never a scan of the leaves.
const (
	TileHeight = 8
	TileWidth  = 1 << TileHeight
	hashSize   = 32
)

var (
	hasher  = rfc6962.DefaultHasher
	factory = &compact.RangeFactory{Hash: hasher.HashChildren}
)

// tileID names one tile of a tenant's log.
type tileID struct {
	level uint   // tile level: node level / TileHeight
	index uint64 // tile index within the level
}

// logState is a tenant's committed tree. Values are replaced, never
// mutated, once published to readers.
type logState struct {
	tenant     string
	size       uint64
	root       []byte
	checkpoint []byte
	rng        *compact.Range
	// edges holds the rightmost, possibly partial, tile of each tile
	// level: what the next appends extend.
	edges map[uint][]byte
	// uppers holds, per tile level, the upper nodes (see withUpper) of the
	// edge tile seen so far, laid out as withUpper lays them out: the
	// appends compute every node anyway, so a tile that completes has
	// them without hashing its 255 inner nodes again. nil for a tile
	// whose start this process did not append (loaded state): its upper
	// nodes are computed from the tile when it completes.
	uppers map[uint][]byte
}

func emptyState(tenant string) *logState {
	return &logState{tenant: tenant, root: evidence.EmptyRoot(), rng: factory.NewEmptyRange(0), edges: map[uint][]byte{}, uppers: map[uint][]byte{}}
}

// clone copies what an append mutates. Edge slices are only ever
// appended to, so sharing their prefix with the original is safe.
func (s *logState) clone() (*logState, error) {
	hashes := make([][]byte, len(s.rng.Hashes()))
	copy(hashes, s.rng.Hashes())
	rng, err := factory.NewRange(0, s.rng.End(), hashes)
	if err != nil {
		return nil, err
	}
	c := *s
	c.rng = rng
	c.edges = make(map[uint][]byte, len(s.edges))
	for k, v := range s.edges {
		c.edges[k] = v[:len(v):len(v)]
	}
	// Upper nodes are written in place: copied (≤ 1 KiB a level).
	c.uppers = make(map[uint][]byte, len(s.uppers))
	for k, v := range s.uppers {
		if v != nil {
			c.uppers[k] = slices.Clone(v)
		}
	}
	return &c, nil
}

// appendLeaves adds leaf hashes and returns the content of every tile the
// appends touched (complete tiles and the new right edge) and the upper
// nodes of the complete ones whose every node it saw appended.
func (s *logState) appendLeaves(leaves [][]byte) (tiles, uppers map[tileID][]byte, err error) {
	dirty := map[tileID][]byte{}
	uppers = map[tileID][]byte{}
	visit := func(id compact.NodeID, hash []byte) {
		lvl, r := id.Level/TileHeight, id.Level%TileHeight
		if r >= upperLevel {
			if u := s.uppers[lvl]; u != nil {
				off := (upperOff[r] + id.Index%(TileWidth>>r)) * hashSize
				copy(u[off:off+hashSize], hash)
				if r == TileHeight-1 && id.Index%2 == 1 {
					// The last node below the tile's root: the tile is
					// complete.
					uppers[tileID{level: lvl, index: (id.Index << r) / TileWidth}] = u
					s.uppers[lvl] = nil
				}
			}
			return
		}
		if r != 0 {
			return
		}
		t := tileID{level: lvl, index: id.Index / TileWidth}
		pos := int(id.Index % TileWidth)
		e := s.edges[lvl]
		if pos == 0 {
			e = make([]byte, 0, TileWidth*hashSize)
			if tileUppers {
				s.uppers[lvl] = make([]byte, upperLen)
			}
		}
		if len(e) != pos*hashSize {
			// Only reachable if stored state is corrupt.
			panic(fmt.Sprintf("ledger: tile %d/%d has %d hashes, appending #%d", t.level, t.index, len(e)/hashSize, pos))
		}
		e = append(e, hash...)
		s.edges[lvl] = e
		dirty[t] = e
	}
	for _, l := range leaves {
		if err := s.rng.Append(l, visit); err != nil {
			return nil, nil, err
		}
	}
	root, err := s.rng.GetRootHash(nil)
	if err != nil {
		return nil, nil, err
	}
	s.size, s.root = s.rng.End(), root
	if s.size == 0 {
		s.root = evidence.EmptyRoot()
	}
	return dirty, uppers, nil
}

// tilesFor lists the tiles, and the number of hashes each must hold,
// that the nodes need.
func tilesFor(ids []compact.NodeID) map[tileID]int {
	need := map[tileID]int{}
	for _, id := range ids {
		lvl, r := id.Level/TileHeight, id.Level%TileHeight
		first := id.Index << r
		last := first + 1<<r // exclusive, at the tile's base level
		t := tileID{level: lvl, index: first / TileWidth}
		n := int(last - t.index*TileWidth)
		if n > need[t] {
			need[t] = n
		}
	}
	return need
}

// A complete tile in the proof cache carries, after its TileWidth hashes,
// the hashes of its nodes at relative levels upperLevel..TileHeight-1
// (30 hashes, ~1 KiB next to the tile's 8 KiB): a proof then reads the
// upper nodes instead of hashing up to 255 children for each, and costs
// ~35 hashes instead of ~500 at a million leaves.
const (
	upperLevel  = 4
	fullTileLen = TileWidth * hashSize
	upperLen    = (2*(TileWidth>>upperLevel) - 2) * hashSize // 16+8+4+2 nodes
)

// upperOff is where relative level r's nodes start after the tile's hashes.
var upperOff = func() (o [TileHeight]uint64) {
	for r, n := upperLevel, uint64(0); r < TileHeight; r++ {
		o[r] = n
		n += TileWidth >> r
	}
	return o
}()

// tileUppers turns the upper nodes on; benchmarks turn it off to compare.
var tileUppers = true

// withUpper returns tile with its upper nodes when it is complete, in a
// new slice; any other tile as it is. upper, when not nil, holds the
// upper nodes already (as appendLeaves collected them).
func withUpper(tile, upper []byte) []byte {
	if len(tile) != fullTileLen || !tileUppers {
		return tile
	}
	out := make([]byte, fullTileLen, fullTileLen+upperLen)
	copy(out, tile)
	if len(upper) == upperLen {
		return append(out, upper...)
	}
	level := make([][]byte, TileWidth)
	for i := range level {
		level[i] = tile[i*hashSize : (i+1)*hashSize]
	}
	for r := 1; r < TileHeight; r++ {
		next := make([][]byte, len(level)/2)
		for i := range next {
			next[i] = hasher.HashChildren(level[2*i], level[2*i+1])
			if r >= upperLevel {
				out = append(out, next[i]...)
			}
		}
		level = next
	}
	return out
}

// nodeHash computes a perfect node's hash from its tile.
func nodeHash(id compact.NodeID, tile []byte) ([]byte, error) {
	r := id.Level % TileHeight
	first := (id.Index << r) % TileWidth
	if r >= upperLevel && len(tile) == fullTileLen+upperLen {
		off := fullTileLen + (upperOff[r]+first>>r)*hashSize
		return tile[off : off+hashSize], nil
	}
	n := uint64(1) << r
	if uint64(len(tile)) < (first+n)*hashSize {
		return nil, fmt.Errorf("ledger: tile for node %d/%d is short (%d hashes)", id.Level, id.Index, len(tile)/hashSize)
	}
	level := make([][]byte, n)
	for i := range level {
		off := (first + uint64(i)) * hashSize
		level[i] = tile[off : off+hashSize]
	}
	for len(level) > 1 {
		next := make([][]byte, len(level)/2)
		for i := range next {
			next[i] = hasher.HashChildren(level[2*i], level[2*i+1])
		}
		level = next
	}
	return level[0], nil
}

// buildProof turns a proof recipe into hashes, reading nodes from tiles.
func buildProof(nodes proof.Nodes, tiles map[tileID][]byte) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		t := tileID{level: id.Level / TileHeight, index: (id.Index << (id.Level % TileHeight)) / TileWidth}
		h, err := nodeHash(id, tiles[t])
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}
