package control

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// lifecycle is the catalog's view of records that are created active and
// later ended, each recorded whole on CONTROL at every change (halts,
// budgets): every record ever seen, by id (for ?all=true and reads by
// id), and, apart, the active ones, which every decision looks at and
// which are few.
type lifecycle[T any] struct {
	// what names the records in logs ("halt", "budget").
	what string
	// key returns a record's tenant, id, whether it is active and when it
	// was created.
	key func(T) (tenant, id string, active bool, created time.Time)

	all    map[string]map[string]T // tenant → id → latest state
	active map[string][]T          // tenant → active records, oldest first
}

// apply applies a change if subj is on prefix; it reports whether it was.
// Called with the catalog's lock held.
func (l *lifecycle[T]) apply(log *slog.Logger, prefix, subj string, data []byte) bool {
	if !strings.HasPrefix(subj, prefix) {
		return false
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		// The api writes only well-formed records; one that cannot be
		// read is a control that cannot be honoured, so it is logged
		// loudly.
		log.Error("catalog: bad "+l.what+" change", slog.String("subject", subj), slog.String("error", err.Error()))
		return true
	}
	if l.all == nil {
		l.all, l.active = map[string]map[string]T{}, map[string][]T{}
	}
	tenant, id, active, _ := l.key(v)
	inner(l.all, tenant)[id] = v
	act := slices.DeleteFunc(l.active[tenant], func(x T) bool { _, xid, _, _ := l.key(x); return xid == id })
	if active {
		act = append(act, v)
	}
	if len(act) == 0 {
		delete(l.active, tenant)
	} else {
		l.active[tenant] = act
	}
	return true
}

// list returns a tenant's records, newest first: the active ones, or
// with all every one ever seen. Called with the catalog's read lock held.
func (l *lifecycle[T]) list(tenant string, all bool) []T {
	var out []T
	if all {
		for _, v := range l.all[tenant] {
			out = append(out, v)
		}
	} else {
		out = slices.Clone(l.active[tenant])
	}
	slices.SortFunc(out, func(a, b T) int {
		_, aid, _, at := l.key(a)
		_, bid, _, bt := l.key(b)
		if x := bt.Compare(at); x != 0 {
			return x
		}
		return strings.Compare(bid, aid)
	})
	return out
}
