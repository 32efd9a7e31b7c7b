package natsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of embedded servers on loopback, for
// tests and `vigil chaos`: each node has its own store directory and
// keeps its ports across a stop and start, which is a node lost and
// recovered.
type Cluster struct {
	mu    sync.Mutex
	nodes []*clusterNode
	users []*server.NkeyUser
}

type clusterNode struct {
	name, storeDir        string
	clientPort, routePort int
	srv                   *server.Server
}

// StartCluster starts n nodes under dir, admitting users. It returns
// once each accepts clients; WaitReady waits for the meta leader. The
// caller owns Shutdown (also after an error).
//
// A port picked free can be taken (by another process, or as the local
// port of an outgoing connection) before its node binds it; the cluster
// is then started again on fresh ports, up to three times.
func StartCluster(dir string, n int, users []*server.NkeyUser) (*Cluster, error) {
	c := &Cluster{users: users}
	var err error
	for range 3 {
		if err = c.start(dir, n); err == nil || !errors.Is(err, ErrServerFailed) {
			return c, err
		}
		c.Shutdown()
		if rerr := os.RemoveAll(dir); rerr != nil {
			return c, fmt.Errorf("%w (and clearing %s to start again: %w)", err, dir, rerr)
		}
	}
	return c, err
}

func (c *Cluster) start(dir string, n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	c.nodes = c.nodes[:0]
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &clusterNode{name: name, storeDir: filepath.Join(dir, name), clientPort: ports[2*i], routePort: ports[2*i+1]})
	}
	// The nodes dial each other while they start, so start them together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.Start(i) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// freePorts is n distinct loopback ports nothing listens on at the
// moment (all held open together, so no two are the same).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start starts node i (again, on its data and ports); a running node is
// left alone.
func (c *Cluster) Start(i int) error {
	c.mu.Lock()
	nd := c.nodes[i]
	running := nd.srv != nil
	var routes []string
	for _, o := range c.nodes {
		if o != nd {
			routes = append(routes, fmt.Sprintf("127.0.0.1:%d", o.routePort))
		}
	}
	c.mu.Unlock()
	if running {
		return nil
	}
	srv, err := StartEmbedded(EmbeddedOptions{
		Port: nd.clientPort, StoreDir: nd.storeDir, ServerName: nd.name, Users: c.users,
		Cluster: &ClusterOptions{Name: "vigil", Host: "127.0.0.1", Port: nd.routePort, Routes: routes},
	})
	if err != nil {
		return fmt.Errorf("cluster node %s: %w", nd.name, err)
	}
	c.mu.Lock()
	nd.srv = srv
	c.mu.Unlock()
	return nil
}

// Stop shuts node i down (a node lost); its data stays for Start.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.nodes {
		c.Stop(i)
	}
}

// Size is the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.nodes) }

// Server is node i's server (nil while it is stopped).
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Node is the index of the node named name (a stream's leader in its
// cluster info), or -1.
func (c *Cluster) Node(name string) int {
	for i, nd := range c.nodes {
		if nd.name == name {
			return i
		}
	}
	return -1
}

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

// WaitReady waits until some node leads the meta group and sees every
// running node online, so that streams can be placed on any of them.
func (c *Cluster) WaitReady(ctx context.Context) error {
	for {
		running, seen := 0, 0
		c.mu.Lock()
		for _, nd := range c.nodes {
			if nd.srv != nil {
				running++
				seen = max(seen, len(nd.srv.JetStreamClusterPeers()))
			}
		}
		c.mu.Unlock()
		if running > 0 && seen == running {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: the meta leader sees %d of %d running nodes: %w", seen, running, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
