package daemon_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// TestProcess starts a standalone service's process the way the service
// mains do — NATS, ClickHouse, health routes, a route of its own, one
// worker — checks it answers, and that cancelling stops the worker.
func TestProcess(t *testing.T) {
	env := natstest.Start(t)
	db := chtest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	fs := config.New("svc", "test service")
	common := config.AddCommon(fs)
	if err := fs.Parse([]string{"--nats-url", env.Server.ClientURL(), "--nats-creds", natsauth.SeedFile(env.CredsDir, natsauth.Admin), "--clickhouse-dsn", db.DSN, "--http-addr", addr, "--log-level", "error", "--clickhouse-wait", "10s"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := daemon.Start(ctx, "svc", common, daemon.ProcessOptions{ClickHouse: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.CH == nil || p.NC == nil || !p.NC.IsConnected() {
		t.Fatal("process is not connected")
	}
	workerDone := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- p.Run(ctx, daemon.Component{Name: "svc",
			Routes: func(e *echo.Echo) {
				e.GET("/hello", func(c echo.Context) error { return c.String(http.StatusOK, "hi") })
			},
			Workers: []daemon.Worker{func(ctx context.Context) error { <-ctx.Done(); close(workerDone); return nil }}})
	}()
	for _, path := range []string{"/hello", "/readyz", "/healthz", "/metrics"} {
		testkit.Eventually(t, path+" served", func() (bool, string) {
			res, err := http.Get("http://" + addr + path)
			if err != nil {
				return false, err.Error()
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("%s: HTTP %d", path, res.StatusCode)
			}
			return true, ""
		})
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-workerDone:
	default:
		t.Fatal("Run returned before its worker stopped")
	}
}

func TestStartWithoutNATS(t *testing.T) {
	fs := config.New("svc", "test service")
	common := config.AddCommon(fs)
	if err := fs.Parse([]string{"--nats-url", "nats://127.0.0.1:1", "--log-level", "error"}); err != nil {
		t.Fatal(err)
	}
	if _, err := daemon.Start(context.Background(), "svc", common, daemon.ProcessOptions{}); err == nil {
		t.Fatal("Start succeeded with no NATS server")
	}
}

// TestPublishers: Publishers(n) is JS and n-1 connections more, each
// authenticated as NC is (the same seed), and Close drains them.
func TestPublishers(t *testing.T) {
	env := natstest.Start(t)
	fs := config.New("svc", "test service")
	common := config.AddCommon(fs)
	if err := fs.Parse([]string{"--nats-url", env.Server.ClientURL(), "--nats-creds", natsauth.SeedFile(env.CredsDir, "ingest"), "--log-level", "error"}); err != nil {
		t.Fatal(err)
	}
	p, err := daemon.Start(context.Background(), "svc", common, daemon.ProcessOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := p.Publishers(3)
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	if len(pubs) != 3 || pubs[0] != p.JS {
		p.Close()
		t.Fatalf("Publishers(3) = %d contexts (first is JS: %v), want JS and 2 more", len(pubs), pubs[0] == p.JS)
	}
	cz, err := env.Server.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	users := map[string]string{}
	for _, c := range cz.Conns {
		users[c.Name] = c.AuthorizedUser
	}
	for _, name := range []string{"vigil-svc-pub1", "vigil-svc-pub2"} {
		if u, ok := users[name]; !ok || u == "" || u != users["vigil-svc"] {
			t.Errorf("connection %s: authorized user %q, want %q (the process's)", name, u, users["vigil-svc"])
		}
	}
	p.Close()
	testkit.Eventually(t, "publisher connections drained", func() (bool, string) {
		n := env.Server.NumClients() // the test's own admin connection stays
		return n == 1, fmt.Sprintf("%d clients", n)
	})
}
