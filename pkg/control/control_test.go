package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

type env struct {
	ctx   context.Context
	nats  *natstest.Env
	store *control.Store
	cat   *control.Catalog
}

// setup starts JetStream with CONTROL, a store and a running catalog.
func setup(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	n := natstest.Start(t)
	if err := natsx.EnsureStreams(ctx, n.JS, streams.ControlConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	cat := control.NewCatalog(n.JS, slog.New(slog.DiscardHandler))
	if err := cat.Run(ctx); err != nil {
		t.Fatalf("catalog run: %v", err)
	}
	return &env{ctx: ctx, nats: n, store: control.NewStore(n.JS), cat: cat}
}

// otherStore is a store on its own connection, as another replica or the
// CLI would have.
func (e *env) otherStore(t *testing.T) *control.Store {
	t.Helper()
	_, js := e.nats.ConnectAs(t, natsauth.Admin)
	return control.NewStore(js)
}

func change(tenant, id, name string) agent.Change {
	now := time.Now().UTC()
	a := agent.Discovered(id, now)
	a.Name = name
	return agent.Change{Op: agent.OpRegistered, Tenant: tenant, Agent: a, At: now}
}

func (e *env) put(t *testing.T, tenant, id, name string, expect uint64) uint64 {
	t.Helper()
	rev, err := e.store.PutAgent(e.ctx, change(tenant, id, name), expect)
	if err != nil {
		t.Fatalf("PutAgent(%s/%s, expect %d): %v", tenant, id, expect, err)
	}
	return rev
}

func TestPutAgentOptimisticConcurrency(t *testing.T) {
	e := setup(t)
	r1 := e.put(t, "acme", "bot", "v1", 0)

	if _, err := e.store.PutAgent(e.ctx, change("acme", "bot", "dup"), 0); !errors.Is(err, control.ErrConflict) {
		t.Fatalf("second registration: %v, want ErrConflict", err)
	}
	r2 := e.put(t, "acme", "bot", "v2", r1)
	if r2 <= r1 {
		t.Fatalf("revision went from %d to %d", r1, r2)
	}
	for _, tt := range []struct {
		name   string
		expect uint64
	}{
		{"register again", 0},
		{"stale revision", r1},
		{"future revision", r2 + 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.store.PutAgent(e.ctx, change("acme", "bot", "lost"), tt.expect)
			if !errors.Is(err, control.ErrConflict) {
				t.Fatalf("PutAgent(expect %d) = %v, want ErrConflict", tt.expect, err)
			}
		})
	}

	// The losing writes left no trace.
	got, err := e.store.Agent(e.ctx, "acme", "bot")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "v2" || got.Revision != r2 {
		t.Fatalf("agent is %q at revision %d, want v2 at %d", got.Name, got.Revision, r2)
	}

	// The check is per agent: other agents and tenants are unaffected.
	e.put(t, "acme", "other-bot", "x", 0)
	e.put(t, "beta", "bot", "x", 0)
}

func TestPutAgentConcurrentUpdatesExactlyOneWins(t *testing.T) {
	e := setup(t)
	rev := e.put(t, "acme", "bot", "v0", 0)
	const writers = 8
	var (
		wg               sync.WaitGroup
		mu               sync.Mutex
		wins, conflicts  int
		unexpectedErrors []error
	)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.store.PutAgent(e.ctx, change("acme", "bot", fmt.Sprintf("w%d", i)), rev)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, control.ErrConflict):
				conflicts++
			default:
				unexpectedErrors = append(unexpectedErrors, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != writers-1 || len(unexpectedErrors) > 0 {
		t.Fatalf("%d wins, %d conflicts, errors %v; want exactly one winner", wins, conflicts, unexpectedErrors)
	}
}

