package ledger

import (
	"context"
	"fmt"

	"github.com/bits-and-blooms/bloom/v3"
)

// seenFalsePositive is the filter's target false-positive rate: the share
// of new records that still cost a ClickHouse lookup.
const seenFalsePositive = 0.001

// seenFilter is a Bloom filter over a tenant's committed record keys. A
// key it has never seen is certainly new, so the exactly-once check only
// queries ClickHouse for the few keys that may be in the log already
// (redeliveries, and false positives).
type seenFilter struct {
	f        *bloom.BloomFilter
	n, limit uint
}

func (f *seenFilter) add(rows []*leafRow) {
	for _, r := range rows {
		f.f.AddString(r.key)
	}
	f.n += uint(len(rows))
}

// seenFilter returns the tenant's filter, building it from the lookup
// table (keys of leaves below the committed size) when missing or full.
func (s *Service) seenFilter(ctx context.Context, tenant string, size uint64) (*seenFilter, error) {
	if f, ok := s.seen[tenant]; ok && f.n < f.limit {
		return f, nil
	}
	limit := max(uint(1<<20), 2*uint(size))
	f := &seenFilter{f: bloom.NewWithEstimates(limit, seenFalsePositive), limit: limit}
	rows, err := s.deps.CH.Query(ctx, "SELECT lookup_key FROM ledger_lookup WHERE tenant_id = ? AND idx < ? AND lookup_key NOT LIKE 'session:%' AND lookup_key NOT LIKE 'trace:%'", tenant, size)
	if err != nil {
		return nil, fmt.Errorf("ledger: load record keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("ledger: load record keys: %w", err)
		}
		f.f.AddString(k)
		f.n++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: load record keys: %w", err)
	}
	s.seen[tenant] = f
	return f, nil
}
