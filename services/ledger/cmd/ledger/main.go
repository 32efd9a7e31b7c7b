// Command ledger runs Vigil's ledger service on its own.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

func main() { daemon.Main("ledger", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("ledger", "Vigil ledger: per-tenant Merkle logs, signed checkpoints, proofs and evidence bundles.")
	common := config.AddCommon(fs)
	signingKey := fs.String("signing-key", "VIGIL_SIGNING_KEY", "", "base64 32-byte deployment signing seed (the ledger key is derived from it)")
	origin := fs.String("origin", "VIGIL_LEDGER_ORIGIN", ledger.DefaultConfig().Origin, "log origin prefix and checkpoint key name")
	chWait := fs.Duration("clickhouse-wait", "VIGIL_CLICKHOUSE_WAIT", 30*time.Second, "how long to wait for ClickHouse at start")
	tenantMetrics := fs.BoolEnv("metrics-tenant-labels", "VIGIL_METRICS_TENANT_LABELS", false, "export per-tenant metrics (vigil_ledger_tree_size{tenant}); off keeps tenant ids out of /metrics")
	if err := fs.Parse(args); err != nil {
		return err
	}
	seed, err := base64.StdEncoding.DecodeString(*signingKey)
	if err != nil || len(seed) != 32 {
		return errors.New("--signing-key (VIGIL_SIGNING_KEY) must be a base64 32-byte seed")
	}
	cfg := ledger.DefaultConfig()
	cfg.Origin, cfg.TenantMetrics = *origin, *tenantMetrics
	if cfg.Seed, err = evidence.DeriveSeed(seed); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "ledger", common, daemon.ProcessOptions{ClickHouseWait: *chWait})
	if err != nil {
		return err
	}
	defer p.Close()
	log, js, ch, reg := p.Log, p.JS, p.CH, p.Reg
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
	return p.Serve(ctx, func(e *echo.Echo) {
		svc.Routes(e, catalog)
	}, svc.Run)
}
