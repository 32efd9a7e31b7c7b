// Command ledger runs Vigil's ledger service on its own.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "ledger:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := config.New("ledger", "Vigil ledger: per-tenant Merkle logs, signed checkpoints, proofs and evidence bundles.")
	common := config.AddCommon(fs)
	signingKey := fs.String("signing-key", "VIGIL_SIGNING_KEY", "", "base64 32-byte deployment signing seed (the ledger key is derived from it)")
	origin := fs.String("origin", "VIGIL_LEDGER_ORIGIN", ledger.DefaultConfig().Origin, "log origin prefix and checkpoint key name")
	chWait := fs.Duration("clickhouse-wait", "VIGIL_CLICKHOUSE_WAIT", 30*time.Second, "how long to wait for ClickHouse at start")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	seed, err := base64.StdEncoding.DecodeString(*signingKey)
	if err != nil || len(seed) != 32 {
		return errors.New("--signing-key (VIGIL_SIGNING_KEY) must be a base64 32-byte seed")
	}
	cfg := ledger.DefaultConfig()
	cfg.Origin = *origin
	if cfg.Seed, err = evidence.DeriveSeed(seed); err != nil {
		return err
	}
	nc, js, err := natsx.Connect(*common.NATSURL, "vigil-ledger", log)
	if err != nil {
		return err
	}
	defer nc.Drain()
	ch, err := daemon.OpenClickHouse(ctx, *common.ClickHouseDSN, *chWait, log)
	if err != nil {
		return err
	}
	defer ch.Close()
	reg := daemon.Registry()
	svc, err := ledger.New(cfg, ledger.Deps{JS: js, CH: ch, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := svc.Migrate(ctx); err != nil {
		return err
	}
	catalog := control.NewCatalog(js, log)
	if err := catalog.Run(ctx); err != nil {
		return err
	}
	if err := catalog.Sync(ctx); err != nil {
		return err
	}
	e, err := httpkit.NewServer(log, reg)
	if err != nil {
		return err
	}
	httpkit.HealthRoutes(e, reg, map[string]httpkit.Check{"nats": natsx.Ready(nc), "clickhouse": func(ctx context.Context) error { return ch.Ping(ctx) }})
	svc.Routes(e, catalog)
	return daemon.Run(ctx, log, e, *common.HTTPAddr, svc.Run)
}
