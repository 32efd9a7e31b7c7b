package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/natsauth"
)

func runNATS(_ context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		return errors.New("usage: vigil nats init [--dir DIR]")
	}
	return runNATSInit(args[1:], out)
}

// natsConfFile is the nats-server configuration `vigil nats init` writes.
const natsConfFile = "nats.conf"

// runNATSInit writes what an external nats-server and the services need
// to authenticate: a seed per service and for the CLI (DIR/creds, 0600),
// the same seeds as docker env files (DIR/<user>.env, 0600) and the
// server's authorization block (DIR/nats.conf). Seeds already there are
// kept, so it is safe to run again after an upgrade adds permissions.
func runNATSInit(args []string, out io.Writer) error {
	fs := config.New("vigil nats init", "Generate NATS credentials for every service and the server configuration that admits them.")
	dir := fs.String("dir", "VIGIL_NATS_AUTH_DIR", filepath.Join("deploy", "nats"), "directory to write creds/, <user>.env and nats.conf into")
	tlsCert := fs.String("tls-cert", "", "", "server certificate path as the NATS server sees it (enables TLS in nats.conf)")
	tlsKey := fs.String("tls-key", "", "", "server key path as the NATS server sees it")
	tlsCA := fs.String("tls-ca", "", "", "CA path as the NATS server sees it: clients must then present certificates it signed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t := natsauth.TLSFiles{CA: *tlsCA, Cert: *tlsCert, Key: *tlsKey}
	if t.Enabled() && (t.Cert == "" || t.Key == "") {
		return errors.New("--tls-cert and --tls-key go together (--tls-ca is optional)")
	}
	seeds := filepath.Join(*dir, "creds")
	users, err := natsauth.Init(seeds)
	if err != nil {
		return err
	}
	if err := natsauth.WriteEnvFiles(seeds, *dir); err != nil {
		return err
	}
	conf, err := natsauth.ServerConfig(users, t)
	if err != nil {
		return err
	}
	// The configuration lists public keys only; the server's user must be
	// able to read it.
	if err := os.WriteFile(filepath.Join(*dir, natsConfFile), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", natsConfFile, err)
	}
	fmt.Fprintf(out, "Wrote NATS credentials for %d users to %s:\n", len(users), *dir)
	fmt.Fprintf(out, "  %s          server authorization (mount it and run nats-server -c)\n", natsConfFile)
	fmt.Fprintf(out, "  <user>.env         VIGIL_NATS_NKEY for each service's container (0600)\n")
	fmt.Fprintf(out, "  creds/<user>.nk    the same seeds as files, for --nats-creds (0600)\n")
	fmt.Fprintf(out, "The admin credential (%s) is unrestricted: keep it for the CLI.\n", natsauth.Admin)
	return nil
}
