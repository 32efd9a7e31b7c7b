package console

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/streams"
)

func testBox(t *testing.T, seed byte) *secretbox.Box {
	t.Helper()
	b, err := secretbox.New(bytes.Repeat([]byte{seed}, 32), "console")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSessionStore runs the session bucket on a real JetStream server as
// the api's own NATS user: what is stored reveals nothing, and every way a
// record can stop being a live session is refused.
func TestSessionStore(t *testing.T) {
	env := natstest.Start(t)
	_, js := env.ConnectAs(t, streams.ServiceAPI)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.SessionTTL, cfg.IdleTimeout = time.Hour, 10*time.Minute
	st, err := openSessions(ctx, js, testBox(t, 1), cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	const token = "vk_live_secret-token-value"
	acme := auth.Principal{Tenant: "acme", Role: auth.RoleAdmin, KeyID: "key_acme"}
	s, err := st.create(ctx, token, acme, now, time.Time{})
	if err != nil {
		t.Fatal(err)
	}

	// The bucket holds the id's hash as the key and a sealed value.
	e, err := st.kv.Get(ctx, sessionKeyOf(s.id))
	if err != nil {
		t.Fatalf("the session is not stored under the hash of its id: %v", err)
	}
	keys, err := st.kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, s.id) {
			t.Fatalf("a key contains the session id: %q", k)
		}
	}
	for _, secret := range []string{s.id, token, s.csrf, "acme", "key_acme", "admin"} {
		if bytes.Contains(e.Value(), []byte(secret)) {
			t.Fatalf("the stored value contains %q in clear: %s", secret, e.Value())
		}
	}

	// Live: read back whole.
	got, err := st.get(ctx, s.id, now.Add(time.Minute))
	if err != nil || got.token != token || got.csrf != s.csrf || got.principal.Tenant != "acme" || got.principal.Role != auth.RoleAdmin {
		t.Fatalf("get: %+v, %v", got, err)
	}

	gone := func(what, id string, at time.Time) {
		t.Helper()
		if _, err := st.get(ctx, id, at); !errors.Is(err, errNoSession) {
			t.Errorf("%s: %v, want errNoSession", what, err)
		}
	}
	gone("an unknown id", randomToken(), now)
	gone("an empty id", "", now)
	gone("the id with one character changed", s.id[:len(s.id)-1]+"x", now)

	// Idle: touched sessions live on, untouched ones end.
	idle, _ := st.create(ctx, token, acme, now, time.Time{})
	busy, _ := st.create(ctx, token, acme, now, time.Time{})
	at := now.Add(6 * time.Minute)
	b, err := st.get(ctx, busy.id, at)
	if err != nil {
		t.Fatal(err)
	}
	st.touch(ctx, b, at)
	if _, err := st.get(ctx, busy.id, now.Add(12*time.Minute)); err != nil {
		t.Errorf("a session used 6 minutes ago ended: %v", err)
	}
	gone("idle for the idle timeout", idle.id, now.Add(10*time.Minute))
	if _, err := st.kv.Get(ctx, idle.key); err == nil {
		t.Error("an idle session was not deleted")
	}
	// Absolute lifetime, however busy; and an ID token's earlier expiry.
	gone("past the session lifetime", busy.id, now.Add(time.Hour))
	short, _ := st.create(ctx, token, acme, now, now.Add(2*time.Minute))
	gone("past the ID token's expiry", short.id, now.Add(2*time.Minute))

	// A record moved under another session's key (another tenant's
	// session lifted onto mine) does not open.
	globex, _ := st.create(ctx, "vk_other", auth.Principal{Tenant: "globex", Role: auth.RoleOwner, KeyID: "key_globex"}, now, time.Time{})
	ge, _ := st.kv.Get(ctx, globex.key)
	mine, _ := st.create(ctx, token, acme, now, time.Time{})
	if _, err := st.kv.Put(ctx, mine.key, ge.Value()); err != nil {
		t.Fatal(err)
	}
	gone("another tenant's record under my key", mine.id, now)
	// A tampered record, and one sealed by another deployment.
	flipped := bytes.Clone(e.Value())
	flipped[len(flipped)-3] ^= 'A' ^ 'B'
	tampered, _ := st.create(ctx, token, acme, now, time.Time{})
	if _, err := st.kv.Put(ctx, tampered.key, flipped); err != nil {
		t.Fatal(err)
	}
	gone("a tampered record", tampered.id, now)
	other := *st
	other.box = testBox(t, 2)
	if _, err := other.get(ctx, s.id, now); !errors.Is(err, errNoSession) {
		t.Errorf("a record sealed by another deployment: %v", err)
	}

	// Sign-out deletes it; a touch racing with it does not bring it back.
	stale, err := st.get(ctx, s.id, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.drop(ctx, s); err != nil {
		t.Fatal(err)
	}
	st.touch(ctx, stale, now.Add(5*time.Minute))
	gone("signed out", s.id, now.Add(5*time.Minute))
}

// BenchmarkSessionGet is what a signed-in request pays to find its
// session: one KV get and the open of the sealed record, on an embedded
// JetStream server as the api's NATS user (compare: a map lookup, what
// the in-memory sessions cost).
func BenchmarkSessionGet(b *testing.B) {
	env := natstest.Start(b)
	_, js := env.ConnectAs(b, streams.ServiceAPI)
	ctx := context.Background()
	box, err := secretbox.New(bytes.Repeat([]byte{1}, 32), "console")
	if err != nil {
		b.Fatal(err)
	}
	st, err := openSessions(ctx, js, box, DefaultConfig(), 1)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	s, err := st.create(ctx, "vk_bench", auth.Principal{Tenant: "acme", Role: auth.RoleAdmin, KeyID: "k"}, now, time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("kv", func(b *testing.B) {
		for b.Loop() {
			if _, err := st.get(ctx, s.id, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		m := map[string]*session{s.id: s}
		for b.Loop() {
			if m[s.id] == nil {
				b.Fatal("missing")
			}
		}
	})
}

// TestSessionsOnACluster: on a three-node NATS cluster with the bucket
// replicated three times, three api instances each connected to another
// node see a session created through one at once, and none sees it
// after a sign-out through another (reads go to the stream leader, not
// to a follower that may lag).
func TestSessionsOnACluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	box := testBox(t, 3)
	var st [3]*sessionStore
	for i := range st {
		_, js := c.ConnectAs(t, streams.ServiceAPI, i)
		var err error
		if st[i], err = openSessions(ctx, js, box, DefaultConfig(), 3); err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	// Loopback followers rarely lag enough to show it, so check the
	// mechanism itself: no direct gets (which any replica answers).
	_, js := c.ConnectAs(t, streams.ServiceAPI, 0)
	stream, err := js.Stream(ctx, "KV_"+streams.ConsoleSessionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := stream.CachedInfo().Config; cfg.AllowDirect || cfg.Replicas != 3 {
		t.Fatalf("the bucket's stream: AllowDirect %v, replicas %d; want leader reads on 3 replicas", cfg.AllowDirect, cfg.Replicas)
	}
	p := auth.Principal{Tenant: "acme", Role: auth.RoleViewer, KeyID: "k"}
	for n := range 100 {
		a, b, x := st[n%3], st[(n+1)%3], st[(n+2)%3]
		now := time.Now()
		s, err := a.create(ctx, "vk_x", p, now, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.get(ctx, s.id, now); err != nil {
			t.Fatalf("round %d: a session created through one node is not read through another: %v", n, err)
		}
		if err := x.drop(ctx, s); err != nil {
			t.Fatal(err)
		}
		for i, r := range st {
			if _, err := r.get(ctx, s.id, now); !errors.Is(err, errNoSession) {
				t.Fatalf("round %d: instance %d still reads a session signed out through another: %v", n, i, err)
			}
		}
	}
}
