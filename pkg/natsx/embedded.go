package natsx

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure an in-process NATS server with JetStream.
type EmbeddedOptions struct {
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// StoreDir holds JetStream's file store.
	StoreDir string
	// ServerName identifies the node in logs and cluster metadata.
	ServerName string
	// Users, when set, are the only clients admitted (see pkg/natsauth);
	// without them the server admits anyone who can reach its port.
	Users []*server.NkeyUser
	// TLS, when set, makes clients connect over TLS.
	TLS *tls.Config
}

// StartEmbedded runs a JetStream-enabled nats-server inside this process
// and waits until it accepts connections. Callers own Shutdown.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.ServerName == "" {
		o.ServerName = "vigil"
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: o.ServerName,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		// Event batches are up to 1,000 events; one message carries one
		// event, so the default 1 MiB cap comfortably fits a 64 KiB payload.
		MaxPayload: 8 << 20,
		Nkeys:      o.Users,
		TLSConfig:  o.TLS,
		TLS:        o.TLS != nil,
		TLSVerify:  o.TLS != nil && o.TLS.ClientAuth == tls.RequireAndVerifyClientCert,
		TLSTimeout: 2,
	})
	if err != nil {
		return nil, fmt.Errorf("configure nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats-server on %s:%d not ready after 10s", o.Host, o.Port)
	}
	return srv, nil
}
