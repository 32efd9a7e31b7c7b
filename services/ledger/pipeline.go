package ledger

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// A batch is sealed in two steps so that the next one can start before it
// is committed: stage integrates it into the tenants' trees on top of
// whatever is already staged (heads) and starts the inserts of its
// leaves, lookups and tiles; commit waits for them, writes each tenant's
// checkpoint row (the commit point), publishes the new state to readers
// and acks the messages. Batches commit in the order they were staged. If
// anything fails, everything staged is waited for and thrown away (abort)
// and its messages are integrated again from the committed state: rows a
// failed batch left past the committed size are never read and are
// replaced, by version, when the log grows over them.

// staged is a batch integrated into its tenants' trees whose rows are
// being written.
type staged struct {
	// msgs are the sealable messages, retried as a whole. Their records
	// are the batch's rows (tenantWrite.rows points into them): a batch
	// is ~10,000 records of ~250 bytes, which were copied four times on
	// their way into the rows.
	msgs   []inbound
	writes []*tenantWrite
	start  time.Time
	ready  chan struct{} // closed once every write's inserts have finished
}

// tenantWrite is one tenant's part of a staged batch.
type tenantWrite struct {
	tenant string
	rows   []*leafRow
	tiles  map[tileID][]byte
	uppers map[tileID][]byte // upper nodes of complete tiles (see withUpper)
	// keys are the record keys of the batch (its rows' and those it
	// found in the log already): the dedupe set of the batches staged
	// on top of it, dropped as a whole when it commits.
	keys    map[string]bool
	next    *logState
	version uint64
	err     error // the inserts' outcome, set before staged.ready closes
}

// head is the tree a tenant's next batch extends: the last staged one, or
// the committed one.
func (s *Service) head(ctx context.Context, tenant string) (*logState, error) {
	if h, ok := s.heads[tenant]; ok {
		return h, nil
	}
	return s.state(ctx, tenant)
}

