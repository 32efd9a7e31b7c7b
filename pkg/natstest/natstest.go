// Package natstest starts a real embedded JetStream server for tests. The
// server authenticates like production (pkg/natsauth): only NKey users are
// admitted, each service confined to its subjects, so every test runs with
// auth on.
package natstest

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
)

// Env is a running server and a client connected to it as natsauth.Admin.
type Env struct {
	Server *server.Server
	Conn   *nats.Conn
	JS     jetstream.JetStream
	// StoreDir is kept so a test can restart the server on the same data.
	StoreDir string
	// CredsDir holds every user's seed (natsauth.SeedFile).
	CredsDir string
}

// Start runs a JetStream server on a random port with a temporary store,
// shut down when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn runs a server on storeDir, so that a test can stop one and start
// another on the same data. The credentials live in storeDir too, so a
// restarted server admits the same users.
func StartIn(t testing.TB, storeDir string) *Env {
	t.Helper()
	creds := filepath.Join(storeDir, "auth")
	users, err := natsauth.Init(creds)
	if err != nil {
		t.Fatal(err)
	}
	nkeys, err := natsauth.ServerUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: -1, StoreDir: storeDir, Users: nkeys})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Server: srv, StoreDir: storeDir, CredsDir: creds}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	e.Conn, e.JS = e.ConnectAs(t, natsauth.Admin)
	return e
}

// ConnectAs connects to the server as user (a streams.Access service or
// natsauth.Admin); the connection closes when the test ends.
func (e *Env) ConnectAs(t testing.TB, user string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, e.Server.ClientURL(), e.CredsDir, user)
}

func connect(t testing.TB, url, credsDir, user string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts, err := natsauth.ClientOptions(natsauth.FileCredential(natsauth.SeedFile(credsDir, user)), natsauth.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := natsx.Connect(url, t.Name()+"/"+user, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// Cluster is a JetStream cluster of embedded servers clustered over
// loopback (natsx.Cluster), each node with its own store directory, all
// admitting the NKey users of CredsDir; it is shut down when the test
// ends.
type Cluster struct {
	*natsx.Cluster
	t        testing.TB
	CredsDir string
}

// StartCluster runs an n-node JetStream cluster on loopback and returns
// once its meta leader sees every node (streams with up to n replicas can
// be placed).
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{t: t, CredsDir: filepath.Join(dir, "auth")}
	users, err := natsauth.Init(c.CredsDir)
	if err != nil {
		t.Fatal(err)
	}
	nkeys, err := natsauth.ServerUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	c.Cluster, err = natsx.StartCluster(dir, n, nkeys)
	if c.Cluster != nil {
		t.Cleanup(c.Shutdown)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.WaitReady(t)
	return c
}

// Start starts a stopped node i again on its data and ports, and waits
// until the cluster counts it online.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if err := c.Cluster.Start(i); err != nil {
		c.t.Fatal(err)
	}
	c.WaitReady(c.t)
}

// WaitReady waits until the meta leader sees every running node online
// (so streams can be placed on any of them) and JetStream answers
// through each.
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Cluster.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range c.Size() {
		if c.Server(i) == nil {
			continue
		}
		_, js := c.ConnectAs(t, natsauth.Admin, i)
		for {
			actx, acancel := context.WithTimeout(ctx, time.Second)
			_, err := js.AccountInfo(actx)
			acancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("cluster node %d: JetStream not ready after 30s: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// ConnectAs connects as user to node first (failing over to the others);
// the connection closes when the test ends.
func (c *Cluster) ConnectAs(t testing.TB, user string, first int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, c.URL(first), c.CredsDir, user)
}
