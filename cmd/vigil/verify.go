package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// runVerify is `vigil verify BUNDLE`: it checks an evidence bundle
// offline, with no server, and lists everything that fails. `vigil verify
// manifest` checks an agent's signed manifest (runVerifyManifest).
func runVerify(ctx context.Context, args []string, stdin io.Reader, out io.Writer) error {
	if len(args) > 0 && args[0] == "manifest" {
		return runVerifyManifest(ctx, args[1:], stdin, out)
	}
	fs := config.New("vigil verify", "Verify an evidence bundle offline: signatures, every record's bytes and inclusion proof, and the signed record count.\n\nUsage: vigil verify [--key VKEY] BUNDLE.json   (\"-\" reads stdin)")
	key := fs.String("key", "VIGIL_LEDGER_KEY", "", "the ledger's verifier key to trust (from `vigil ledger key`); default: the key inside the bundle, which proves integrity but not origin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: vigil verify [--key VKEY] BUNDLE.json")
	}
	data, err := readInput(fs.Arg(0), stdin)
	if err != nil {
		return err
	}
	var b evidence.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("%s is not an evidence bundle: %w", fs.Arg(0), err)
	}
	rep := evidence.Verify(b, *key)
	if !rep.OK() {
		fmt.Fprintf(out, "FAIL: %s (tenant %s, session %s): %d problems\n", fs.Arg(0), b.Tenant, b.SessionID, len(rep.Problems))
		for _, p := range rep.Problems {
			fmt.Fprintf(out, "  - %s\n", p)
		}
		return fmt.Errorf("evidence bundle does not verify (%d problems)", len(rep.Problems))
	}
	trust := "the key in the bundle (pass --key to pin the ledger's key)"
	if *key != "" {
		trust = "the pinned key"
	}
	fmt.Fprintf(out, "OK: %d records of session %s (tenant %s) are in %s at tree size %d, signed by %s; the signed record count matches\n",
		rep.Records, b.SessionID, b.Tenant, b.Origin, rep.TreeSize, trust)
	return nil
}

// readInput reads a file, or stdin for "-".
func readInput(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(stdin, 1<<30))
	}
	return os.ReadFile(path)
}

// runVerifyManifest is `vigil verify manifest`: it checks that an agent's
// manifestSignature is the ledger key's signature over the agent's
// canonical manifest, and that manifestHash is that manifest's hash.
func runVerifyManifest(ctx context.Context, args []string, stdin io.Reader, out io.Writer) error {
	fs := config.New("vigil verify manifest", "Verify an agent's signed manifest: manifestSignature (the ledger key's Ed25519 signature) and manifestHash over the canonical manifest.\n\nUsage: vigil verify manifest --key VKEY|URL AGENT.json   (the agent as GET /v1/agents/{id} or the registration's 201 returns; \"-\" reads stdin)")
	key := fs.String("key", "VIGIL_LEDGER_KEY", "", "the ledger's verifier key (`vigil ledger key`), or the URL of GET /v1/ledger/key to fetch it from")
	apiKey := fs.String("api-key", "VIGIL_API_KEY", "", "API key (ledger:read) for fetching --key from a URL")
	timeout := fs.Duration("timeout", "", 30*time.Second, "timeout of fetching the key from a URL")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *key == "" {
		return errors.New("usage: vigil verify manifest --key VKEY|URL AGENT.json")
	}
	vkey := *key
	if u, err := url.Parse(vkey); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		c := &apiClient{key: *apiKey, hc: &http.Client{Timeout: *timeout}}
		var k struct {
			PublicKey string `json:"publicKey"`
		}
		if err := c.do(ctx, http.MethodGet, vkey, nil, &k); err != nil {
			return fmt.Errorf("fetch the ledger key: %w", err)
		}
		vkey = k.PublicKey
	}
	data, err := readInput(pos[0], stdin)
	if err != nil {
		return err
	}
	var a agent.Agent
	if err := json.Unmarshal(data, &a); err != nil {
		return fmt.Errorf("%s is not an agent: %w", pos[0], err)
	}
	fail := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		fmt.Fprintf(out, "FAIL: %s (agent %s): %s\n", pos[0], a.AgentID, msg)
		return errors.New("agent manifest does not verify: " + msg)
	}
	if a.ManifestSignature == nil || *a.ManifestSignature == "" {
		return fail("no manifestSignature (an agent only discovered from its events has no signed manifest)")
	}
	m := a.Manifest()
	canonical, err := m.Canonical()
	if err != nil {
		return fail("%v", err)
	}
	hash, err := m.Hash()
	if err != nil {
		return fail("%v", err)
	}
	if a.ManifestHash != hash {
		return fail("manifestHash %s is not the hash of the manifest's fields (%s): the manifest was changed", a.ManifestHash, hash)
	}
	if err := evidence.VerifyAgentManifest(vkey, canonical, *a.ManifestSignature); err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(out, "OK: the manifest of agent %s (%s) is signed by %s\n", a.AgentID, hash, strings.SplitN(vkey, "+", 2)[0])
	return nil
}
