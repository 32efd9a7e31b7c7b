package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/gateway"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// runGateway is `vigil gateway`: the front door of a deployment of
// separate services (docs/gateway.md).
func runGateway(ctx context.Context, args []string, stdout io.Writer) error {
	fs := config.New("vigil gateway", "vigil gateway: one base URL in front of separately deployed services; every route of the route table goes to the service that serves it (docs/gateway.md).")
	g := config.AddGateway(fs)
	printRoutes := fs.Bool("print-routes", false, "print the route table (JSON) and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	table, err := g.Table()
	if err != nil {
		return err
	}
	if *printRoutes {
		_, err := stdout.Write(table.JSON())
		return err
	}
	log, err := daemon.Logger(*g.LogLevel, *g.LogFormat)
	if err != nil {
		return err
	}
	ups, err := g.Upstreams()
	if err != nil {
		return err
	}
	tracing, err := telemetry.Start(ctx, g.Telemetry.Config("vigil-gateway"), log)
	if err != nil {
		return err
	}
	defer func() {
		if err := tracing.Shutdown(context.Background()); err != nil {
			log.Warn("tracing shutdown", slog.String("error", err.Error()))
		}
	}()
	e, err := gateway.New(gateway.Config{Table: table, Upstreams: ups, Log: log, Reg: daemon.Registry(), Tracer: tracing.Provider})
	if err != nil {
		return err
	}
	return daemon.Run(ctx, log, e, *g.HTTPAddr)
}
