// Command ingest runs Vigil's ingest service on its own: the event
// receivers and the INGEST → ClickHouse projector.
package main

import (
	"context"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/services/ingest"
)

func main() { daemon.Main("ingest", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("ingest", "Vigil ingest: event receivers and the events projector.")
	common, so, instance, redactionKey, maxAgents := config.AddCommon(fs), fs.Streams(), fs.InstanceID(), fs.RedactionKey(), fs.MaxAgents()
	oidcFlags := fs.OIDC()
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := ingest.DefaultConfig()
	cfg.MaxAgents = *maxAgents
	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	if cfg.Streams, err = so.Options(); err != nil {
		return err
	}
	if cfg.RedactionKey, err = redactionKey.Required(); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "ingest", common, daemon.ProcessOptions{ClickHouse: true})
	if err != nil {
		return err
	}
	defer p.Close()
	// API keys live on CONTROL, which the api service owns.
	catalog := control.NewCatalog(p.JS, p.Log, control.WithOIDC(verifier))
	limiter := ratelimit.New(p.NC, "ingest-"+instance.ID(), func(t string) ratelimit.Limits { return catalog.Limits(t, ratelimit.DefaultLimits) }, p.Log)
	// The receivers publish on cfg.PublishConns connections: the
	// process's own and any more Publishers opens (Close drains them).
	pubs, err := p.Publishers(cfg.PublishConns)
	if err != nil {
		return err
	}
	svc, err := ingest.New(cfg, ingest.Deps{JS: p.JS, Publish: pubs, CH: p.CH, Auth: catalog, Log: p.Log, Registerer: p.Reg, Limiter: limiter, Agents: catalog})
	if err != nil {
		return err
	}
	return p.Run(ctx, catalog.Component(), svc.Component(), limiter.Component(),
		control.UsageComponent(p.JS, catalog, cfg.Streams.Replicas, p.Log))
}
