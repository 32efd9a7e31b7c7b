// Command guardian runs Vigil's Decision Desk service on its own.
package main

import (
	"context"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/services/guardian"
)

func main() { daemon.Main("guardian", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("guardian", "Vigil guardian: pending actions, decisions on them, expiry.")
	common := config.AddCommon(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "guardian", common, daemon.ProcessOptions{})
	if err != nil {
		return err
	}
	defer p.Close()
	log, nc, js, reg := p.Log, p.NC, p.JS, p.Reg
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
	return p.Serve(ctx, nil, svc.Run)
}