func TestStoreAgent(t *testing.T) {
	e := setup(t)
	r1 := e.put(t, "acme", "bot", "first", 0)
	r2 := e.put(t, "acme", "bot", "second", r1)
	e.put(t, "acme", "bot-2", "neighbour", 0)

	got, err := e.store.Agent(e.ctx, "acme", "bot")
	if err != nil {
		t.Fatal(err)
	}
	if got.AgentID != "bot" || got.Name != "second" || got.Revision != r2 {
		t.Fatalf("Agent = %+v, want the latest state at revision %d", got, r2)
	}

	for _, tt := range []struct{ name, tenant, id string }{
		{"unknown id", "acme", "nobody"},
		{"other tenant", "beta", "bot"},
		{"prefix of an existing id", "acme", "bo"},
		{"unknown tenant", "zzz", "bot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.store.Agent(e.ctx, tt.tenant, tt.id)
			if !errors.Is(err, control.ErrNotFound) {
				t.Fatalf("Agent(%s, %s) = %v, want ErrNotFound", tt.tenant, tt.id, err)
			}
		})
	}
}

func TestCatalogSyncReadYourWrites(t *testing.T) {
	e := setup(t)
	// With no writes yet Sync returns at once.
	if err := e.cat.Sync(e.ctx); err != nil {
		t.Fatal(err)
	}
	var rev uint64
	for i := range 50 {
		id := fmt.Sprintf("bot-%02d", i%5) // new agents and updates
		var err error
		cur, _ := e.store.Agent(e.ctx, "acme", id)
		rev, err = e.store.PutAgent(e.ctx, change("acme", id, fmt.Sprintf("name-%d", i)), cur.Revision)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.cat.Sync(e.ctx); err != nil {
			t.Fatal(err)
		}
		list, _ := e.cat.Agents("acme", "", 1000)
		idx := slices.IndexFunc(list, func(a agent.Agent) bool { return a.AgentID == id })
		if idx < 0 {
			t.Fatalf("write %d: %s not listed right after Sync", i, id)
		}
		if a := list[idx]; a.Revision != rev || a.Name != fmt.Sprintf("name-%d", i) {
			t.Fatalf("write %d: listed %s at revision %d named %q, want revision %d", i, id, a.Revision, a.Name, rev)
		}
		if !e.cat.HasAgent("acme", id) {
			t.Fatalf("HasAgent(%s) false after Sync", id)
		}
	}
	if list, more := e.cat.Agents("acme", "", 1000); len(list) != 5 || more {
		t.Fatalf("%d agents listed (more=%v), want 5", len(list), more)
	}

	// WaitFor a sequence that does not exist yet gives up with the
	// caller's context, as Unavailable.
	ctx, cancel := context.WithTimeout(e.ctx, 50*time.Millisecond)
	defer cancel()
	if err := e.cat.WaitFor(ctx, rev+1); !apperr.Is(err, apperr.KindUnavailable) {
		t.Fatalf("WaitFor(future) = %v, want Unavailable", err)
	}
}

