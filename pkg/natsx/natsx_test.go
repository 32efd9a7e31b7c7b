package natsx_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
)

var discard = slog.New(slog.DiscardHandler)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(testCtx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func baseConfig(name, subject string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: "test stream",
		Subjects:    []string{subject},
		Storage:     jetstream.FileStorage,
		MaxAge:      time.Hour,
	}
}

func TestEnsureStreamsIdempotent(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	a, b := baseConfig("ALPHA", "alpha.>"), baseConfig("BETA", "beta.>")
	if err := natsx.EnsureStreams(ctx, env.JS, a, b); err != nil {
		t.Fatalf("first EnsureStreams: %v", err)
	}
	for i := range 3 {
		if _, err := env.JS.Publish(ctx, fmt.Sprintf("alpha.%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	before := streamInfo(t, env.JS, "ALPHA")

	for range 2 {
		if err := natsx.EnsureStreams(ctx, env.JS, a, b); err != nil {
			t.Fatalf("repeated EnsureStreams: %v", err)
		}
	}
	after := streamInfo(t, env.JS, "ALPHA")
	if !after.Created.Equal(before.Created) {
		t.Fatalf("stream was recreated: created %v, then %v", before.Created, after.Created)
	}
	if after.State.Msgs != 3 {
		t.Fatalf("stream holds %d messages after re-ensuring, want 3", after.State.Msgs)
	}
	if info := streamInfo(t, env.JS, "BETA"); info.Config.Description != "test stream" {
		t.Fatalf("BETA config %+v", info.Config)
	}
	// Nothing to ensure is fine.
	if err := natsx.EnsureStreams(ctx, env.JS); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureStreamsUpdatesChangedConfig(t *testing.T) {
	tests := []struct {
		name   string
		change func(*jetstream.StreamConfig)
		check  func(*jetstream.StreamConfig) error
	}{
		{
			"description",
			func(c *jetstream.StreamConfig) { c.Description = "changed" },
			func(c *jetstream.StreamConfig) error {
				if c.Description != "changed" {
					return fmt.Errorf("description %q", c.Description)
				}
				return nil
			},
		},
		{
			"max age",
			func(c *jetstream.StreamConfig) { c.MaxAge = 2 * time.Hour },
			func(c *jetstream.StreamConfig) error {
				if c.MaxAge != 2*time.Hour {
					return fmt.Errorf("max age %v", c.MaxAge)
				}
				return nil
			},
		},
		{
			"added subject",
			func(c *jetstream.StreamConfig) { c.Subjects = append(c.Subjects, "gamma.>") },
			func(c *jetstream.StreamConfig) error {
				if !slices.Equal(c.Subjects, []string{"alpha.>", "gamma.>"}) {
					return fmt.Errorf("subjects %v", c.Subjects)
				}
				return nil
			},
		},
		{
			"duplicate window and direct get",
			func(c *jetstream.StreamConfig) { c.Duplicates, c.AllowDirect = time.Minute, true },
			func(c *jetstream.StreamConfig) error {
				if c.Duplicates != time.Minute || !c.AllowDirect {
					return fmt.Errorf("duplicates %v, allow direct %v", c.Duplicates, c.AllowDirect)
				}
				return nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := natstest.Start(t)
			ctx := testCtx(t)
			cfg := baseConfig("ALPHA", "alpha.>")
			if err := natsx.EnsureStreams(ctx, env.JS, cfg); err != nil {
				t.Fatal(err)
			}
			if _, err := env.JS.Publish(ctx, "alpha.1", []byte("kept")); err != nil {
				t.Fatal(err)
			}
			tt.change(&cfg)
			if err := natsx.EnsureStreams(ctx, env.JS, cfg); err != nil {
				t.Fatalf("EnsureStreams with a changed config: %v", err)
			}
			info := streamInfo(t, env.JS, "ALPHA")
			if err := tt.check(&info.Config); err != nil {
				t.Fatalf("config not updated: %v", err)
			}
			if info.State.Msgs != 1 {
				t.Fatalf("update lost data: %d messages", info.State.Msgs)
			}
		})
	}
}

func TestEnsureStreamsRejectsImpossibleChange(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	cfg := baseConfig("ALPHA", "alpha.>")
	if err := natsx.EnsureStreams(ctx, env.JS, cfg); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfgs []jetstream.StreamConfig
	}{
		{"storage type", []jetstream.StreamConfig{func() jetstream.StreamConfig {
			c := cfg
			c.Storage = jetstream.MemoryStorage
			return c
		}()}},
		{"subjects overlapping another stream", []jetstream.StreamConfig{baseConfig("OVERLAP", "alpha.x.>")}},
		{"invalid name", []jetstream.StreamConfig{baseConfig("BAD.NAME", "bad.>")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := natsx.EnsureStreams(ctx, env.JS, tt.cfgs...)
			if err == nil {
				t.Fatal("EnsureStreams succeeded")
			}
			if !strings.Contains(err.Error(), tt.cfgs[0].Name) {
				t.Fatalf("error %q does not name stream %s", err, tt.cfgs[0].Name)
			}
		})
	}
	if info := streamInfo(t, env.JS, "ALPHA"); info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("storage changed to %v", info.Config.Storage)
	}
}

func TestIsWrongLastSequence(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	if err := natsx.EnsureStreams(ctx, env.JS, baseConfig("CAS", "cas.>")); err != nil {
		t.Fatal(err)
	}
	publish := func(subject string, opts ...jetstream.PublishOpt) error {
		_, err := env.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: []byte("x")}, opts...)
		return err
	}
	if err := publish("cas.a", jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithMsgID("m1")); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if err := publish("cas.b"); err != nil {
		t.Fatal(err)
	}
	casErr := publish("cas.a", jetstream.WithExpectLastSequencePerSubject(0))
	_, streamNotFound := env.JS.Stream(ctx, "MISSING")

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"subject already exists", casErr, true},
		{"stale subject sequence", publish("cas.a", jetstream.WithExpectLastSequencePerSubject(99)), true},
		{"stale stream sequence", publish("cas.c", jetstream.WithExpectLastSequence(1)), true},
		{"wrapped", fmt.Errorf("put agent: %w", casErr), true},
		{"joined", errors.Join(errors.New("other"), casErr), true},
		{"nil", nil, false},
		{"plain error with the same words", errors.New("wrong last sequence: 1"), false},
		{"wrong expected stream", publish("cas.a", jetstream.WithExpectStream("OTHER")), false},
		{"wrong expected last message id", publish("cas.a", jetstream.WithExpectLastMsgID("nope")), false},
		{"no stream for the subject", publish("nostream.a"), false},
		{"stream not found", streamNotFound, false},
		{"context cancelled", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want && tt.err == nil {
				t.Fatal("the publish that should have failed succeeded")
			}
			if !tt.want && tt.name != "nil" && tt.err == nil {
				t.Fatal("expected an error to classify")
			}
			if got := natsx.IsWrongLastSequence(tt.err); got != tt.want {
				t.Fatalf("IsWrongLastSequence(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestStartEmbeddedRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)

	start := func(dir string) (*nats.Conn, jetstream.JetStream, func()) {
		t.Helper()
		srv, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: -1, StoreDir: dir})
		if err != nil {
			t.Fatalf("StartEmbedded: %v", err)
		}
		if !srv.JetStreamEnabled() {
			t.Fatal("JetStream is not enabled")
		}
		if got := srv.JetStreamConfig().StoreDir; !strings.HasPrefix(got, dir) {
			srv.Shutdown()
			t.Fatalf("JetStream stores in %s, not under %s", got, dir)
		}
		nc, js, err := natsx.Connect(srv.ClientURL(), "restart-test", discard)
		if err != nil {
			srv.Shutdown()
			t.Fatal(err)
		}
		return nc, js, func() {
			nc.Close()
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	}

	_, js, stop := start(dir)
	if err := natsx.EnsureStreams(ctx, js, baseConfig("KEEP", "keep.>")); err != nil {
		stop()
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := js.Publish(ctx, fmt.Sprintf("keep.%d", i), fmt.Appendf(nil, "payload-%d", i)); err != nil {
			stop()
			t.Fatal(err)
		}
	}
	stop()

	// A server on another directory does not see the data.
	_, js, stop = start(t.TempDir())
	if _, err := js.Stream(ctx, "KEEP"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		stop()
		t.Fatalf("stream KEEP on a fresh store dir: %v, want not found", err)
	}
	stop()

	nc, js, stop := start(dir)
	defer stop()
	if !nc.IsConnected() {
		t.Fatal("not connected to the restarted server")
	}
	info := streamInfo(t, js, "KEEP")
	if info.State.Msgs != 5 || info.State.LastSeq != 5 {
		t.Fatalf("after restart: %d messages, last seq %d; want 5, 5", info.State.Msgs, info.State.LastSeq)
	}
	s, err := js.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "keep.3")
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "payload-3" {
		t.Fatalf("keep.3 holds %q", m.Data)
	}
	// And it keeps accepting writes, continuing the sequence.
	ack, err := js.Publish(ctx, "keep.5", []byte("after"))
	if err != nil || ack.Sequence != 6 {
		t.Fatalf("publish after restart: %+v, %v", ack, err)
	}
}

