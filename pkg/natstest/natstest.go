// Package natstest starts a real embedded JetStream server for tests.
package natstest

import (
	"log/slog"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsx"
)

// Env is a running server and a client connected to it.
type Env struct {
	Server *server.Server
	Conn   *nats.Conn
	JS     jetstream.JetStream
	// StoreDir is kept so a test can restart the server on the same data.
	StoreDir string
}

// Start runs a JetStream server on a random port with a temporary store,
// shut down when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn runs a server on storeDir, so that a test can stop one and start
// another on the same data.
func StartIn(t testing.TB, storeDir string) *Env {
	t.Helper()
	srv, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: -1, StoreDir: storeDir})
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := natsx.Connect(srv.ClientURL(), t.Name(), slog.New(slog.DiscardHandler))
	if err != nil {
		srv.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return &Env{Server: srv, Conn: nc, JS: js, StoreDir: storeDir}
}