func TestCatalogAgentsPaginationAndTenants(t *testing.T) {
	e := setup(t)
	// Registered out of order; listed in id order.
	for _, id := range []string{"a-05", "a-01", "a-07", "a-03", "a-02", "a-06", "a-04"} {
		e.put(t, "acme", id, "acme "+id, 0)
	}
	e.put(t, "beta", "a-03", "beta a-03", 0)
	e.put(t, "beta", "b-01", "beta b-01", 0)
	if err := e.cat.Sync(e.ctx); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		tenant, after string
		limit         int
		want          []string
		more          bool
	}{
		{"acme", "", 3, []string{"a-01", "a-02", "a-03"}, true},
		{"acme", "a-03", 3, []string{"a-04", "a-05", "a-06"}, true},
		{"acme", "a-06", 3, []string{"a-07"}, false},
		{"acme", "a-04", 3, []string{"a-05", "a-06", "a-07"}, false}, // exactly the rest
		{"acme", "a-07", 3, nil, false},
		{"acme", "", 7, []string{"a-01", "a-02", "a-03", "a-04", "a-05", "a-06", "a-07"}, false},
		{"acme", "", 100, []string{"a-01", "a-02", "a-03", "a-04", "a-05", "a-06", "a-07"}, false},
		{"acme", "a-025", 2, []string{"a-03", "a-04"}, true}, // cursor between ids
		{"acme", "", 1, []string{"a-01"}, true},
		{"beta", "", 10, []string{"a-03", "b-01"}, false},
		{"beta", "a-03", 10, []string{"b-01"}, false},
		{"nobody", "", 10, nil, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s after %q limit %d", tt.tenant, tt.after, tt.limit), func(t *testing.T) {
			list, more := e.cat.Agents(tt.tenant, tt.after, tt.limit)
			var ids []string
			for _, a := range list {
				ids = append(ids, a.AgentID)
				if a.Name != tt.tenant+" "+a.AgentID {
					t.Errorf("%s listed with name %q: state from another tenant", a.AgentID, a.Name)
				}
			}
			if !slices.Equal(ids, tt.want) || more != tt.more {
				t.Fatalf("Agents = %v more=%v, want %v more=%v", ids, more, tt.want, tt.more)
			}
		})
	}

	// Walking the pages visits every agent exactly once.
	var seen []string
	after := ""
	for {
		page, more := e.cat.Agents("acme", after, 2)
		for _, a := range page {
			seen = append(seen, a.AgentID)
		}
		if !more {
			break
		}
		after = page[len(page)-1].AgentID
	}
	if len(seen) != 7 || !slices.IsSorted(seen) || len(slices.Compact(slices.Clone(seen))) != 7 {
		t.Fatalf("paging visited %v", seen)
	}
}

func TestKeysAuthenticate(t *testing.T) {
	e := setup(t)
	has, err := e.store.HasAnyKey(e.ctx)
	if err != nil || has {
		t.Fatalf("HasAnyKey on an empty stream = %v, %v", has, err)
	}
	// Agents alone do not count as keys.
	e.put(t, "acme", "bot", "bot", 0)
	if has, err := e.store.HasAnyKey(e.ctx); err != nil || has {
		t.Fatalf("HasAnyKey with only agents = %v, %v", has, err)
	}

	rec, token, err := e.store.CreateKey(e.ctx, "acme", auth.RoleAdmin, "ci", "tester")
	if err != nil {
		t.Fatal(err)
	}
	if has, err := e.store.HasAnyKey(e.ctx); err != nil || !has {
		t.Fatalf("HasAnyKey after CreateKey = %v, %v", has, err)
	}
	if rec.Tenant != "acme" || rec.Role != auth.RoleAdmin || rec.Name != "ci" || rec.CreatedBy != "tester" || !rec.Active(time.Now()) {
		t.Fatalf("key record %+v", rec)
	}
	if id, ok := auth.ParseToken(token); !ok || id != rec.ID {
		t.Fatalf("token %q does not carry key id %s", token, rec.ID)
	}
	// Only the hash is stored.
	st, err := e.nats.JS.Stream(e.ctx, streams.Control)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.GetLastMsgForSubject(e.ctx, streams.KeySubject("acme", rec.ID))
	if err != nil {
		t.Fatal(err)
	}
	secret := token[strings.LastIndex(token, "_")+1:]
	if strings.Contains(string(stored.Data), secret) {
		t.Fatal("the stored key record contains the secret")
	}

	p, err := e.cat.Authenticate(e.ctx, token)
	if err != nil {
		t.Fatalf("Authenticate(valid): %v", err)
	}
	if want := (auth.Principal{Tenant: "acme", Role: auth.RoleAdmin, KeyID: rec.ID}); !reflect.DeepEqual(p, want) {
		t.Fatalf("principal %+v, want %+v", p, want)
	}

	_, unknownToken, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte(token)
	if last := flipped[len(flipped)-1]; last == 'A' {
		flipped[len(flipped)-1] = 'B'
	} else {
		flipped[len(flipped)-1] = 'A'
	}
	for _, tt := range []struct{ name, token string }{
		{"wrong secret with the right id", string(flipped)},
		{"unknown key", unknownToken},
		{"empty", ""},
		{"garbage", "not-a-key"},
		{"with Bearer prefix", "Bearer " + token},
		{"trailing character", token + "x"},
		{"truncated", token[:len(token)-1]},
		{"prefix only", "vgl_"},
		{"upper-cased prefix", "VGL_" + token[4:]},
		{"id only", "vgl_" + rec.ID},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.cat.Authenticate(e.ctx, tt.token)
			if !apperr.Is(err, apperr.KindUnauthenticated) {
				t.Fatalf("Authenticate = %+v, %v; want Unauthenticated", p, err)
			}
		})
	}

	// There is no revoke API yet; a revoked record written to the key's
	// subject must stop the key working once the catalog has it.
	revoked := rec
	now := time.Now().UTC()
	revoked.RevokedAt = &now
	data, _ := json.Marshal(revoked)
	if _, err := e.nats.JS.Publish(e.ctx, streams.KeySubject("acme", rec.ID), data); err != nil {
		t.Fatal(err)
	}
	if err := e.cat.Sync(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cat.Authenticate(e.ctx, token); !apperr.Is(err, apperr.KindUnauthenticated) {
		t.Fatalf("Authenticate(revoked) = %v, want Unauthenticated", err)
	}
	if n := e.cat.KeyCount(); n != 1 {
		t.Fatalf("KeyCount = %d, want 1", n)
	}
}

