// Command ingest runs Vigil's ingest service on its own: the event
// receivers and the INGEST → ClickHouse projector.
package main

import (
	"context"
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
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := config.New("ingest", "Vigil ingest: event receivers and the events projector.")
	common := config.AddCommon(fs)
	instance := fs.String("instance-id", "VIGIL_INSTANCE_ID", "", "this instance's name in shared rate limiting (default: the host name)")
	redactionKey := fs.String("redaction-key", "VIGIL_REDACTION_KEY", "", "base64 secret (≥ 32 bytes) keying redaction placeholders; must equal the policy service's (default: generated once in NATS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	icfg := ingest.DefaultConfig()
	if icfg.RedactionKey, err = control.ParseSecret("--redaction-key / $VIGIL_REDACTION_KEY", *redactionKey); err != nil {
		return err
	}
	nc, js, err := natsx.Connect(*common.NATSURL, "vigil-ingest", log)
	if err != nil {
		return err
	}
	defer nc.Drain()
	ch, err := daemon.OpenClickHouse(ctx, *common.ClickHouseDSN, 2*time.Minute, log)
	if err != nil {
		return err
	}
	defer ch.Close()

	reg := daemon.Registry()
	catalog := control.NewCatalog(js, log)
	if *instance == "" {
		*instance, _ = os.Hostname()
	}
	limits := ratelimit.DefaultLimits
	limiter := ratelimit.New(nc, "ingest-"+*instance, func(t string) ratelimit.Limits { return catalog.Limits(t, limits) }, log)
	svc, err := ingest.New(icfg, ingest.Deps{JS: js, CH: ch, Auth: catalog, Log: log, Registerer: reg, Limiter: limiter})
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
	e, err := httpkit.NewServer(log, reg)
	if err != nil {
		return err
	}
	httpkit.HealthRoutes(e, reg, map[string]httpkit.Check{
		"nats":       natsx.Ready(nc),
		"clickhouse": func(ctx context.Context) error { return ch.Ping(ctx) },
	})
	svc.Routes(e)
	flushUsage := func(ctx context.Context) error { return usage.Run(ctx, 5*time.Second) }
	return daemon.Run(ctx, log, e, *common.HTTPAddr, limiter.Run, flushUsage, svc.Run)
}
