// Package natstest starts a real embedded JetStream server for tests. The
// server authenticates like production (pkg/natsauth): only NKey users are
// admitted, each service confined to its subjects, so every test runs with
// auth on.
package natstest

import (
	"log/slog"
	"path/filepath"
	"testing"

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
	opts, err := natsauth.ClientOptions(natsauth.FileCredential(natsauth.SeedFile(e.CredsDir, user)), natsauth.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := natsx.Connect(e.Server.ClientURL(), t.Name()+"/"+user, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}
