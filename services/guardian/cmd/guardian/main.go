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
	common, so := config.AddCommon(fs), fs.Streams()
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := guardian.DefaultConfig()
	var err error
	if cfg.Streams, err = so.Options(); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "guardian", common, daemon.ProcessOptions{})
	if err != nil {
		return err
	}
	defer p.Close()
	board := approval.NewBoard(p.JS, p.Log)
	svc, err := guardian.New(cfg, guardian.Deps{NC: p.NC, JS: p.JS, Board: board, Log: p.Log, Registerer: p.Reg, Tracer: p.Tracer})
	if err != nil {
		return err
	}
	return p.Run(ctx, board.Component(), svc.Component())
}
