package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
)

func controlConfig(cfg StackConfig) jetstream.StreamConfig {
	return streams.ControlConfig(cfg.API.Streams)
}

func runDev(ctx context.Context, args []string) error {
	fs := config.New("vigil dev", "Run every Vigil service in one process with an embedded NATS server.")
	common := config.AddCommon(fs)
	dataDir := fs.String("data-dir", "VIGIL_DATA_DIR", "./.vigil", "where the embedded NATS server keeps its JetStream store")
	natsListen := fs.String("nats-listen", "VIGIL_NATS_LISTEN", "127.0.0.1:4222", "address the embedded NATS server listens on (the CLI connects here)")
	chWait := fs.Duration("clickhouse-wait", "VIGIL_CLICKHOUSE_WAIT", 30*time.Second, "how long to wait for ClickHouse at start")
	dupWindow := fs.Duration("dedupe-window", "VIGIL_DEDUPE_WINDOW", streams.DefaultOptions.DuplicateWindow, "how long JetStream dedupes eventIds (older repeats are absorbed by the projections)")
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
	ic, ac := ingest.DefaultConfig(), api.DefaultConfig()
	ic.Streams, ac.Streams = so, so

	st, err := StartStack(ctx, StackConfig{
		DataDir: *dataDir, NATSHost: host, NATSPort: port,
		ClickHouseDSN: *common.ClickHouseDSN, ClickHouseWait: *chWait,
		Ingest: ic, API: ac, Log: log,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	if st.BootstrapKey != "" {
		fmt.Fprintf(os.Stdout, "\nCreated the first API key (owner of tenant \"default\"). It is shown only this once:\n\n    %s\n\n", st.BootstrapKey)
	}
	log.Info("vigil dev ready", slog.String("http", *common.HTTPAddr), slog.String("nats", st.NATS.ClientURL()),
		slog.String("clickhouse", *common.ClickHouseDSN), slog.String("data", *dataDir))
	ln, err := net.Listen("tcp", *common.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *common.HTTPAddr, err)
	}
	err = st.Serve(ctx, ln)
	log.Info("vigil dev stopped")
	return err
}
