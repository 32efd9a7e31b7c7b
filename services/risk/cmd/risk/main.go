// Command risk runs Vigil's risk service on its own: baselines, anomalies
// and session scores for the partitions it leases, the risk projections,
// and the risk HTTP endpoints (profiles, reset, session risk, metrics).
// Run several with the same --partitions to share the work.
package main

import (
	"context"
	"time"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/services/risk"
)

func main() { daemon.Main("risk", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("risk", "Vigil risk: agent baselines, anomalies, session risk scores and metrics.")
	common, so, instance, oidcFlags := config.AddCommon(fs), fs.Streams(), fs.InstanceID(), fs.OIDC()
	cfg := risk.DefaultConfig()
	partitions := fs.Int("partitions", "VIGIL_RISK_PARTITIONS", cfg.Partitions, "partitions of agent state (the same on every instance)")
	warmup := fs.Int("warmup", "VIGIL_RISK_WARMUP", cfg.Baseline.Warmup, "observations before novelty and rate spikes are flagged")
	burst := fs.Int("burst", "VIGIL_RISK_BURST", cfg.Baseline.BurstCount, "errors or blocks within the burst window that make a burst")
	window := fs.Duration("burst-window", "VIGIL_RISK_BURST_WINDOW", time.Duration(cfg.Baseline.BurstWindowMS)*time.Millisecond, "burst window (event time)")
	leaseTTL := fs.Duration("lease-ttl", "VIGIL_RISK_LEASE_TTL", cfg.LeaseTTL, "how long a stopped instance keeps its partitions")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Partitions, cfg.Baseline.Warmup, cfg.Baseline.BurstCount = *partitions, *warmup, *burst
	cfg.Baseline.BurstWindowMS, cfg.LeaseTTL, cfg.InstanceID = window.Milliseconds(), *leaseTTL, instance.ID()
	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	if cfg.Streams, err = so.Options(); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "risk", common, daemon.ProcessOptions{ClickHouse: true})
	if err != nil {
		return err
	}
	defer p.Close()
	catalog := control.NewCatalog(p.JS, p.Log, control.WithOIDC(verifier))
	svc, err := risk.New(cfg, risk.Deps{NC: p.NC, JS: p.JS, CH: p.CH, Catalog: catalog, Log: p.Log, Registerer: p.Reg})
	if err != nil {
		return err
	}
	return p.Run(ctx, catalog.Component(), svc.Component())
}
