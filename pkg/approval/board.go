package approval

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Board is the in-memory view of GUARDIAN, fed by an ordered consumer.
type Board struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu         sync.RWMutex
	applied    uint64
	changed    chan struct{}                // closed and replaced on every change
	byID       map[string]map[string]Action // tenant → id → state
	byDecision map[string]map[string]string // tenant → decision id → id
}

// NewBoard returns an empty board; Run fills it.
func NewBoard(js jetstream.JetStream, log *slog.Logger) *Board {
	return &Board{js: js, log: log, changed: make(chan struct{}),
		byID: map[string]map[string]Action{}, byDecision: map[string]map[string]string{}}
}

// Run follows GUARDIAN until ctx ends (it returns once started).
func (b *Board) Run(ctx context.Context) error {
	if _, err := natsx.Follow(ctx, b.js, streams.Guardian, []string{streams.AllApprovals}, b.apply); err != nil {
		return fmt.Errorf("approval board: %w", err)
	}
	return nil
}

func (b *Board) apply(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	var ch Change
	if err := json.Unmarshal(m.Data(), &ch); err != nil {
		b.log.Error("approval board: bad change", slog.String("subject", m.Subject()), slog.String("error", err.Error()))
		return
	}
	a := ch.Action
	a.Revision = meta.Sequence.Stream
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.byID[a.Tenant]
	if t == nil {
		t = map[string]Action{}
		b.byID[a.Tenant] = t
		b.byDecision[a.Tenant] = map[string]string{}
	}
	t[a.ID] = a
	b.byDecision[a.Tenant][a.DecisionID] = a.ID
	b.applied = meta.Sequence.Stream
	close(b.changed)
	b.changed = make(chan struct{})
}

// Get returns a pending action of a tenant.
func (b *Board) Get(tenant, id string) (Action, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, ok := b.byID[tenant][id]
	return a, ok
}

// ByDecision returns the pending action created for a decision.
func (b *Board) ByDecision(tenant, decisionID string) (Action, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	id, ok := b.byDecision[tenant][decisionID]
	if !ok {
		return Action{}, false
	}
	return b.byID[tenant][id], true
}

// Filter narrows a listing.
type Filter struct {
	Status, AgentID, Priority, ReviewerGroup string
	// Reviewer, when set, keeps only the pending actions it may approve
	// now (a person's queue on the Desk).
	Reviewer *Reviewer
}

// Reviewer is a person deciding: their actor name and reviewer groups.
type Reviewer struct {
	By     string
	Groups []string
}

func (f Filter) keeps(a Action) bool {
	return (f.Status == "" || string(a.Status) == f.Status) && (f.AgentID == "" || a.AgentID == f.AgentID) &&
		(f.Priority == "" || a.Priority == f.Priority) && (f.ReviewerGroup == "" || a.ReviewerGroup == f.ReviewerGroup) &&
		(f.Reviewer == nil || (a.Status == Pending && a.MayApprove(f.Reviewer.By, f.Reviewer.Groups) == nil))
}

// List returns a tenant's actions, newest first, after the given id
// (ids sort by creation through the cursor), at most limit, and whether
// more follow.
func (b *Board) List(tenant string, f Filter, after *Cursor, limit int) ([]Action, bool) {
	b.mu.RLock()
	all := make([]Action, 0, len(b.byID[tenant]))
	for _, a := range b.byID[tenant] {
		if f.keeps(a) {
			all = append(all, a)
		}
	}
	b.mu.RUnlock()
	slices.SortFunc(all, func(x, y Action) int {
		if c := y.CreatedAt.Compare(x.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(y.ID, x.ID)
	})
	start := 0
	if after != nil {
		start = len(all)
		for i, a := range all {
			if a.CreatedAt.Before(after.CreatedAt) || (a.CreatedAt.Equal(after.CreatedAt) && a.ID < after.ID) {
				start = i
				break
			}
		}
	}
	all = all[start:]
	if len(all) > limit {
		return all[:limit], true
	}
	return all, false
}

// Cursor is the position after the last action of a page.
type Cursor struct {
	CreatedAt time.Time `json:"c"`
	ID        string    `json:"i"`
}

// Pending returns every pending action of every tenant (for expiry).
func (b *Board) Pending() []Action {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Action
	for _, t := range b.byID {
		for _, a := range t {
			if a.Status == Pending {
				out = append(out, a)
			}
		}
	}
	return out
}

// Due returns the pending actions that are overdue at now (expired, or an
// escalation due): what the guardian's sweep acts on. It filters under the
// lock instead of copying every pending action out as Pending does: the
// sweep runs every half second, and a copy of the whole backlog of
// approvals each time was ~2 % of the bytes allocated per decision in
// `vigil bench decide` with a quarter of decisions awaiting approval
// (docs/benchmarks.md, perf-alloc), growing with that backlog.
func (b *Board) Due(now time.Time) []Action {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Action
	for _, t := range b.byID {
		for _, a := range t {
			if a.Overdue(now) || a.EscalationDue(now) {
				out = append(out, a)
			}
		}
	}
	return out
}

// Wait blocks until the action created for decisionID exists and is
// final, or ctx ends; it returns the latest state and whether one exists.
func (b *Board) Wait(ctx context.Context, tenant, decisionID string) (Action, bool) {
	for {
		b.mu.RLock()
		ch := b.changed
		id, ok := b.byDecision[tenant][decisionID]
		a := b.byID[tenant][id]
		b.mu.RUnlock()
		if ok && a.Status.Final() {
			return a, true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return a, ok
		}
	}
}

// Changed returns a channel that is closed at the board's next change
// (of any tenant): a watcher takes it, reads, then waits on it, so no
// change between its read and its wait is missed (the console's Decision
// Desk streams this way).
func (b *Board) Changed() <-chan struct{} {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.changed
}

// Sync waits until the board has applied everything GUARDIAN held when
// it was called.
func (b *Board) Sync(ctx context.Context) error {
	s, err := b.js.Stream(ctx, streams.Guardian)
	if err != nil {
		return fmt.Errorf("approval board sync: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("approval board sync: %w", err)
	}
	for {
		b.mu.RLock()
		applied, ch := b.applied, b.changed
		b.mu.RUnlock()
		if applied >= info.State.LastSeq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return apperr.Unavailable("approvals are catching up", 0, ctx.Err())
		}
	}
}

// Component runs the board as a view of a process: once GUARDIAN exists
// (the guardian creates it) it follows the stream on the supervisor's
// context.
func (b *Board) Component() daemon.Component {
	return daemon.Component{Name: "approval-board", Start: func(ctx context.Context) error {
		if err := natsx.WaitForStream(ctx, b.js, streams.Guardian, b.log); err != nil {
			return err
		}
		return b.Run(ctx)
	}}
}
