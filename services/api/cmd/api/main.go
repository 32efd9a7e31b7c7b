// Command api runs Vigil's HTTP API on its own: control plane, reads, and
// the CONTROL projections.
package main

import (
	"context"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/services/api"
)

func main() { daemon.Main("api", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("api", "Vigil api: the HTTP API, CONTROL stream owner and its projections.")
	common, oidcFlags, so, instance := config.AddCommon(fs), fs.OIDC(), fs.Streams(), fs.InstanceID()
	consoleSessions := fs.ConsoleSessions()
	sealKey, judgeAllow := fs.JudgeSealKey(), fs.JudgeAllow()
	maxAgents := fs.MaxAgents()
	longPolls := fs.Int("max-long-polls-per-key", "VIGIL_MAX_LONG_POLLS_PER_KEY", api.DefaultConfig().MaxLongPollsPerKey, "long-polls (GET /v1/decisions/:id?wait=) one key may hold open at once on this instance; more get 429")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := api.DefaultConfig()
	cfg.MaxLongPollsPerKey, cfg.MaxAgents = *longPolls, *maxAgents
	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	cfg.Console.OIDCRedirectURL, cfg.Console.OIDCClientSecret = oidcFlags.Client()
	cfg.Console.SessionTTL, cfg.Console.IdleTimeout = *consoleSessions.TTL, *consoleSessions.Idle
	if cfg.Streams, err = so.Options(); err != nil {
		return err
	}
	if cfg.Judge.SealSecret, err = sealKey.Required(); err != nil {
		return err
	}
	if cfg.Judge.Allow, err = judgeAllow.Prefixes(); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "api", common, daemon.ProcessOptions{ClickHouse: true})
	if err != nil {
		return err
	}
	defer p.Close()
	catalog, board := control.NewCatalog(p.JS, p.Log, control.WithOIDC(verifier)), approval.NewBoard(p.JS, p.Log)
	limiter := ratelimit.New(p.NC, "api-"+instance.ID(), func(t string) ratelimit.Limits { return catalog.Limits(t, cfg.RateLimits) }, p.Log)
	svc, err := api.New(cfg, api.Deps{NC: p.NC, JS: p.JS, CH: p.CH, Catalog: catalog, Board: board, Store: control.NewStore(p.JS), Log: p.Log, Registerer: p.Reg, Limiter: limiter, OIDC: verifier})
	if err != nil {
		return err
	}
	return p.Run(ctx, svc.Component(), catalog.Component(), board.Component(), limiter.Component())
}
