package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	rules "github.com/vigilhq/vigil/pkg/policy"
)

// `vigil bench decide --opa PATH` measures OPA's server with the bench's
// pack written in Rego, in the same run and with the same open-loop
// generator, bodies and client as Vigil. OPA is an external binary
// (scripts/opa.sh builds it into a cache directory), never a dependency of
// Vigil's modules.

// benchRule is one rule of the bench's pack: it matches a call of Tool
// whose context.amount is above Min.
type benchRule struct {
	ID      string
	Tool    string
	Min     int
	Outcome string
}

// benchRules are the rules of the bench's n-rule pack, from which both the
// YAML pack (benchPolicy) and its Rego twin (benchRego) are written.
func benchRules(n int) []benchRule {
	rs := make([]benchRule, n)
	for i := range rs {
		rs[i] = benchRule{ID: fmt.Sprintf("r%d", i), Tool: fmt.Sprintf("tool_%d", i), Min: i * 10,
			Outcome: []string{"warn", "require_approval", "block"}[i%3]}
	}
	return rs
}

// opaPackage and opaDecision are where the Rego lives in OPA's data tree;
// OPA's server answers POST / with opaDecision's value for the request
// body as input (its default decision), which is the shape Vigil's
// decisions.evaluate answers ({"decision": …}) for Vigil's body.
const (
	opaPackage  = "vigil.bench"
	opaDecision = "/vigil/bench/response"
)

// benchRego is the n-rule pack in Rego: one rule per pack rule, and the
// strictest matching outcome wins, as in Vigil's engine.
func benchRego(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "package %s\n\nimport rego.v1\n\n", opaPackage)
	for _, r := range benchRules(n) {
		fmt.Fprintf(&b, "# %s\nmatched contains %q if {\n\tinput.action == %q\n\tinput.context.amount > %d\n}\n\n", r.ID, r.Outcome, r.Tool, r.Min)
	}
	b.WriteString(`decision := "block" if {
	"block" in matched
} else := "require_approval" if {
	"require_approval" in matched
} else := "warn" if {
	"warn" in matched
} else := "allow"

response := {"decision": decision}
`)
	return b.String()
}

// opaServer is `opa run --server` on loopback with a Rego file.
type opaServer struct {
	URL string
	cmd *exec.Cmd
	dir string
}

// startOPA runs bin as a server on a free loopback port with rego loaded
// and waits until it answers its health check.
func startOPA(ctx context.Context, bin, rego string) (*opaServer, error) {
	dir, err := os.MkdirTemp("", "vigil-bench-opa-")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "bench.rego")
	if err := os.WriteFile(file, []byte(rego), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, bin, "run", "--server", "--addr", addr, "--log-level", "error",
		"--set", "default_decision="+opaDecision, file)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start opa: %w", err)
	}
	s := &opaServer{URL: "http://" + addr, cmd: cmd, dir: dir}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(s.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				go func() { <-exited }()
				return s, nil
			}
		}
		select {
		case err := <-exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("opa exited (%v): %s", err, bytes.TrimSpace(stderr.Bytes()))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("opa not healthy on %s after 30s: %s", addr, bytes.TrimSpace(stderr.Bytes()))
		}
	}
}

// Close stops the server and removes its files.
func (s *opaServer) Close() {
	_ = s.cmd.Process.Kill()
	os.RemoveAll(s.dir)
}

// loadBase is the base URL to give decideLoad, which appends Vigil's
// path: OPA serves its default decision on POST /, and the query string
// takes the appended path, which OPA ignores.
func (s *opaServer) loadBase() string { return s.URL + "/?" }

// checkOPAOutcomes asks the server for the decision on every body and
// compares it with pack's in-process outcome for the same body: the Rego
// must decide what Vigil's engine decides, or the comparison measures
// something else.
func checkOPAOutcomes(client *http.Client, s *opaServer, pack *rules.Pack, tenant string, bodies [][]byte) error {
	var buf bytes.Buffer
	for i, body := range bodies {
		var in struct {
			Action  string         `json:"action"`
			Context map[string]any `json:"context"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return fmt.Errorf("body %d: %w", i, err)
		}
		want := pack.Evaluate(rules.Input{Tenant: tenant, Action: rules.Action{Kind: "tool_call", Tool: in.Action}, Context: in.Context}, rules.OrgPolicy{}).Outcome.String()
		got, err := decideOnce(client, s.loadBase(), "", body, &buf)
		if err != nil {
			return fmt.Errorf("opa, body %d: %w", i, err)
		}
		if got != want {
			return fmt.Errorf("opa decides %q for %s, Vigil's engine %q", got, body, want)
		}
	}
	return nil
}

// opaReport is OPA's share of a decide report: its percentiles under the
// same load, and Vigil's over them.
type opaReport struct {
	Binary       string  `json:"binary"`
	AchievedRate float64 `json:"achievedRatePerSec"`
	Errors       int     `json:"errors"`
	P50Ms        float64 `json:"p50Ms"`
	P99Ms        float64 `json:"p99Ms"`
	MaxMs        float64 `json:"maxMs"`
	// VigilP50VsOPA and VigilP99VsOPA are filled in once Vigil's run is
	// measured (the goal: p99 within 1.5× of OPA's).
	VigilP50VsOPA float64 `json:"vigilP50VsOpa"`
	VigilP99VsOPA float64 `json:"vigilP99VsOpa"`
}

// benchOPA starts OPA with the n-rule pack in Rego, checks its outcomes
// against pack's on bodies, warms it up like Vigil and drives the same
// open loop at it. want are the floor's outcome counts for the same load:
// OPA's must equal them.
func benchOPA(ctx context.Context, bin string, n int, pack *rules.Pack, tenant string, client *http.Client, bodies [][]byte, rate int, duration time.Duration, conns int, want map[string]int) (*opaReport, error) {
	s, err := startOPA(ctx, bin, benchRego(n))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := checkOPAOutcomes(client, s, pack, tenant, bodies); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for i := range min(200, rate) {
		_, _ = decideOnce(client, s.loadBase(), "", bodies[i%len(bodies)], &buf)
	}
	run := decideLoad(client, s.loadBase(), "", bodies, rate, duration, conns, nil, 0)
	if run.errs > 0 {
		return nil, fmt.Errorf("opa failed %d requests (first: %s)", run.errs, run.firstErr)
	}
	if !maps.Equal(run.outcomes, want) {
		return nil, fmt.Errorf("opa's outcomes %v differ from the floor's %v", run.outcomes, want)
	}
	if len(run.sorted) == 0 {
		return nil, errors.New("opa: no requests")
	}
	return &opaReport{
		Binary: bin, AchievedRate: run.achieved,
		P50Ms: benchMs(benchPercentile(run.sorted, 0.50)), P99Ms: benchMs(benchPercentile(run.sorted, 0.99)),
		MaxMs: benchMs(run.sorted[len(run.sorted)-1]),
	}, nil
}
