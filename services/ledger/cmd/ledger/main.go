// Command ledger runs Vigil's ledger service on its own.
package main

import (
	"context"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

func main() { daemon.Main("ledger", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("ledger", "Vigil ledger: per-tenant Merkle logs, signed checkpoints, proofs and evidence bundles.")
	common, so, signingKey, oidcFlags := config.AddCommon(fs), fs.Streams(), fs.SigningKey(), fs.OIDC()
	origin := fs.String("origin", "VIGIL_LEDGER_ORIGIN", ledger.DefaultConfig().Origin, "log origin prefix and checkpoint key name")
	tenantMetrics := fs.MetricsTenantLabels()
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := ledger.DefaultConfig()
	cfg.Origin, cfg.TenantMetrics = *origin, *tenantMetrics
	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	seed, err := signingKey.Required()
	if err != nil {
		return err
	}
	if cfg.Seed, err = evidence.DeriveSeed(seed); err != nil {
		return err
	}
	if cfg.Streams, err = so.Options(); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "ledger", common, daemon.ProcessOptions{ClickHouse: true})
	if err != nil {
		return err
	}
	defer p.Close()
	svc, err := ledger.New(cfg, ledger.Deps{JS: p.JS, CH: p.CH, Log: p.Log, Registerer: p.Reg})
	if err != nil {
		return err
	}
	catalog := control.NewCatalog(p.JS, p.Log, control.WithOIDC(verifier))
	return p.Run(ctx, catalog.Component(), svc.Component(catalog))
}
