// Command policy runs Vigil's policy service on its own: decisions over
// NATS request/reply, event verdicts and the decisions projection.
package main

import (
	"context"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

func main() { daemon.Main("policy", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("policy", "Vigil policy: decisions, event verdicts and the decisions projection.")
	common, so := config.AddCommon(fs), fs.Streams()
	signingKey, redactionKey, sealKey, judgeAllow := fs.SigningKey(), fs.RedactionKey(), fs.JudgeSealKey(), fs.JudgeAllow()
	prices := fs.BudgetPrices()
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := policysvc.DefaultConfig()
	var err error
	if cfg.SigningSeed, err = signingKey.Required(); err != nil {
		return err
	}
	if cfg.RedactionKey, err = redactionKey.Required(); err != nil {
		return err
	}
	if cfg.Judge.SealSecret, err = sealKey.Required(); err != nil {
		return err
	}
	if cfg.Judge.Allow, err = judgeAllow.Prefixes(); err != nil {
		return err
	}
	if cfg.Streams, err = so.Options(); err != nil {
		return err
	}
	if cfg.BudgetPrices, err = prices.Prices(); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "policy", common, daemon.ProcessOptions{ClickHouse: true})
	if err != nil {
		return err
	}
	defer p.Close()
	// The catalog comes first: a decision made on a half-loaded catalog
	// could allow what a policy blocks, so the responder starts after it.
	catalog := control.NewCatalog(p.JS, p.Log)
	svc, err := policysvc.New(cfg, policysvc.Deps{NC: p.NC, JS: p.JS, CH: p.CH, Catalog: catalog, Log: p.Log, Registerer: p.Reg, Tracer: p.Tracer})
	if err != nil {
		return err
	}
	return p.Run(ctx, catalog.Component(), svc.Component())
}