func TestLastSequenceAndWaitForStream(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)

	// WaitForStream gives up with its context while the stream is missing.
	short, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	err := natsx.WaitForStream(short, env.JS, "LATE", discard)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForStream on a missing stream = %v, want deadline exceeded", err)
	}

	// It returns once the owner creates the stream.
	done := make(chan error, 1)
	go func() { done <- natsx.WaitForStream(ctx, env.JS, "LATE", discard) }()
	if err := natsx.EnsureStreams(ctx, env.JS, baseConfig("LATE", "late.>")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitForStream: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("WaitForStream did not return after the stream was created")
	}

	s, err := env.JS.Stream(ctx, "LATE")
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(0); want <= 3; want++ {
		got, err := natsx.LastSequence(ctx, s)
		if err != nil || got != want {
			t.Fatalf("LastSequence = %d, %v; want %d", got, err, want)
		}
		if _, err := env.JS.Publish(ctx, "late.x", nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReady(t *testing.T) {
	env := natstest.Start(t)
	nc, _ := env.ConnectAs(t, natsauth.Admin)
	ready := natsx.Ready(nc)
	if err := ready(context.Background()); err != nil {
		t.Fatalf("Ready while connected: %v", err)
	}
	nc.Close()
	if err := ready(context.Background()); err == nil {
		t.Fatal("Ready after Close = nil")
	}
}

func TestConnectFailsClearly(t *testing.T) {
	// Nothing listens on port 1; the first connect is not retried.
	_, _, err := natsx.Connect("nats://127.0.0.1:1", "fail-test", discard)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Connect to a closed port = %v, want an error naming the URL", err)
	}
}

// TestStartEmbeddedPortTaken: a port already bound is reported as the
// server's own failure (ErrServerFailed, naming the port), which is what
// lets StartCluster start again on fresh ports instead of timing out.
func TestStartEmbeddedPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	srv, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: port, StoreDir: t.TempDir()})
	if err == nil {
		srv.Shutdown()
		t.Fatalf("started on port %d that another listener holds", port)
	}
	if !errors.Is(err, natsx.ErrServerFailed) || !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("err = %v, want ErrServerFailed naming port %d", err, port)
	}
}
