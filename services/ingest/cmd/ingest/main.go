// Command ingest runs Vigil's ingest service on its own: the event
// receivers and the INGEST → ClickHouse projector.
package main

import (
	"context"
	"os"
	"time"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

func main() { daemon.Main("ingest", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("ingest", "Vigil ingest: event receivers and the events projector.")
	common := config.AddCommon(fs)
	instance := fs.String("instance-id", "VIGIL_INSTANCE_ID", "", "this instance's name in shared rate limiting (default: the host name)")
	redactionKey := fs.String("redaction-key", "VIGIL_REDACTION_KEY", "", "base64 secret (≥ 32 bytes) keying redaction placeholders; must equal the policy service's; required")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	icfg := ingest.DefaultConfig()
	if icfg.RedactionKey, err = control.ParseSecret("--redaction-key / $VIGIL_REDACTION_KEY", *redactionKey); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "ingest", common, daemon.ProcessOptions{ClickHouseWait: 2 * time.Minute})
	if err != nil {
		return err
	}
	defer p.Close()
	log, nc, js, ch, reg := p.Log, p.NC, p.JS, p.CH, p.Reg

	catalog := control.NewCatalog(js, log)
	if *instance == "" {
		*instance, _ = os.Hostname()
	}
	limits := ratelimit.DefaultLimits
	limiter := ratelimit.New(nc, "ingest-"+*instance, func(t string) ratelimit.Limits { return catalog.Limits(t, limits) }, log)
	svc, err := ingest.New(icfg, ingest.Deps{JS: js, CH: ch, Auth: catalog, Log: log, Registerer: reg, Limiter: limiter, Agents: catalog})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := svc.Migrate(ctx); err != nil {
		return err
	}
	// API keys live on CONTROL, which the api service owns.
	if err := natsx.WaitForStream(ctx, js, streams.Control, log); err != nil {
		return err
	}
	if err := catalog.Run(ctx); err != nil {
		return err
	}
	usage, err := control.OpenUsage(ctx, js, catalog, 1, log)
	if err != nil {
		return err
	}
	flushUsage := func(ctx context.Context) error { return usage.Run(ctx, 5*time.Second) }
	return p.Serve(ctx, svc.Routes, limiter.Run, flushUsage, svc.Run)
}
