package natsauth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	// File is the CA certificate's PEM file.
	File string
}

func newCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, dir: dir, File: filepath.Join(dir, name+"-ca.pem")}
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// issue signs a certificate for name (a server for 127.0.0.1 and
// localhost, or a client) and returns its certificate and key files.
func (ca *testCA) issue(t *testing.T, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLS runs an authenticated server over TLS with certificates from a
// CA made here, with and without client certificates, and checks who is
// admitted.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "vigil-test")
	other := newCA(t, dir, "other")
	srvCert, srvKey := ca.issue(t, "nats", true)
	cliCert, cliKey := ca.issue(t, "ingest", false)
	strangerCert, strangerKey := other.issue(t, "stranger", false)
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
			opts, err := natsauth.ClientOptions(tc.seed, tc.client)
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
		opts, err := natsauth.ClientOptions(seed, natsauth.TLSFiles{})
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
		if _, err := natsauth.ClientOptions(seed, natsauth.TLSFiles{Cert: cliCert}); err == nil {
			t.Fatal("accepted a certificate without its key")
		}
	})
	t.Run("server TLS without a key", func(t *testing.T) {
		if _, err := natsauth.ServerTLS(natsauth.TLSFiles{Cert: srvCert}); err == nil {
			t.Fatal("accepted a certificate without its key")
		}
	})
	if _, err := natsauth.ClientOptions(filepath.Join(dir, "missing.nk"), natsauth.TLSFiles{}); !errors.Is(err, natsauth.ErrNoCredential) {
		t.Fatalf("missing seed: %v", err)
	}
}
