package stack

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
)

// NATSSecurity says how the embedded NATS server of a stack admits
// clients.
type NATSSecurity string

const (
	// NATSAuth (the default) admits only the NKey users of pkg/natsauth,
	// whose seeds are generated once into <data-dir>/creds (0600).
	NATSAuth NATSSecurity = "auth"
	// NATSTLS is NATSAuth over TLS, with a CA generated into
	// <data-dir>/tls at each start.
	NATSTLS NATSSecurity = "tls"
	// NATSOpen admits anyone who reaches the port. Only `vigil bench
	// --nats open` uses it, to measure what authentication costs.
	NATSOpen NATSSecurity = "open"
)

// ParseNATSSecurity parses a --nats-security value; "" is NATSAuth.
func ParseNATSSecurity(s string) (NATSSecurity, error) {
	switch NATSSecurity(s) {
	case "", NATSAuth:
		return NATSAuth, nil
	case NATSTLS, NATSOpen:
		return NATSSecurity(s), nil
	}
	return "", fmt.Errorf("NATS security %q: want auth, tls or open", s)
}

// CredsDir is where a stack keeps the NATS seeds of its data directory:
// the CLI connects with CredsDir/admin.nk by default.
func CredsDir(dataDir string) string { return filepath.Join(dataDir, "creds") }

// LocalNATS is how a stack's own clients reach its embedded server.
type LocalNATS struct {
	url   string
	sec   NATSSecurity
	creds string
	tls   natsauth.TLSFiles
}

// StartNATS starts the embedded server of cfg (its DataDir, NATSHost,
// NATSPort and NATSSecurity), for the stack and for CLI commands that
// need the data directory's NATS while no stack runs.
func StartNATS(cfg Config) (*server.Server, *LocalNATS, error) {
	sec, err := ParseNATSSecurity(string(cfg.NATSSecurity))
	if err != nil {
		return nil, nil, err
	}
	l := &LocalNATS{sec: sec, creds: CredsDir(cfg.DataDir)}
	o := natsx.EmbeddedOptions{Host: cfg.NATSHost, Port: cfg.NATSPort, StoreDir: filepath.Join(cfg.DataDir, "nats")}
	if sec != NATSOpen {
		users, err := natsauth.Init(l.creds)
		if err != nil {
			return nil, nil, err
		}
		if o.Users, err = natsauth.ServerUsers(users); err != nil {
			return nil, nil, err
		}
	}
	if sec == NATSTLS {
		ca, err := natsauth.NewCA(filepath.Join(cfg.DataDir, "tls"), "vigil-dev", 365*24*time.Hour)
		if err != nil {
			return nil, nil, err
		}
		srvFiles, err := ca.Issue("nats", true)
		if err != nil {
			return nil, nil, err
		}
		if o.TLS, err = natsauth.ServerTLS(natsauth.TLSFiles{Cert: srvFiles.Cert, Key: srvFiles.Key}); err != nil {
			return nil, nil, err
		}
		l.tls = natsauth.TLSFiles{CA: ca.File}
	}
	srv, err := natsx.StartEmbedded(o)
	if err != nil {
		return nil, nil, err
	}
	l.url = srv.ClientURL()
	return srv, l, nil
}

// Connect connects to the stack's server as user (a service or
// natsauth.Admin).
func (l *LocalNATS) Connect(user, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	var cred natsauth.Credential
	if l.sec != NATSOpen {
		cred = natsauth.FileCredential(natsauth.SeedFile(l.creds, user))
	}
	opts, err := natsauth.ClientOptions(cred, l.tls)
	if err != nil {
		return nil, nil, err
	}
	return natsx.Connect(l.url, name, log, opts...)
}
