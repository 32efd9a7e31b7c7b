// Command api runs Vigil's HTTP API on its own: control plane, reads, and
// the CONTROL projections.
package main

import (
	"context"
	"os"
	"time"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/services/api"
)

func main() { daemon.Main("api", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("api", "Vigil api: the HTTP API, CONTROL stream owner and its projections.")
	common := config.AddCommon(fs)
	oidcFlags := config.AddOIDC(fs)
	instance := fs.String("instance-id", "VIGIL_INSTANCE_ID", "", "this instance's name in shared rate limiting (default: the host name)")
	sealKey := fs.String("judge-seal-key", "VIGIL_JUDGE_SEAL_KEY", "", "base64 secret (≥ 32 bytes) sealing tenants' LLM API keys; must equal the policy service's; required")
	judgeAllow := fs.String("judge-allow", "VIGIL_JUDGE_ALLOW", "", "CIDRs an LLM judge endpoint may be on although private (comma-separated)")
	longPolls := fs.Int("max-long-polls-per-key", "VIGIL_MAX_LONG_POLLS_PER_KEY", api.DefaultConfig().MaxLongPollsPerKey, "long-polls (GET /v1/decisions/:id?wait=) one key may hold open at once on this instance; more get 429")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "api", common, daemon.ProcessOptions{ClickHouseWait: 2 * time.Minute})
	if err != nil {
		return err
	}
	defer p.Close()
	log, nc, js, ch, reg := p.Log, p.NC, p.JS, p.CH, p.Reg

	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	cfg := api.DefaultConfig()
	cfg.MaxLongPollsPerKey = *longPolls
	if cfg.Judge.SealSecret, err = control.ParseSecret("--judge-seal-key / $VIGIL_JUDGE_SEAL_KEY", *sealKey); err != nil {
		return err
	}
	if cfg.Judge.Allow, err = ssrf.ParseAllowlist(*judgeAllow); err != nil {
		return err
	}
	catalog, store := control.NewCatalog(js, log, control.WithOIDC(verifier)), control.NewStore(js)
	board := approval.NewBoard(js, log)
	if *instance == "" {
		*instance, _ = os.Hostname()
	}
	limiter := ratelimit.New(nc, "api-"+*instance, func(t string) ratelimit.Limits { return catalog.Limits(t, cfg.RateLimits) }, log)
	svc, err := api.New(cfg, api.Deps{NC: nc, JS: js, CH: ch, Catalog: catalog, Board: board, Store: store, Log: log, Registerer: reg, Limiter: limiter})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := svc.Migrate(ctx); err != nil {
		return err
	}
	if err := catalog.Run(ctx); err != nil {
		return err
	}
	if err := board.Run(ctx); err != nil {
		return err
	}
	if err := catalog.Sync(ctx); err != nil {
		return err
	}
	return p.Serve(ctx, svc.Routes, limiter.Run, svc.Run)
}
