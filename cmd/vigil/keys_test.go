package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// TestKeysCLIBinding: `vigil keys create --agent` binds an agent key,
// refuses a binding on other roles and an agent key without one, and
// `vigil keys bind` binds a key created before binding existed.
func TestKeysCLIBinding(t *testing.T) {
	// The CLI opens the data directory with its own embedded server when
	// no NATS answers at --nats-url.
	dir := t.TempDir()
	ctx := context.Background()
	cli := []string{"--nats-url", "nats://127.0.0.1:1", "--data-dir", dir, "--tenant", "cli"}
	legacy := withStore(t, dir, func(js jetstream.JetStream, store *control.Store) auth.KeyRecord {
		if err := natsx.EnsureStreams(ctx, js, streams.ControlConfig(streams.DefaultOptions)); err != nil {
			t.Fatal(err)
		}
		rec, _, err := store.CreateKey(ctx, "cli", auth.RoleAgent, "old", "test")
		if err != nil {
			t.Fatal(err)
		}
		return rec
	})
	tests := []struct {
		name   string
		args   []string
		agents []string
		err    string
	}{
		{"one agent", []string{"--role", "agent", "--agent", "bot-a"}, []string{"bot-a"}, ""},
		{"repeated and comma list", []string{"--role", "agent", "--agent", "bot-c,bot-b", "--agent", "bot-a"}, []string{"bot-a", "bot-b", "bot-c"}, ""},
		{"agent without an agent", []string{"--role", "agent"}, nil, "must be bound"},
		{"admin with an agent", []string{"--role", "admin", "--agent", "bot-a"}, nil, "only agent keys"},
		{"bad agent id", []string{"--role", "agent", "--agent", "bot a"}, nil, "not valid"},
		{"viewer", []string{"--role", "viewer"}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runKeysCreate(ctx, append(append(slices.Clone(cli), "--json"), tc.args...), &out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Agents []string `json:"agents"`
				Key    string   `json:"key"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
			if !slices.Equal(got.Agents, tc.agents) {
				t.Fatalf("agents %q, want %q", got.Agents, tc.agents)
			}
		})
	}

	var out bytes.Buffer
	if err := runKeysBind(ctx, append(slices.Clone(cli), "--id", legacy.ID), &out); err == nil {
		t.Fatal("bind without --agent succeeded")
	}
	if err := runKeysBind(ctx, []string{"--nats-url", "nats://127.0.0.1:1", "--data-dir", dir, "--tenant", "other", "--id", legacy.ID, "--agent", "bot-a"}, &out); err == nil {
		t.Fatal("bind in another tenant succeeded")
	}
	if err := runKeysBind(ctx, append(slices.Clone(cli), "--id", legacy.ID, "--agent", "bot-a"), &out); err != nil {
		t.Fatal(err)
	}
	k := withStore(t, dir, func(_ jetstream.JetStream, store *control.Store) auth.KeyRecord {
		k, _, err := store.Key(ctx, "cli", legacy.ID)
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
	if !slices.Equal(k.Agents, []string{"bot-a"}) || k.Hash != legacy.Hash {
		t.Fatalf("bound key %+v", k)
	}
}

// withStore opens the data directory the way the CLI does, runs f on its
// CONTROL store and closes it again.
func withStore(t *testing.T, dir string, f func(jetstream.JetStream, *control.Store) auth.KeyRecord) auth.KeyRecord {
	t.Helper()
	fs := config.New("test", "")
	n := config.AddNATS(fs, "")
	if err := fs.Parse([]string{"--nats-url", "nats://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	js, done, err := connectOrEmbed(n, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	return f(js, control.NewStore(js))
}
