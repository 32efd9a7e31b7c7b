// Package natstest starts a real embedded JetStream server for tests. The
// server authenticates like production (pkg/natsauth): only NKey users are
// admitted, each service confined to its subjects, so every test runs with
// auth on.
package natstest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
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
// loopback, each node with its own store directory, all admitting the
// same NKey users. Nodes can be stopped and started again on their data
// and ports, which is a node lost and recovered.
type Cluster struct {
	t        testing.TB
	name     string
	nodes    []*clusterNode
	users    []*server.NkeyUser
	CredsDir string
}

type clusterNode struct {
	name, storeDir string
	clientPort     int
	routePort      int
	srv            *server.Server
}

// StartCluster runs an n-node JetStream cluster on loopback, shut down
// when the test ends, and returns once it has a meta leader (streams with
// up to n replicas can be created).
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{t: t, name: "vigil-test", CredsDir: filepath.Join(dir, "auth")}
	users, err := natsauth.Init(c.CredsDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.users, err = natsauth.ServerUsers(users); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		c.nodes = append(c.nodes, &clusterNode{
			name: fmt.Sprintf("n%d", i+1), storeDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			clientPort: freePort(t), routePort: freePort(t),
		})
	}
	// The nodes dial each other while they start, so start them together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.start(i) }()
	}
	wg.Wait()
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Stop(i)
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.WaitReady(t)
	return c
}

// freePort is a loopback port nothing listens on at the moment; a node
// keeps its ports across restarts.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (c *Cluster) start(i int) error {
	nd := c.nodes[i]
	var routes []string
	for _, o := range c.nodes {
		if o != nd {
			routes = append(routes, fmt.Sprintf("127.0.0.1:%d", o.routePort))
		}
	}
	srv, err := natsx.StartEmbedded(natsx.EmbeddedOptions{
		Port: nd.clientPort, StoreDir: nd.storeDir, ServerName: nd.name, Users: c.users,
		Cluster: &natsx.ClusterOptions{Name: c.name, Host: "127.0.0.1", Port: nd.routePort, Routes: routes},
	})
	if err != nil {
		return fmt.Errorf("cluster node %s: %w", nd.name, err)
	}
	nd.srv = srv
	return nil
}

// Size is the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.nodes) }

// Server is node i's server (nil while it is stopped).
func (c *Cluster) Server(i int) *server.Server { return c.nodes[i].srv }

// URL lists every node's client URL, node first first: a client given it
// connects to node first and fails over to the others.
func (c *Cluster) URL(first int) string {
	urls := []string{fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[first].clientPort)}
	for i, nd := range c.nodes {
		if i != first {
			urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.clientPort))
		}
	}
	return strings.Join(urls, ",")
}

// Stop shuts node i down (a node lost); its data stays for Start.
func (c *Cluster) Stop(i int) {
	if nd := c.nodes[i]; nd.srv != nil {
		nd.srv.Shutdown()
		nd.srv.WaitForShutdown()
		nd.srv = nil
	}
}

// Start starts a stopped node i again on its data and ports.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	if c.nodes[i].srv != nil {
		return
	}
	if err := c.start(i); err != nil {
		c.t.Fatal(err)
	}
}

// WaitReady waits until JetStream answers through every running node
// (the cluster has a meta leader and every node knows it).
func (c *Cluster) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i, nd := range c.nodes {
		if nd.srv == nil {
			continue
		}
		_, js := c.ConnectAs(t, natsauth.Admin, i)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := js.AccountInfo(ctx)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s: JetStream not ready after 30s: %v", nd.name, err)
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
