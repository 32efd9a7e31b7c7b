package natsauth_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

func newCA(t *testing.T, dir, name string) *natsauth.CA {
	t.Helper()
	ca, err := natsauth.NewCA(dir, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *natsauth.CA, name string, server bool) (cert, key string) {
	t.Helper()
	f, err := ca.Issue(name, server)
	if err != nil {
		t.Fatal(err)
	}
	return f.Cert, f.Key
}

// TestTLS runs an authenticated server over TLS with certificates from a
// CA made here, with and without client certificates, and checks who is
// admitted.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "vigil-test")
	other := newCA(t, dir, "other")
	srvCert, srvKey := issue(t, ca, "nats", true)
	cliCert, cliKey := issue(t, ca, "ingest", false)
	strangerCert, strangerKey := issue(t, other, "stranger", false)
	creds := filepath.Join(dir, "creds")
	users, err := natsauth.Init(creds)
	if err != nil {
		t.Fatal(err)
	}
	nkeys, err := natsauth.ServerUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	seed := natsauth.SeedFile(creds, streams.ServiceIngest)

	for _, tc := range []struct {
		name string
		// server verifies client certificates against the CA.
		verifyClients bool
		client        natsauth.TLSFiles
		seed          string
		// want is nil when the client must be admitted.
		wantErr bool
	}{
		{"verified server, credential", false, natsauth.TLSFiles{CA: ca.File}, seed, false},
		{"server from another CA", false, natsauth.TLSFiles{CA: other.File}, seed, true},
		{"TLS without credential", false, natsauth.TLSFiles{CA: ca.File}, "", true},
		{"mutual TLS, client certificate", true, natsauth.TLSFiles{CA: ca.File, Cert: cliCert, Key: cliKey}, seed, false},
		{"mutual TLS, no client certificate", true, natsauth.TLSFiles{CA: ca.File}, seed, true},
		{"mutual TLS, certificate of another CA", true, natsauth.TLSFiles{CA: ca.File, Cert: strangerCert, Key: strangerKey}, seed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := natsauth.TLSFiles{Cert: srvCert, Key: srvKey}
			if tc.verifyClients {
				st.CA = ca.File
			}
			tlsCfg, err := natsauth.ServerTLS(st)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: -1, StoreDir: t.TempDir(), Users: nkeys, TLS: tlsCfg})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			opts, err := natsauth.ClientOptions(natsauth.FileCredential(tc.seed), tc.client)
			if err != nil {
				t.Fatal(err)
			}
			nc, _, err := natsx.Connect(srv.ClientURL(), tc.name, discard, opts...)
			if tc.wantErr {
				if err == nil {
					nc.Close()
					t.Fatal("admitted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if !nc.TLSRequired() {
				t.Fatal("connection is not TLS")
			}
			if _, err := nc.TLSConnectionState(); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("plain client refused by a TLS server", func(t *testing.T) {
		tlsCfg, err := natsauth.ServerTLS(natsauth.TLSFiles{Cert: srvCert, Key: srvKey})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := natsx.StartEmbedded(natsx.EmbeddedOptions{Port: -1, StoreDir: t.TempDir(), Users: nkeys, TLS: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		opts, err := natsauth.ClientOptions(natsauth.FileCredential(seed), natsauth.TLSFiles{})
		if err != nil {
			t.Fatal(err)
		}
		// No CA: the system roots do not know the test CA.
		nc, err := nats.Connect(srv.ClientURL(), opts...)
		if err == nil {
			nc.Close()
			t.Fatal("admitted without a trusted server certificate")
		}
	})

	t.Run("half a client certificate", func(t *testing.T) {
		if _, err := natsauth.ClientOptions(natsauth.FileCredential(seed), natsauth.TLSFiles{Cert: cliCert}); err == nil {
			t.Fatal("accepted a certificate without its key")
		}
	})
	t.Run("server TLS without a key", func(t *testing.T) {
		if _, err := natsauth.ServerTLS(natsauth.TLSFiles{Cert: srvCert}); err == nil {
			t.Fatal("accepted a certificate without its key")
		}
	})
	if _, err := natsauth.ClientOptions(natsauth.FileCredential(filepath.Join(dir, "missing.nk")), natsauth.TLSFiles{}); !errors.Is(err, natsauth.ErrNoCredential) {
		t.Fatalf("missing seed: %v", err)
	}
}