func TestKeyCreatedElsewhereAuthenticatesFirstTry(t *testing.T) {
	e := setup(t)
	if err := e.cat.Sync(e.ctx); err != nil {
		t.Fatal(err)
	}
	other := e.otherStore(t)
	for i := range 20 {
		role := auth.Roles[i%len(auth.Roles)]
		tenant := fmt.Sprintf("tenant-%d", i%3)
		rec, token, err := other.CreateKey(e.ctx, tenant, role, "k", "cli")
		if err != nil {
			t.Fatal(err)
		}
		// No Sync, no sleep: the miss itself must catch up.
		p, err := e.cat.Authenticate(e.ctx, token)
		if err != nil {
			t.Fatalf("key %d: first Authenticate after creation: %v", i, err)
		}
		if p.KeyID != rec.ID || p.Tenant != tenant || p.Role != role {
			t.Fatalf("key %d: principal %+v", i, p)
		}
	}
}

func TestEncodedAgentIDs(t *testing.T) {
	e := setup(t)
	ids := []string{
		"agent.with.dots",
		"urn:vigil:agent:1",
		"a.b", "a_b", "a-b", "a:b", // must not collide with each other
		"with space",
		"wild*card>",
		"~tilde",
		"ünïcode",
		"slash/and\\back",
	}
	revs := map[string]uint64{}
	for _, id := range ids {
		tok := streams.Token(id)
		if strings.ContainsAny(tok, ".*> ") {
			t.Fatalf("Token(%q) = %q is not a single safe subject token", id, tok)
		}
		revs[id] = e.put(t, "acme", id, "name of "+id, 0)
	}
	for _, id := range ids {
		got, err := e.store.Agent(e.ctx, "acme", id)
		if err != nil {
			t.Fatalf("Agent(%q): %v", id, err)
		}
		if got.AgentID != id || got.Name != "name of "+id || got.Revision != revs[id] {
			t.Fatalf("Agent(%q) = id %q name %q revision %d", id, got.AgentID, got.Name, got.Revision)
		}
		// Updates and conflicts work per encoded subject too.
		if _, err := e.store.PutAgent(e.ctx, change("acme", id, "again"), 0); !errors.Is(err, control.ErrConflict) {
			t.Fatalf("re-register %q: %v, want ErrConflict", id, err)
		}
	}
	if err := e.cat.Sync(e.ctx); err != nil {
		t.Fatal(err)
	}
	list, more := e.cat.Agents("acme", "", 100)
	var listed []string
	for _, a := range list {
		listed = append(listed, a.AgentID)
	}
	want := slices.Sorted(slices.Values(ids))
	if !slices.Equal(listed, want) || more {
		t.Fatalf("listed %q, want %q", listed, want)
	}
	// A paging cursor that is itself an encoded id.
	page, _ := e.cat.Agents("acme", "a.b", 1)
	if len(page) != 1 || page[0].AgentID != "a:b" {
		t.Fatalf("page after a.b = %v", page)
	}
}