// stage integrates msgs and starts writing their rows. Messages that
// cannot become a record are terminated (and logged): they would never
// seal. The returned batch is never nil; on error nothing of it is
// staged any more (abort was called) and its msgs are to be retried.
// The batch owns msgs from then on (its rows point into them): the
// caller must not reuse the slice until the batch is committed or
// aborted.
func (s *Service) stage(ctx context.Context, msgs []inbound, now time.Time) (*staged, error) {
	st := &staged{start: now, ready: make(chan struct{}), msgs: msgs}
	if slices.ContainsFunc(msgs, func(m inbound) bool { return m.err != nil }) {
		st.msgs = make([]inbound, 0, len(msgs))
		for _, m := range msgs {
			if m.err != nil {
				s.log.Error("ledger: unsealable record", slog.String("subject", m.msg.Subject()), slog.String("error", m.err.Error()))
				_ = m.msg.TermWithReason("unsealable record: " + m.err.Error())
				s.held.Settled(m.msg)
				continue
			}
			st.msgs = append(st.msgs, m)
		}
	}
	perTenant := map[string]int{}
	for i := range st.msgs {
		perTenant[st.msgs[i].p.tenant]++
	}
	byTenant := make(map[string][]*pending, len(perTenant))
	for i := range st.msgs {
		p := &st.msgs[i].p
		ps, ok := byTenant[p.tenant]
		if !ok {
			ps = make([]*pending, 0, perTenant[p.tenant])
		}
		byTenant[p.tenant] = append(ps, p)
	}
	tenants := make([]string, 0, len(byTenant))
	for t := range byTenant {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	var wg sync.WaitGroup
	defer func() { go func() { wg.Wait(); close(st.ready) }() }()
	for _, t := range tenants {
		w, err := s.stageTenant(ctx, t, byTenant[t], now)
		if err != nil {
			wg.Wait()
			s.abort(nil)
			return st, err
		}
		if w == nil {
			continue // nothing new
		}
		st.writes = append(st.writes, w)
		wg.Go(func() { w.err = s.store.writeData(ctx, w.tenant, w.version, w.rows, w.tiles) })
	}
	return st, nil
}

// stageTenant integrates one tenant's records on top of its head: dedupe
// against what the log already holds (committed or staged), append in
// (stream, sequence) order, sign. nil means every record was there.
// The rows of the returned write are ps's (whose idx and atMS it sets).
func (s *Service) stageTenant(ctx context.Context, tenant string, ps []*pending, now time.Time) (*tenantWrite, error) {
	cur, err := s.head(ctx, tenant)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(ps, func(a, b *pending) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return cmpU64(a.row.seq, b.row.seq)
	})
	staging := s.staging[tenant]
	keys := make([]string, 0, len(ps))
	inBatch := make(map[string]bool, len(ps))
	fresh := make([]*pending, 0, len(ps))
	for _, p := range ps {
		if inBatch[p.row.key] || slices.ContainsFunc(staging, func(w *tenantWrite) bool { return w.keys[p.row.key] }) {
			continue // the same record twice in one batch, or in one staged
		}
		inBatch[p.row.key] = true
		keys = append(keys, p.row.key)
		fresh = append(fresh, p)
	}
	seen, err := s.seenFilter(ctx, tenant, cur.size)
	if err != nil {
		return nil, err
	}
	maybe := keys[:0:0]
	for _, k := range keys {
		if seen.f.TestString(k) {
			maybe = append(maybe, k)
		}
	}
	have, _, err := s.store.lookup(ctx, tenant, cur.size, maybe)
	if err != nil {
		return nil, err
	}
	if len(have) > 0 {
		kept := fresh[:0]
		for _, p := range fresh {
			if len(have[p.row.key]) == 0 {
				kept = append(kept, p)
			}
		}
		fresh = kept
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	next, err := cur.clone()
	if err != nil {
		return nil, err
	}
	rows := make([]*leafRow, len(fresh))
	hashes := make([][]byte, len(fresh))
	for i, p := range fresh {
		p.row.idx = cur.size + uint64(i)
		p.row.atMS = now.UnixMilli()
		rows[i], hashes[i] = &p.row, p.row.leaf
	}
	tiles, uppers, err := next.appendLeaves(hashes)
	if err != nil {
		return nil, err
	}
	if next.checkpoint, err = evidence.SignCheckpoint(s.keys.Signer, s.Origin(tenant), next.size, next.root); err != nil {
		return nil, err
	}
	s.version = max(s.version+1, uint64(time.Now().UnixNano()))
	s.heads[tenant] = next
	w := &tenantWrite{tenant: tenant, rows: rows, tiles: tiles, uppers: uppers, keys: inBatch, next: next, version: s.version}
	s.staging[tenant] = append(staging, w)
	return w, nil
}

// commit waits for a staged batch's inserts, commits each tenant's
// checkpoint, publishes the new trees and acks the messages.
func (s *Service) commit(ctx context.Context, st *staged) error {
	<-st.ready
	for _, w := range st.writes {
		if w.err != nil {
			return w.err
		}
	}
	for _, w := range st.writes {
		if err := s.store.writeCheckpoint(ctx, w.tenant, w.version, w.next, w.rows[len(w.rows)-1].atMS); err != nil {
			return err
		}
		s.committed(ctx, w)
	}
	s.sealedMu.Lock()
	for _, m := range st.msgs {
		s.sealed[m.p.row.stream] = max(s.sealed[m.p.row.stream], m.p.row.seq)
	}
	s.sealedMu.Unlock()
	for _, m := range st.msgs {
		_ = m.msg.Ack()
		s.held.Settled(m.msg)
	}
	s.batchDur.Observe(time.Since(st.start).Seconds())
	s.log.Debug("ledger batch", slog.Int("records", len(st.msgs)), slog.Int("tenants", len(st.writes)), slog.Duration("took", time.Since(st.start)))
	return nil
}

// committed makes a tenant write whose checkpoint landed the tree that
// readers see.
func (s *Service) committed(ctx context.Context, w *tenantWrite) {
	if f, ok := s.seen[w.tenant]; ok {
		f.add(w.rows)
	}
	if staging := slices.DeleteFunc(s.staging[w.tenant], func(o *tenantWrite) bool { return o == w }); len(staging) > 0 {
		s.staging[w.tenant] = staging
	} else {
		delete(s.staging, w.tenant)
	}
	if s.heads[w.tenant] == w.next {
		delete(s.heads, w.tenant) // the committed state is the head again
	}
	s.mu.Lock()
	s.logs[w.tenant] = w.next
	s.mu.Unlock()
	s.cacheTiles(w.tenant, w.tiles, w.uppers)
	s.ids.add(w.tenant, w.rows)
	// Counted per kind, then added: a label lookup per leaf was ~1 % of
	// the ledger's CPU.
	kinds := map[string]int{}
	for _, r := range w.rows {
		kinds[r.kind]++
	}
	for k, n := range kinds {
		s.leaves.WithLabelValues(k).Add(float64(n))
	}
	if s.treeSize != nil {
		s.treeSize.WithLabelValues(w.tenant).Set(float64(w.next.size))
	}
	s.published.Inc()
	s.lastCheckpoint.SetToCurrentTime()
	s.publish(ctx, w.tenant, w.next)
}

// abort waits for st's inserts (st may be nil) and drops everything
// staged: the next batch starts from what ClickHouse committed. A
// checkpoint whose outcome is unknown may or may not have landed, so
// the state and the filters of every tenant staged are reloaded.
func (s *Service) abort(st *staged) {
	if st != nil {
		<-st.ready
		for _, w := range st.writes {
			s.forget(w.tenant)
			delete(s.seen, w.tenant)
		}
	}
	for t := range s.heads {
		s.forget(t)
		delete(s.seen, t)
	}
	clear(s.heads)
	clear(s.staging)
}

// integrate seals msgs as one batch and waits for its commit.
func (s *Service) integrate(ctx context.Context, msgs []inbound) error {
	st, err := s.stage(ctx, msgs, time.Now())
	if err == nil {
		err = s.commit(ctx, st)
	}
	if err != nil {
		s.abort(st)
	}
	return err
}

// appendTenant seals one tenant's records as one batch (tests and
// benchmarks; Run goes through stage and commit).
func (s *Service) appendTenant(ctx context.Context, tenant string, ps []pending, now time.Time) error {
	w, err := s.stageTenant(ctx, tenant, pointers(slices.Clone(ps)), now)
	if err != nil || w == nil {
		s.abort(nil)
		return err
	}
	st := &staged{start: now, ready: make(chan struct{}), writes: []*tenantWrite{w}}
	w.err = s.store.writeData(ctx, tenant, w.version, w.rows, w.tiles)
	close(st.ready)
	if err := s.commit(ctx, st); err != nil {
		s.abort(st)
		return err
	}
	return nil
}

// pointers points at each of ps.
func pointers(ps []pending) []*pending {
	out := make([]*pending, len(ps))
	for i := range ps {
		out[i] = &ps[i]
	}
	return out
}
