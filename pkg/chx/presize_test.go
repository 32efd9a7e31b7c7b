package chx_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
)

// Presizing a batch's String columns changes nothing in what is inserted:
// for random rows (strings and []byte, empty, short, long, columns of
// under and over 128 bytes in all), the columns of a presized batch hold
// the same values, row by row, as those of a batch filled without it, and
// the presized batch inserts those rows.
func TestPresizeStringsEquivalent(t *testing.T) {
	db := chtest.New(t)
	ctx := context.Background()
	const ddl = `CREATE TABLE presize (a String, n UInt64, b String, c Nullable(String),
		d FixedString(3), e Array(String), f String) ENGINE = MergeTree ORDER BY n`
	if err := db.Conn.Exec(ctx, ddl); err != nil {
		t.Fatal(err)
	}
	const insert = "INSERT INTO presize (a, n, b, c, d, e, f)"
	rng := rand.New(rand.NewPCG(1, 2))
	str := func(max int) string {
		return strings.Repeat(string(rune('a'+rng.IntN(26))), rng.IntN(max+1))
	}
	total := uint64(0)
	for round := range 40 {
		n := rng.IntN(300) // zero rows included
		long := []int{0, 3, 40, 400}[round%4]
		rows := make(chx.Rows, n)
		for i := range rows {
			var b any = str(long)
			if rng.IntN(2) == 0 {
				b = []byte(str(long))
			}
			c := str(long)
			rows[i] = []any{str(long), uint64(total) + uint64(i), b, &c, fmt.Sprintf("%03d", i%1000), []string{str(long)}, ""}
		}
		plain, sized := prepare(t, db.Conn, insert), prepare(t, db.Conn, insert)
		chx.PresizeRows(sized, rows)
		for _, col := range sized.Columns() {
			if col.Rows() != 0 {
				t.Fatalf("round %d: column %s holds %d rows after presizing", round, col.Name(), col.Rows())
			}
		}
		for _, r := range rows {
			if err := plain.Append(r...); err != nil {
				t.Fatal(err)
			}
			if err := sized.Append(r...); err != nil {
				t.Fatal(err)
			}
		}
		pc, sc := plain.Columns(), sized.Columns()
		for i := range pc {
			if pc[i].Rows() != n || sc[i].Rows() != n {
				t.Fatalf("round %d column %s: %d and %d rows, want %d", round, pc[i].Name(), pc[i].Rows(), sc[i].Rows(), n)
			}
			for r := range n {
				if p, s := show(pc[i].Row(r, false)), show(sc[i].Row(r, false)); p != s {
					t.Fatalf("round %d column %s row %d: %q presized, %q without", round, pc[i].Name(), r, s, p)
				}
			}
		}
		_ = plain.Abort()
		if err := sized.Send(); err != nil {
			t.Fatalf("round %d: send: %v", round, err)
		}
		total += uint64(n)
	}
	var got uint64
	if err := db.Conn.QueryRow(ctx, "SELECT count() FROM presize").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != total {
		t.Fatalf("%d rows inserted, want %d", got, total)
	}
}

// Presizing makes filling a batch's String columns allocate their
// bytes once: a presized batch of 1,000 rows allocates fewer bytes than a
// plain one, and at most once per String column for the bytes.
func TestPresizeStringsAllocates(t *testing.T) {
	db := chtest.New(t)
	ctx := context.Background()
	if err := db.Conn.Exec(ctx, "CREATE TABLE presize (a String, b String) ENGINE = MergeTree ORDER BY a"); err != nil {
		t.Fatal(err)
	}
	rows := make(chx.Rows, 1000)
	for i := range rows {
		rows[i] = []any{fmt.Sprintf("dec_%032d", i), strings.Repeat("x", 60)}
	}
	fill := func(presize bool) (bytes uint64) {
		b := prepare(t, db.Conn, "INSERT INTO presize (a, b)")
		defer func() { _ = b.Abort() }()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if presize {
			chx.PresizeRows(b, rows)
		}
		for _, r := range rows {
			if err := b.Append(r...); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	fill(true) // the pooled placeholder reader, once per process
	plain, sized := fill(false), fill(true)
	t.Logf("bytes allocated filling 1,000 rows: %d plain, %d presized", plain, sized)
	if sized >= plain {
		t.Fatalf("presized batch allocated %d bytes, plain %d", sized, plain)
	}
}

// show prints a column's value, a Nullable's pointer as what it points at.
func show(v any) string {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		v = rv.Elem().Interface()
	}
	return fmt.Sprintf("%q", fmt.Sprint(v))
}

func prepare(t *testing.T, conn driver.Conn, q string) driver.Batch {
	t.Helper()
	b, err := conn.PrepareBatch(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
