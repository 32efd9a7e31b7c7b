package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsauth"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

func controlConfig(cfg StackConfig) jetstream.StreamConfig {
	return streams.ControlConfig(cfg.API.Streams)
}

func runDev(ctx context.Context, args []string) error {
	fs := config.New("vigil dev", "Run every Vigil service in one process with an embedded NATS server.")
	common := config.AddCommon(fs)
	oidcFlags := config.AddOIDC(fs)
	dataDir := fs.String("data-dir", "VIGIL_DATA_DIR", "./.vigil", "where the embedded NATS server keeps its JetStream store")
	natsListen := fs.String("nats-listen", "VIGIL_NATS_LISTEN", "127.0.0.1:4222", "address the embedded NATS server listens on (the CLI connects here)")
	chWait := fs.Duration("clickhouse-wait", "VIGIL_CLICKHOUSE_WAIT", 30*time.Second, "how long to wait for ClickHouse at start")
	dupWindow := fs.Duration("dedupe-window", "VIGIL_DEDUPE_WINDOW", streams.DefaultOptions.DuplicateWindow, "how long JetStream dedupes eventIds (older repeats are absorbed by the projections)")
	natsTLS := fs.Bool("nats-tls", false, "serve NATS over TLS with a CA generated into <data-dir>/tls (clients pass --nats-tls-ca <data-dir>/tls/vigil-dev-ca.pem)")
	signingKey := fs.String("signing-key", "VIGIL_SIGNING_KEY", "", "base64 Ed25519 seed that signs policy packs (default: generated once into <data-dir>/signing.key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(*natsListen)
	if err != nil {
		return fmt.Errorf("--nats-listen: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("--nats-listen port: %w", err)
	}
	so := streams.DefaultOptions
	so.DuplicateWindow = *dupWindow
	ic, ac, pc := ingest.DefaultConfig(), api.DefaultConfig(), policysvc.DefaultConfig()
	ic.Streams, ac.Streams, pc.Streams = so, so, so
	if pc.SigningSeed, err = signingSeed(*signingKey, *dataDir); err != nil {
		return err
	}

	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	st, err := StartStack(ctx, StackConfig{
		DataDir: *dataDir, NATSHost: host, NATSPort: port, NATSSecurity: devNATSSecurity(*natsTLS),
		ClickHouseDSN: *common.ClickHouseDSN, ClickHouseWait: *chWait,
		Ingest: ic, API: ac, Policy: pc, OIDC: verifier, Log: log,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	if st.BootstrapKey != "" {
		fmt.Fprintf(os.Stdout, "\nCreated the first API key (owner of tenant \"default\"). It is shown only this once:\n\n    %s\n\n", st.BootstrapKey)
	}
	log.Info("vigil dev ready", slog.String("http", *common.HTTPAddr), slog.String("nats", st.NATS.ClientURL()),
		slog.String("clickhouse", *common.ClickHouseDSN), slog.String("data", *dataDir),
		slog.String("nats_admin_creds", natsauth.SeedFile(CredsDir(*dataDir), natsauth.Admin)))
	ln, err := net.Listen("tcp", *common.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *common.HTTPAddr, err)
	}
	err = st.Serve(ctx, ln)
	log.Info("vigil dev stopped")
	return err
}

func devNATSSecurity(tls bool) NATSSecurity {
	if tls {
		return NATSTLS
	}
	return NATSAuth
}

// signingSeed decodes the configured pack-signing seed or, in dev, keeps
// one in the data directory so packs stay verifiable across restarts.
func signingSeed(configured, dataDir string) ([]byte, error) {
	if configured != "" {
		seed, err := base64.StdEncoding.DecodeString(configured)
		if err != nil || len(seed) != 32 {
			return nil, fmt.Errorf("--signing-key must be 32 bytes, base64-encoded")
		}
		return seed, nil
	}
	path := filepath.Join(dataDir, "signing.key")
	if b, err := os.ReadFile(path); err == nil {
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(seed) != 32 {
			return nil, fmt.Errorf("%s is not a base64 32-byte seed", path)
		}
		return seed, nil
	}
	seed := rules.NewSeed()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(seed)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("store signing key: %w", err)
	}
	return seed, nil
}
