package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/telemetry"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// devFlags are `vigil dev`'s settings: the common ones, and every
// service's deployment settings under the names the service binaries use.
type devFlags struct {
	common                           config.Common
	oidc                             config.OIDC
	consoleSessions                  config.ConsoleSessions
	streams                          *config.Streams
	dataDir, natsListen              *string
	natsTLS                          *bool
	signing, redaction, seal, notify *config.Secret
	judgeAllow, notifyAllow          *config.CIDRs
	maxAgents                        *int
	tenantMetrics                    *bool
	prices                           *config.BudgetPrices
	services                         *string
	instance                         *config.Instance
	memoryLimitMiB                   *int
}

func addDevFlags(fs *config.FlagSet) devFlags {
	return devFlags{
		common: config.AddCommon(fs), oidc: fs.OIDC(), consoleSessions: fs.ConsoleSessions(), streams: fs.Streams(),
		dataDir:    fs.String("data-dir", "VIGIL_DATA_DIR", "./.vigil", "where the embedded NATS server keeps its JetStream store, and dev keeps generated keys"),
		natsListen: fs.String("nats-listen", "VIGIL_NATS_LISTEN", "127.0.0.1:4222", "address the embedded NATS server listens on (the CLI connects here)"),
		natsTLS:    fs.Bool("nats-tls", false, "serve NATS over TLS with a CA generated into <data-dir>/tls (clients pass --nats-tls-ca <data-dir>/tls/vigil-dev-ca.pem)"),
		signing:    fs.SigningKey(), redaction: fs.RedactionKey(), seal: fs.JudgeSealKey(), notify: fs.NotifierKey(),
		judgeAllow: fs.JudgeAllow(), notifyAllow: fs.NotifierAllowPrivate(), maxAgents: fs.MaxAgents(),
		tenantMetrics: fs.MetricsTenantLabels(), prices: fs.BudgetPrices(),
		services:       fs.String("services", "VIGIL_SERVICES", "", "run only these services (comma-separated: api, ingest, policy, guardian, risk, ledger, notifier) on the NATS at --nats-url, with the seeds in <data-dir>/creds, instead of all of them on an embedded server: one replica of a split deployment, as `vigil chaos` runs them"),
		instance:       fs.InstanceID(),
		memoryLimitMiB: fs.Int("memory-limit-mib", "VIGIL_MEMORY_LIMIT_MIB", 256, "soft limit on the process's Go memory in MiB (the runtime's GOMEMLIMIT, which wins when set): past it the garbage collector runs more often instead of the heap growing; 0 for none"),
	}
}

