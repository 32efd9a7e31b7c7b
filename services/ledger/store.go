package ledger

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// leafRow is one integrated record.
type leafRow struct {
	idx     uint64
	key     string
	kind    string
	id      string
	session string
	// trace is the OpenTelemetry trace id of an event reported as a span
	// (payload.traceId), "" otherwise; filed as "trace:<id>" so that a
	// trace's lineage proves its spans (see traceOf).
	trace     string
	leaf      []byte
	canonical []byte
	stream    string
	seq       uint64
	atMS      int64
}

// store reads and writes the ledger's ClickHouse tables. Writes of a
// batch go leaves → lookups → tiles → checkpoint; the checkpoint row is
// the commit point. Rows a crashed batch left past the committed size
// are never read (every read is bounded by the committed size) and are
// replaced, by version, when the log grows over them.
type store struct{ ch driver.Conn }

func (st store) insert(ctx context.Context, t readmodel.Table, rows [][]any) error {
	return st.insertEach(ctx, t, len(rows), func(i int, _ []any) []any { return rows[i] }, nil)
}

// insertBlock is how many rows go in one block of an insert. The driver
// builds a block's columns in fresh buffers that grow as rows are
// appended, and encodes them into the connection's buffer: a whole batch
// in one block (10,000 leaves, ~8 MiB) grew and copied megabytes per
// insert, most of it into memory just faulted in — a quarter of the
// ledger's CPU. Sent a block at a time, the same buffers are reused for
// every block of the insert. The server squashes the blocks of one
// insert statement into its parts as it does for one block, and nothing is read
// before the checkpoint commits anyway.
const insertBlock = 1024

// insertEach inserts n rows in one statement; row(i, r) returns the i-th,
// which it may build in r (reused: the driver copies each row into its
// column buffers as it is appended). The rows of a batch are never all
// materialised beside the driver's columns, which hold them already.
//
// size(i, col), when not nil, is the length in bytes of row i's value in
// String column col: the first block's String columns are then allocated
// once at their size (chx.PresizeStrings) instead of growing append by
// append, which allocated ~4× their size and was 6 % of every byte
// `vigil bench decide` allocated (docs/benchmarks.md, perf-alloc2). Later
// blocks reuse those columns (the driver resets them keeping capacity).
func (st store) insertEach(ctx context.Context, t readmodel.Table, n int, row func(i int, r []any) []any, size func(i, col int) int) error {
	if n == 0 {
		return nil
	}
	b, err := st.ch.PrepareBatch(ctx, t.Insert())
	if err != nil {
		return err
	}
	if size != nil {
		first := min(n, insertBlock)
		chx.PresizeStrings(b, first, func(col int) int {
			sum := 0
			for i := range first {
				sum += size(i, col)
			}
			return sum
		})
	}
	r := make([]any, 0, len(t.Columns))
	for i := range n {
		r = row(i, r[:0])
		if err := t.CheckRow(r); err != nil {
			_ = b.Abort()
			return err
		}
		if err := b.Append(r...); err != nil {
			_ = b.Abort()
			return err
		}
		if (i+1)%insertBlock == 0 && i+1 < n {
			if err := b.Flush(); err != nil {
				_ = b.Abort()
				return err
			}
		}
	}
	return b.Send()
}

