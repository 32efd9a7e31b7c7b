// Command guardian runs Vigil's Decision Desk service on its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/services/guardian"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "guardian:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := config.New("guardian", "Vigil guardian: pending actions, decisions on them, expiry.")
	common := config.AddCommon(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	nc, js, err := natsx.Connect(*common.NATSURL, "vigil-guardian", log)
	if err != nil {
		return err
	}
	defer nc.Drain()
	reg := daemon.Registry()
	board := approval.NewBoard(js, log)
	svc, err := guardian.New(guardian.DefaultConfig(), guardian.Deps{NC: nc, JS: js, Board: board, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := board.Run(ctx); err != nil {
		return err
	}
	e, err := httpkit.NewServer(log, reg)
	if err != nil {
		return err
	}
	httpkit.HealthRoutes(e, reg, map[string]httpkit.Check{"nats": natsx.Ready(nc)})
	return daemon.Run(ctx, log, e, *common.HTTPAddr, svc.Run)
}
