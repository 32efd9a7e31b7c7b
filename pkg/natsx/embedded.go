package natsx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"sync"
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
	// Cluster, when set, makes the server a node of a JetStream cluster
	// (streams with Replicas > 1 need one).
	Cluster *ClusterOptions
}

// ClusterOptions join an embedded server to a NATS cluster: every node
// has the same Name, its own ServerName and StoreDir, listens for routes
// on Host:Port and dials Routes (all nodes' route addresses; its own is
// ignored). Routes carry no credentials, so they must stay on a private
// network (loopback in tests).
type ClusterOptions struct {
	Name   string
	Host   string
	Port   int
	Routes []string
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
	so := &server.Options{
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
	}
	if c := o.Cluster; c != nil {
		so.Cluster = server.ClusterOpts{Name: c.Name, Host: c.Host, Port: c.Port}
		for _, r := range c.Routes {
			u, err := url.Parse("nats-route://" + r)
			if err != nil {
				return nil, fmt.Errorf("cluster route %q: %w", r, err)
			}
			so.Routes = append(so.Routes, u)
		}
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("configure nats-server: %w", err)
	}
	// NoLog leaves the server without a logger, so a port it cannot bind
	// would only show as a 10 s wait; this one keeps its fatal errors.
	fatal := &fatalLog{}
	srv.SetLoggerV2(fatal, false, false, false)
	go srv.Start()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if srv.ReadyForConnections(50 * time.Millisecond) {
			return srv, nil
		}
		if err := fatal.err(); err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("nats-server on %s:%d: %w", o.Host, o.Port, err)
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			return nil, fmt.Errorf("nats-server on %s:%d not ready after 10s", o.Host, o.Port)
		}
	}
}

// ErrServerFailed is a fatal error the embedded server reported while
// starting, such as a port it could not bind.
var ErrServerFailed = errors.New("nats-server failed")

// fatalLog is a server logger that drops everything but fatal errors,
// which the server reports instead of returning them.
type fatalLog struct {
	mu    sync.Mutex
	fatal string
}

func (l *fatalLog) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fatal == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrServerFailed, l.fatal)
}

func (l *fatalLog) Fatalf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fatal == "" {
		l.fatal = fmt.Sprintf(format, v...)
	}
}

func (*fatalLog) Noticef(string, ...any) {}
func (*fatalLog) Warnf(string, ...any)   {}
func (*fatalLog) Errorf(string, ...any)  {}
func (*fatalLog) Debugf(string, ...any)  {}
func (*fatalLog) Tracef(string, ...any)  {}
