package chx

import (
	"encoding/binary"
	"io"
	"sync"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// presizeStrings gives each String column of a fresh batch the capacity
// for the rows about to be appended, so that appending them allocates
// nothing.
//
// Why: the driver (ch-go's ColStr) grows a String column one append at a
// time, its bytes and its row positions alike, and Go grows a large slice
// by a quarter each time, so filling a column of a batch allocates about
// five times its final size. In `vigil bench decide` the sinks' String
// columns were ~8 % of every byte the process allocated per decision, the
// largest share of it in Vigil's hands (docs/benchmarks.md, perf-alloc).
//
// How, through the driver's own API: Decode of placeholder rows whose
// lengths add up to the column's bytes allocates the positions and the
// bytes once each, at their final size, and Reset empties the column
// keeping that capacity (ch-go documents Reset as "preserving capacity").
// The rows appended afterwards, and so what is inserted, are the same as
// without it; a column that is not a bare String, a value that is not a
// string or []byte, or a failed Decode only loses the head start.
func presizeStrings(batch driver.Batch, entries []entry, rows int) {
	PresizeStrings(batch, rows, func(i int) int {
		size := 0
		for _, e := range entries {
			for _, r := range e.rows {
				if i < len(r) {
					switch v := r[i].(type) {
					case string:
						size += len(v)
					case []byte:
						size += len(v)
					}
				}
			}
		}
		return size
	})
}

// PresizeStrings gives each bare String column of a fresh batch (or of a
// block just flushed, which the driver resets keeping capacity) the
// capacity for rows rows whose values in column i add up to size(i)
// bytes; size is called only for String columns. A writer that builds its
// rows as it appends them (the ledger) knows these sums without building
// the rows twice. See presizeStrings for why and how; sizes that are off
// only make the head start smaller or larger, never change what is
// inserted.
func PresizeStrings(batch driver.Batch, rows int, size func(i int) int) {
	if rows == 0 {
		return
	}
	for i, c := range batch.Columns() {
		col, ok := c.(*column.String)
		if !ok || col.Rows() != 0 {
			continue
		}
		p := placeholders.Get().(*placeholder)
		p.reset(size(i), rows)
		err := col.Decode(p.reader, rows)
		col.Reset()
		if err != nil || p.left() != 0 {
			// The reader may hold bytes of this stream: not reused.
			continue
		}
		placeholders.Put(p)
	}
}

// placeholder streams the String column encoding of n rows whose lengths
// add up to size: the first row size bytes long (zeros), the rest empty.
// Decode allocates a row's bytes when it reads it, for a short first row
// (under 128 bytes) as much as that row's length times the rows left; so
// a column with less than 128 bytes in all decodes only empty rows and
// gets its positions alone.
type placeholder struct {
	head   [binary.MaxVarintLen64 + 1]byte
	h      []byte // what is left of the first row's length
	zeros  int    // zero bytes left: the first row's bytes and one length per empty row
	reader *proto.Reader
}

var placeholders = sync.Pool{New: func() any {
	p := &placeholder{}
	p.reader = proto.NewReader(p)
	return p
}}

func (p *placeholder) reset(size, n int) {
	if size < 128 {
		size = 0
	}
	l := binary.PutUvarint(p.head[:], uint64(size))
	p.h = p.head[:l]
	p.zeros = size + n - 1
}

func (p *placeholder) left() int { return len(p.h) + p.zeros }

func (p *placeholder) Read(b []byte) (int, error) {
	if len(p.h) > 0 {
		n := copy(b, p.h)
		p.h = p.h[n:]
		return n, nil
	}
	if p.zeros == 0 {
		return 0, io.EOF
	}
	n := min(len(b), p.zeros)
	clear(b[:n])
	p.zeros -= n
	return n, nil
}