func TestStoreWithoutControlStream(t *testing.T) {
	n := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := control.NewStore(n.JS)
	if _, err := s.Agent(ctx, "acme", "bot"); err == nil || errors.Is(err, control.ErrNotFound) {
		t.Fatalf("Agent without CONTROL = %v, want a stream error", err)
	}
	if _, err := s.HasAnyKey(ctx); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("HasAnyKey without CONTROL = %v, want ErrStreamNotFound", err)
	}
	_, err := s.PutAgent(ctx, change("acme", "bot", "x"), 0)
	if err == nil || errors.Is(err, control.ErrConflict) {
		t.Fatalf("PutAgent without CONTROL = %v, want an unavailable error", err)
	}
}

// jsAPICalls is how many JetStream API requests the server has answered.
func (e *env) jsAPICalls(t *testing.T) uint64 {
	t.Helper()
	info, err := e.nats.Server.Jsz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return info.API.Total
}

// TestForgedKeysDoNotSyncPerRequest is issue 14's reproduction: a key
// with a valid checksum and an unknown id made the catalog read CONTROL
// on every request (500 requests, 1,001 JetStream API calls).
func TestForgedKeysDoNotSyncPerRequest(t *testing.T) {
	e := setup(t)
	if err := e.cat.Sync(e.ctx); err != nil {
		t.Fatal(err)
	}
	_, forged, err := auth.NewKey() // valid shape and checksum, never stored
	if err != nil {
		t.Fatal(err)
	}
	before := e.jsAPICalls(t)
	for range 500 {
		if _, err := e.cat.Authenticate(e.ctx, forged); !apperr.Is(err, apperr.KindUnauthenticated) {
			t.Fatalf("forged key: %v", err)
		}
	}
	if n := e.jsAPICalls(t) - before; n > 2 {
		t.Fatalf("500 requests with one forged key cost %d JetStream API calls, want at most 2", n)
	}

	// 500 distinct forged ids at once share their catch-ups: at most one
	// stream read per pacing interval (50 ms) while they run.
	before = e.jsAPICalls(t)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				_, tok, _ := auth.NewKey()
				if _, err := e.cat.Authenticate(e.ctx, tok); !apperr.Is(err, apperr.KindUnauthenticated) {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("forged key: %v", err)
	}
	took := time.Since(start)
	if n, bound := e.jsAPICalls(t)-before, uint64(took/(50*time.Millisecond))+2; n > bound {
		t.Fatalf("500 distinct forged keys in %s cost %d JetStream API calls, want at most %d", took, n, bound)
	}
	if n := e.cat.MissesRemembered(); n != 501 {
		t.Fatalf("%d unknown ids remembered, want 501", n)
	}

	// A real key created elsewhere after all this still works first time.
	rec, token, err := e.otherStore(t).CreateKey(e.ctx, "acme", auth.RoleViewer, "k", "cli")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := e.cat.Authenticate(e.ctx, token); err != nil || p.KeyID != rec.ID {
		t.Fatalf("real key after forged ones: %+v %v", p, err)
	}
}
