package natsx_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// TestProvisionWaitsForTheCluster: provisioning R3 streams and buckets
// started on a fresh three-node cluster before it has a meta leader (two
// nodes down from the start) fails at first — transiently — and succeeds
// once the nodes are back, instead of failing the process; a provisioning
// whose context ends first returns the last error with the context's.
func TestProvisionWaitsForTheCluster(t *testing.T) {
	natsx.SetAttemptTimeout(t, time.Second)
	dir := t.TempDir()
	users, err := natsauth.Init(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	nkeys, err := natsauth.ServerUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsx.StartCluster(dir, 3, nkeys)
	if nc != nil {
		t.Cleanup(nc.Shutdown)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Only node 0 stays: no quorum, so no meta leader to create anything.
	nc.Stop(1)
	nc.Stop(2)
	c := &natstest.Cluster{Cluster: nc, CredsDir: filepath.Join(dir, "auth")}
	_, js := c.ConnectAs(t, natsauth.Admin, 0)

	var attempts atomic.Int64
	provision := func(ctx context.Context) error {
		attempts.Add(1)
		if err := natsx.EnsureStreams(ctx, js, jetstream.StreamConfig{Name: "PROV", Subjects: []string{"prov.>"}, Replicas: 3}); err != nil {
			return err
		}
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "prov", Replicas: 3})
		return err
	}

	short, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err = natsx.Provision(short, slog.New(slog.DiscardHandler), "test", provision)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !natsx.IsTransient(err) || attempts.Load() < 1 {
		t.Fatalf("provisioning on a cluster without leader until the deadline = %v after %d attempts, want the deadline and a transient error", err, attempts.Load())
	}

	log, logs := testkit.Logger(t, slog.LevelInfo)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	attempts.Store(0)
	done := make(chan error, 1)
	go func() { done <- natsx.Provision(ctx, log, "test", provision) }()
	testkit.Eventually(t, "a failed provisioning attempt", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("provisioning returned %v while the cluster has no leader", err)
		default:
		}
		return attempts.Load() >= 2, logs.String()
	})
	if !strings.Contains(logs.String(), "jetstream not ready") {
		t.Errorf("no retry logged:\n%s", logs.String())
	}
	for _, i := range []int{1, 2} {
		if err := nc.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("provisioning after the nodes came back: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("provisioning did not finish after the nodes came back")
	}
	if info := streamInfo(t, js, "PROV"); info.Config.Replicas != 3 {
		t.Errorf("PROV has %d replicas, want 3", info.Config.Replicas)
	}
	if info := streamInfo(t, js, "KV_prov"); info.Config.Replicas != 3 {
		t.Errorf("bucket prov has %d replicas, want 3", info.Config.Replicas)
	}
}

// TestProvisionFailsAtOnce: an error that no waiting cures — R3 on a
// server that is not clustered — is returned from the first attempt.
func TestProvisionFailsAtOnce(t *testing.T) {
	env := natstest.Start(t)
	attempts := 0
	err := natsx.Provision(testCtx(t), discard, "test", func(ctx context.Context) error {
		attempts++
		return natsx.EnsureStreams(ctx, env.JS, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	})
	if err == nil || natsx.IsTransient(err) || attempts != 1 {
		t.Fatalf("R3 on a lone server: %v after %d attempts, want a permanent error at once", err, attempts)
	}
}