// stackConfig turns the flags into the stack's configuration. Keys not
// given are generated once into the data directory (signing and notifier
// here, redaction and sealing by StartStack); never into NATS.
func (f devFlags) stackConfig(log *slog.Logger) (StackConfig, error) {
	cfg := StackConfig{DataDir: *f.dataDir, ClickHouseDSN: *f.common.ClickHouseDSN, ClickHouseCluster: *f.common.ClickHouseCluster, ClickHouseWait: *f.common.ClickHouseWait, Log: log,
		Ingest: ingest.DefaultConfig(), API: api.DefaultConfig(), Policy: policysvc.DefaultConfig()}
	host, portStr, err := net.SplitHostPort(*f.natsListen)
	if err != nil {
		return cfg, fmt.Errorf("--nats-listen: %w", err)
	}
	cfg.NATSHost, cfg.NATSSecurity = host, devNATSSecurity(*f.natsTLS)
	if cfg.NATSPort, err = strconv.Atoi(portStr); err != nil {
		return cfg, fmt.Errorf("--nats-listen port: %w", err)
	}
	if cfg.Streams, err = f.streams.Options(); err != nil {
		return cfg, err
	}
	if *f.services != "" {
		for _, s := range strings.Split(*f.services, ",") {
			cfg.Services = append(cfg.Services, strings.TrimSpace(s))
		}
		cfg.NATSURL, cfg.NATSCredsDir, cfg.InstanceID = *f.common.NATSURL, CredsDir(*f.dataDir), f.instance.ID()
	}
	cfg.Ingest.MaxAgents, cfg.API.MaxAgents = *f.maxAgents, *f.maxAgents
	cfg.TenantMetrics = *f.tenantMetrics
	if cfg.OIDC, err = f.oidc.Verifier(); err != nil {
		return cfg, err
	}
	cfg.API.Console.OIDCRedirectURL, cfg.API.Console.OIDCClientSecret = f.oidc.Client()
	cfg.API.Console.SessionTTL, cfg.API.Console.IdleTimeout = *f.consoleSessions.TTL, *f.consoleSessions.Idle
	if cfg.Policy.SigningSeed, err = f.signing.OrFile(filepath.Join(*f.dataDir, "signing.key")); err != nil {
		return cfg, err
	}
	if cfg.NotifierKey, err = f.notify.OrFile(filepath.Join(*f.dataDir, "notifier.key")); err != nil {
		return cfg, err
	}
	if cfg.Ingest.RedactionKey, err = f.redaction.Optional(); err != nil {
		return cfg, err
	}
	cfg.Policy.RedactionKey = cfg.Ingest.RedactionKey
	if cfg.API.Judge.SealSecret, err = f.seal.Optional(); err != nil {
		return cfg, err
	}
	cfg.Policy.Judge.SealSecret = cfg.API.Judge.SealSecret
	if cfg.API.Judge.Allow, err = f.judgeAllow.Prefixes(); err != nil {
		return cfg, err
	}
	cfg.Policy.Judge.Allow = cfg.API.Judge.Allow
	if cfg.Policy.BudgetPrices, err = f.prices.Prices(); err != nil {
		return cfg, err
	}
	cfg.NotifierAllowPrivate, err = f.notifyAllow.Prefixes()
	return cfg, err
}

func runDev(ctx context.Context, args []string) error {
	fs := config.New("vigil dev", "Run every Vigil service in one process with an embedded NATS server.")
	f := addDevFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*f.common.LogLevel, *f.common.LogFormat)
	if err != nil {
		return err
	}
	setMemoryLimit(*f.memoryLimitMiB)
	cfg, err := f.stackConfig(log)
	if err != nil {
		return err
	}
	tracing, err := telemetry.Start(ctx, f.common.Telemetry.Config("vigil-dev"), log)
	if err != nil {
		return err
	}
	// Deferred first, so it runs last: after the stack stopped, the spans
	// of its last requests are exported.
	defer func() {
		if err := tracing.Shutdown(context.Background()); err != nil {
			log.Warn("tracing shutdown", slog.String("error", err.Error()))
		}
	}()
	cfg.Tracer = tracing.Provider
	st, err := StartStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if st.BootstrapKey != "" {
		fmt.Fprintf(os.Stdout, "\nCreated the first API key (owner of tenant \"default\"). It is shown only this once:\n\n    %s\n\n", st.BootstrapKey)
	}
	natsURL := cfg.NATSURL
	if st.NATS != nil {
		natsURL = st.NATS.ClientURL()
	}
	log.Info("vigil dev ready", slog.String("http", *f.common.HTTPAddr), slog.String("nats", natsURL),
		slog.String("clickhouse", *f.common.ClickHouseDSN), slog.String("data", *f.dataDir),
		slog.String("nats_admin_creds", natsauth.SeedFile(CredsDir(*f.dataDir), natsauth.Admin)))
	ln, err := net.Listen("tcp", *f.common.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *f.common.HTTPAddr, err)
	}
	err = st.Serve(ctx, ln)
	log.Info("vigil dev stopped")
	return err
}

// setMemoryLimit sets the Go runtime's soft memory limit to mib MiB unless
// GOMEMLIMIT already set one (the runtime reports no limit as MaxInt64).
// The whole stack, its embedded NATS and its buffers share one process, and
// the default GC target (GOGC=100) lets the heap grow to twice what is live:
// under a backlog that is the difference between a peak above 300 MiB and
// one below it.
func setMemoryLimit(mib int) {
	if mib <= 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		return
	}
	debug.SetMemoryLimit(int64(mib) << 20)
}

func devNATSSecurity(tls bool) NATSSecurity {
	if tls {
		return NATSTLS
	}
	return NATSAuth
}
