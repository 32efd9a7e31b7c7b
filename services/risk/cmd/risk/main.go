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
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/risk"
)

func main() { daemon.Main("risk", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("risk", "Vigil risk: agent baselines, anomalies, session risk scores and metrics.")
	common := config.AddCommon(fs)
	cfg := risk.DefaultConfig()
	partitions := fs.Int("partitions", "VIGIL_RISK_PARTITIONS", cfg.Partitions, "partitions of agent state (the same on every instance)")
	warmup := fs.Int("warmup", "VIGIL_RISK_WARMUP", cfg.Baseline.Warmup, "observations before novelty and rate spikes are flagged")
	burst := fs.Int("burst", "VIGIL_RISK_BURST", cfg.Baseline.BurstCount, "errors or blocks within the burst window that make a burst")
	window := fs.Duration("burst-window", "VIGIL_RISK_BURST_WINDOW", time.Duration(cfg.Baseline.BurstWindowMS)*time.Millisecond, "burst window (event time)")
	leaseTTL := fs.Duration("lease-ttl", "VIGIL_RISK_LEASE_TTL", cfg.LeaseTTL, "how long a stopped instance keeps its partitions")
	instance := fs.String("instance", "VIGIL_RISK_INSTANCE", "", "instance name in the leases (default: random)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.Partitions, cfg.Baseline.Warmup, cfg.Baseline.BurstCount = *partitions, *warmup, *burst
	cfg.Baseline.BurstWindowMS, cfg.LeaseTTL, cfg.InstanceID = window.Milliseconds(), *leaseTTL, *instance
	p, err := daemon.Start(ctx, "risk", common, daemon.ProcessOptions{ClickHouseWait: 2 * time.Minute})
	if err != nil {
		return err
	}
	defer p.Close()
	log, nc, js, ch, reg := p.Log, p.NC, p.JS, p.CH, p.Reg

	catalog := control.NewCatalog(js, log)
	svc, err := risk.New(cfg, risk.Deps{NC: nc, JS: js, CH: ch, Catalog: catalog, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	// The verdict and metrics views read the policy service's decisions
	// table; wait for the policy service's migration by retrying.
	for {
		if err = svc.Migrate(ctx); err == nil {
			break
		}
		log.Warn("risk migrations not applied yet (is the policy service migrated?); retrying", "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	if err := natsx.WaitForStream(ctx, js, streams.Control, log); err != nil {
		return err
	}
	if err := catalog.Run(ctx); err != nil {
		return err
	}
	if err := catalog.Sync(ctx); err != nil {
		return err
	}
	return p.Serve(ctx, svc.Routes, svc.Run)
}