// writeData inserts a batch's leaves, lookups and tiles; they are read
// only once writeCheckpoint commits a tree that covers them.
func (st store) writeData(ctx context.Context, tenant string, version uint64, leaves []*leafRow, tiles map[tileID][]byte) error {
	writes := dataWrites(tenant, version, leaves, tiles)
	errs := make([]error, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() {
			if err := st.insertEach(ctx, w.table, w.n, w.row, w.size); err != nil {
				errs[i] = fmt.Errorf("ledger: write %s: %w", w.what, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dataWrite is one of a batch's three inserts: n rows of table, built by
// row as insertEach asks for them.
type dataWrite struct {
	what  string
	table readmodel.Table
	n     int
	row   func(i int, r []any) []any
	// size is the byte length of row i's value in String column col, as
	// row builds it (TestDataWriteSizes holds them equal).
	size func(i, col int) int
}

// dataWrites are the inserts of a batch's leaves, lookups and tiles.
func dataWrites(tenant string, version uint64, leaves []*leafRow, tiles map[tileID][]byte) []dataWrite {
	// Lookup rows: every record's key, and its session's and trace's.
	type lookupRow struct {
		key string
		idx uint64
	}
	krows := make([]lookupRow, 0, 2*len(leaves))
	for _, l := range leaves {
		krows = append(krows, lookupRow{l.key, l.idx})
		if l.session != "" {
			krows = append(krows, lookupRow{"session:" + l.session, l.idx})
		}
		if l.trace != "" && l.trace != l.session {
			krows = append(krows, lookupRow{traceKey(l.trace), l.idx})
		}
	}
	type tileRow struct {
		id tileID
		h  []byte
	}
	trows := make([]tileRow, 0, len(tiles))
	for id, h := range tiles {
		trows = append(trows, tileRow{id, h})
	}
	// The leaf hash in hex is built in one buffer per batch, and the
	// canonical bytes go in as they are ([]byte and string are the same
	// String column to the driver, which copies them).
	var hexBuf []byte
	// The three inserts are independent (none is read past the committed
	// size until the checkpoint lands), so they go in parallel.
	return []dataWrite{
		{"leaves", readmodel.LedgerLeaves, len(leaves), func(i int, r []any) []any {
			l := leaves[i]
			hexBuf = hex.AppendEncode(hexBuf[:0], l.leaf)
			return append(r, tenant, l.idx, l.key, l.kind, l.id, l.session, hexBuf, l.canonical, l.stream, l.seq, l.atMS, version)
		}, func(i, col int) int {
			l := leaves[i]
			switch col {
			case 0:
				return len(tenant)
			case 2:
				return len(l.key)
			case 3:
				return len(l.kind)
			case 4:
				return len(l.id)
			case 5:
				return len(l.session)
			case 6:
				return hex.EncodedLen(len(l.leaf))
			case 7:
				return len(l.canonical)
			case 8:
				return len(l.stream)
			}
			return 0
		}},
		{"lookups", readmodel.LedgerLookup, len(krows), func(i int, r []any) []any {
			return append(r, tenant, krows[i].key, krows[i].idx, version)
		}, func(i, col int) int {
			switch col {
			case 0:
				return len(tenant)
			case 1:
				return len(krows[i].key)
			}
			return 0
		}},
		{"tiles", readmodel.LedgerTiles, len(trows), func(i int, r []any) []any {
			return append(r, tenant, uint8(trows[i].id.level), trows[i].id.index, trows[i].h, version)
		}, func(i, col int) int {
			switch col {
			case 0:
				return len(tenant)
			case 3:
				return len(trows[i].h)
			}
			return 0
		}},
	}
}

// writeCheckpoint commits tree ns: its checkpoint row is what load reads.
func (st store) writeCheckpoint(ctx context.Context, tenant string, version uint64, ns *logState, atMS int64) error {
	var rh []byte
	for _, h := range ns.rng.Hashes() {
		rh = append(rh, h...)
	}
	if err := st.insert(ctx, readmodel.LedgerCheckpoints,
		[][]any{{tenant, ns.size, hex.EncodeToString(ns.root), string(ns.checkpoint), string(rh), atMS, version}}); err != nil {
		return fmt.Errorf("ledger: write checkpoint: %w", err)
	}
	return nil
}

// load reads a tenant's latest committed state, or an empty log.
func (st store) load(ctx context.Context, tenant string) (*logState, error) {
	// On a ClickHouse cluster, a replica may not have fetched yet what was
	// committed through another (the one that just failed): a state read
	// from it would grow the log over leaves already sealed.
	if err := chx.SyncReplica(ctx, st.ch, readmodel.LedgerCheckpoints.Name, readmodel.LedgerLeaves.Name,
		readmodel.LedgerLookup.Name, readmodel.LedgerTiles.Name); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	rows, err := st.ch.Query(ctx, "SELECT tree_size, root_hash, note, range_hashes FROM ledger_checkpoints WHERE tenant_id = ? ORDER BY tree_size DESC, version DESC LIMIT 1", tenant)
	if err != nil {
		return nil, fmt.Errorf("ledger: read checkpoint: %w", err)
	}
	defer rows.Close()
	s := emptyState(tenant)
	if !rows.Next() {
		return s, rows.Err()
	}
	var size uint64
	var root, note, rh string
	if err := rows.Scan(&size, &root, &note, &rh); err != nil {
		return nil, fmt.Errorf("ledger: read checkpoint: %w", err)
	}
	if len(rh)%hashSize != 0 {
		return nil, fmt.Errorf("ledger: checkpoint %s/%d has a corrupt range", tenant, size)
	}
	hashes := make([][]byte, 0, len(rh)/hashSize)
	for i := 0; i < len(rh); i += hashSize {
		hashes = append(hashes, []byte(rh[i:i+hashSize]))
	}
	if s.rng, err = factory.NewRange(0, size, hashes); err != nil {
		return nil, fmt.Errorf("ledger: checkpoint %s/%d: %w", tenant, size, err)
	}
	got, err := s.rng.GetRootHash(nil)
	if err != nil {
		return nil, err
	}
	if s.root, err = hex.DecodeString(root); err != nil || !bytes.Equal(got, s.root) {
		return nil, fmt.Errorf("ledger: checkpoint %s/%d: stored range does not match its root", tenant, size)
	}
	s.size, s.checkpoint = size, []byte(note)
	// The right edge of every tile level, for the next appends.
	need := map[tileID]int{}
	for lvl := uint(0); size>>(lvl*TileHeight) > 0; lvl++ {
		n := size >> (lvl * TileHeight)
		if pos := int(n % TileWidth); pos > 0 {
			need[tileID{level: lvl, index: n / TileWidth}] = pos
		} else {
			s.edges[lvl] = nil
		}
	}
	tiles, err := st.tiles(ctx, tenant, need)
	if err != nil {
		return nil, err
	}
	for id, n := range need {
		t := tiles[id]
		if len(t) < n*hashSize {
			return nil, fmt.Errorf("ledger: tile %d/%d of %s is missing hashes", id.level, id.index, tenant)
		}
		s.edges[id.level] = append(make([]byte, 0, TileWidth*hashSize), t[:n*hashSize]...)
	}
	return s, nil
}

// tiles reads the latest version of each tile in need.
func (st store) tiles(ctx context.Context, tenant string, need map[tileID]int) (map[tileID][]byte, error) {
	out := make(map[tileID][]byte, len(need))
	if len(need) == 0 {
		return out, nil
	}
	ids := make([]clickhouse.GroupSet, 0, len(need))
	for id := range need {
		ids = append(ids, clickhouse.GroupSet{Value: []any{uint8(id.level), id.index}})
	}
	q := "SELECT level, idx, argMax(hashes, version) FROM ledger_tiles WHERE tenant_id = ? AND (level, idx) IN (?) GROUP BY level, idx"
	args := []any{tenant, ids}
	rows, err := st.ch.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read tiles: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var lvl uint8
		var idx uint64
		var h string
		if err := rows.Scan(&lvl, &idx, &h); err != nil {
			return nil, fmt.Errorf("ledger: read tiles: %w", err)
		}
		out[tileID{level: uint(lvl), index: idx}] = []byte(h)
	}
	return out, rows.Err()
}

// lookupChunk bounds the ids of one IN list, well under ClickHouse's
// 256 KiB max_query_size.
const lookupChunk = 1000

// lookup finds the committed leaves (index < size) filed under keys
// ("event:<id>", "decision:<id>", "session:<id>", …) and returns them
// with their rows, in one query. A lookup row is trusted only if the leaf
// at its index still names the key: a row left by a batch that never
// committed may point at a leaf that later went to another record.
func (st store) lookup(ctx context.Context, tenant string, size uint64, keys []string) (map[string][]uint64, map[uint64]leafRow, error) {
	out, rows := map[string][]uint64{}, map[uint64]leafRow{}
	if len(keys) == 0 || size == 0 {
		return out, rows, nil
	}
	want := make(map[string]bool, len(keys))
	traces := false
	for _, k := range keys {
		want[k] = true
		traces = traces || strings.HasPrefix(k, tracePrefix)
	}
	for chunk := range slices.Chunk(keys, lookupChunk) {
		got, err := st.leavesWhere(ctx, "idx IN (SELECT idx FROM ledger_lookup WHERE tenant_id = ? AND lookup_key IN ? AND idx < ?)", tenant, tenant, set(chunk), size)
		if err != nil {
			return nil, nil, fmt.Errorf("ledger: lookup: %w", err)
		}
		for i, l := range got {
			matched := false
			if want[l.key] {
				out[l.key], matched = append(out[l.key], i), true
			}
			if sk := "session:" + l.session; l.session != "" && want[sk] {
				out[sk], matched = append(out[sk], i), true
			}
			if traces {
				if tk := traceKey(traceOf(l.kind, l.canonical)); want[tk] {
					out[tk], matched = append(out[tk], i), true
				}
			}
			if matched {
				rows[i] = l
			}
		}
	}
	for k, v := range out {
		slices.Sort(v)
		out[k] = slices.Compact(v)
	}
	return out, rows, nil
}

// leaves reads the latest version of the leaves at idxs.
func (st store) leaves(ctx context.Context, tenant string, idxs []uint64) (map[uint64]leafRow, error) {
	if len(idxs) == 0 {
		return map[uint64]leafRow{}, nil
	}
	return st.leavesWhere(ctx, "idx IN ?", tenant, set(idxs))
}

// leavesWhere reads the latest version of the tenant's leaves matching
// cond (whose arguments follow the tenant).
func (st store) leavesWhere(ctx context.Context, cond, tenant string, args ...any) (map[uint64]leafRow, error) {
	rows, err := st.ch.Query(ctx, `SELECT idx, argMax(record_key, version), argMax(kind, version), argMax(record_id, version),
		argMax(session_id, version), argMax(leaf_hash, version), argMax(canonical, version), argMax(integrated_ms, version)
		FROM ledger_leaves WHERE tenant_id = ? AND `+cond+` GROUP BY idx`, append([]any{tenant}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("ledger: read leaves: %w", err)
	}
	defer rows.Close()
	out := map[uint64]leafRow{}
	for rows.Next() {
		var l leafRow
		var leaf, canon string
		if err := rows.Scan(&l.idx, &l.key, &l.kind, &l.id, &l.session, &leaf, &canon, &l.atMS); err != nil {
			return nil, fmt.Errorf("ledger: read leaves: %w", err)
		}
		l.leaf, _ = hex.DecodeString(leaf)
		l.canonical = []byte(canon)
		out[l.idx] = l
	}
	return out, rows.Err()
}

// checkpointAt reads the signed checkpoint of an exact tree size, if one
// was published.
func (st store) checkpointAt(ctx context.Context, tenant string, size uint64) ([]byte, error) {
	rows, err := st.ch.Query(ctx, "SELECT note FROM ledger_checkpoints WHERE tenant_id = ? AND tree_size = ? ORDER BY version DESC LIMIT 1", tenant, size)
	if err != nil {
		return nil, fmt.Errorf("ledger: read checkpoint: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	var n string
	if err := rows.Scan(&n); err != nil {
		return nil, err
	}
	return []byte(n), nil
}

// set binds values as a ClickHouse tuple for IN.
func set[T any](xs []T) clickhouse.GroupSet {
	v := make([]any, len(xs))
	for i, x := range xs {
		v[i] = x
	}
	return clickhouse.GroupSet{Value: v}
}

// leafHashOf is a helper for tests and audit: a hex leaf hash.
func leafHashOf(canonical []byte) string { return hex.EncodeToString(evidence.LeafHash(canonical)) }

// tracePrefix files the leaves of a trace's spans in ledger_lookup.
const tracePrefix = "trace:"

func traceKey(trace string) string {
	if trace == "" {
		return ""
	}
	return tracePrefix + trace
}

// traceOf is the trace id an event leaf belongs to: its payload's
// traceId when that is an OpenTelemetry trace id (32 lower-case hex
// digits), as the OTLP receiver writes it; "" for any other leaf. It reads
// the canonical record itself, so a lookup row is trusted only if the
// leaf it points at really carries the trace.
func traceOf(kind string, canonical []byte) string {
	if kind != evidence.KindEvent || !bytes.Contains(canonical, []byte(`"traceId":"`)) {
		return ""
	}
	var env struct {
		Record struct {
			Payload struct {
				TraceID string `json:"traceId"`
			} `json:"payload"`
		} `json:"record"`
	}
	if json.Unmarshal(canonical, &env) != nil {
		return ""
	}
	if id := env.Record.Payload.TraceID; isTraceID(id) {
		return id
	}
	return ""
}

// isTraceID reports whether id is written as OTLP writes trace ids.
func isTraceID(id string) bool {
	return len(id) == 32 && strings.Trim(id, "0123456789abcdef") == ""
}
