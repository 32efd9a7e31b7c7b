// Command policy runs Vigil's policy service on its own: decisions over
// NATS request/reply, event verdicts and the decisions projection.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"time"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

func main() { daemon.Main("policy", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("policy", "Vigil policy: decisions, event verdicts and the decisions projection.")
	common := config.AddCommon(fs)
	signingKey := fs.String("signing-key", "VIGIL_SIGNING_KEY", "", "base64 32-byte Ed25519 seed that signs policy packs (required)")
	redactionKey := fs.String("redaction-key", "VIGIL_REDACTION_KEY", "", "base64 secret (≥ 32 bytes) keying redaction placeholders; must equal ingest's; required")
	sealKey := fs.String("judge-seal-key", "VIGIL_JUDGE_SEAL_KEY", "", "base64 secret (≥ 32 bytes) sealing tenants' LLM API keys; must equal the api's; required")
	judgeAllow := fs.String("judge-allow", "VIGIL_JUDGE_ALLOW", "", "CIDRs the LLM judge may reach although private (comma-separated)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	cfg := policysvc.DefaultConfig()
	if cfg.SigningSeed, err = base64.StdEncoding.DecodeString(*signingKey); err != nil || len(cfg.SigningSeed) != 32 {
		return errors.New("--signing-key / $VIGIL_SIGNING_KEY must be a base64 32-byte seed (e.g. `head -c32 /dev/urandom | base64`)")
	}
	if cfg.RedactionKey, err = control.ParseSecret("--redaction-key / $VIGIL_REDACTION_KEY", *redactionKey); err != nil {
		return err
	}
	if cfg.Judge.SealSecret, err = control.ParseSecret("--judge-seal-key / $VIGIL_JUDGE_SEAL_KEY", *sealKey); err != nil {
		return err
	}
	if cfg.Judge.Allow, err = ssrf.ParseAllowlist(*judgeAllow); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "policy", common, daemon.ProcessOptions{ClickHouseWait: 2 * time.Minute})
	if err != nil {
		return err
	}
	defer p.Close()
	log, nc, js, ch, reg := p.Log, p.NC, p.JS, p.CH, p.Reg

	catalog := control.NewCatalog(js, log)
	svc, err := policysvc.New(cfg, policysvc.Deps{NC: nc, JS: js, CH: ch, Catalog: catalog, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := svc.Migrate(ctx); err != nil {
		return err
	}
	if err := natsx.WaitForStream(ctx, js, streams.Control, log); err != nil {
		return err
	}
	if err := catalog.Run(ctx); err != nil {
		return err
	}
	// Answer only once the catalog holds every policy: a decision made on
	// a half-loaded catalog could allow what a policy blocks.
	if err := catalog.Sync(ctx); err != nil {
		return err
	}
	return p.Serve(ctx, nil, svc.Run)
}
