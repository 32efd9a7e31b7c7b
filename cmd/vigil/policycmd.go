package main

// `vigil policy`: test policies against fixtures offline, apply a directory
// of policies to a running Vigil (GitOps), and replay recorded decisions
// against a draft to see what it would change.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/tenant"
	"github.com/vigilhq/vigil/services/api"
)

const policyUsage = `Usage:
  vigil policy test POLICY FIXTURES     evaluate fixture cases against policies, offline
  vigil policy apply -f DIR             create or update the policies in DIR on a running Vigil
  vigil policy replay --draft POLICY    re-evaluate recorded decisions against a draft

POLICY is a policy file (.yaml, .yml, .json) or a directory of them.
Run "vigil policy <subcommand> --help" for its flags.
`

// runPolicy dispatches `vigil policy …`.
func runPolicy(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("missing subcommand\n\n" + policyUsage)
	}
	switch args[0] {
	case "test":
		return runPolicyTest(ctx, args[1:], out)
	case "apply":
		return runPolicyApply(ctx, args[1:], out)
	case "replay":
		return runPolicyReplay(ctx, args[1:], out)
	case "help", "-h", "--help":
		fmt.Fprint(out, policyUsage)
		return nil
	}
	return fmt.Errorf("unknown policy subcommand %q\n\n%s", args[0], policyUsage)
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterspersed(fs *config.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// ---- loading policies ----

// policyIDRe is the id a policy may have on the server.
var policyIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// policyFile is one parsed and compiled policy document.
type policyFile struct {
	Path     string
	ID       string
	Doc      policy.Document
	Compiled *policy.Compiled
}

// isKaplaix reports whether d is written in the conditions/defaultDecision
// form.
func isKaplaix(d policy.Document) bool { return len(d.Conditions) > 0 || d.DefaultDecision != "" }

// policyPaths lists the policy files at path: the file itself, or the
// *.yaml, *.yml and *.json files directly in the directory, by name.
func policyPaths(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			paths = append(paths, filepath.Join(path, e.Name()))
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no policy files (*.yaml, *.yml, *.json)", path)
	}
	return paths, nil
}

// loadPolicies parses and compiles every policy at path. Every invalid
// file is reported, with every detail the policy package gives (path,
// line, rule id and the YAML or CEL error); nothing is returned unless all
// files are valid.
func loadPolicies(path string) ([]policyFile, error) {
	paths, err := policyPaths(path)
	if err != nil {
		return nil, err
	}
	compiler, err := policy.NewCompiler()
	if err != nil {
		return nil, err
	}
	var (
		files []policyFile
		probs []string
		ids   = map[string]string{}
	)
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			probs = append(probs, err.Error())
			continue
		}
		doc, err := policy.Parse(src)
		if err != nil {
			probs = append(probs, describePolicyError(p, err))
			continue
		}
		id := doc.ID
		if id == "" {
			id = strings.TrimSuffix(filepath.Base(p), filepath.Ext(p))
		}
		if !policyIDRe.MatchString(id) {
			probs = append(probs, fmt.Sprintf("%s: policy id %q must be letters, digits and _.- (at most 128), starting with a letter or digit; set id: in the file or rename it", p, id))
			continue
		}
		if other, dup := ids[id]; dup {
			probs = append(probs, fmt.Sprintf("%s: policy id %q is also used by %s", p, id, other))
			continue
		}
		ids[id] = p
		if doc.ID != id && isKaplaix(doc) {
			// The Kaplaix form's single rule is named after the policy
			// id; map it again now that the id is known, as the server
			// will.
			doc.ID, doc.Rules = id, nil
			if err := doc.Normalize(); err != nil {
				probs = append(probs, describePolicyError(p, err))
				continue
			}
		}
		doc.ID = id
		comp, err := compiler.Compile(doc)
		if err != nil {
			probs = append(probs, describePolicyError(p, err))
			continue
		}
		files = append(files, policyFile{Path: p, ID: id, Doc: doc, Compiled: comp})
	}
	if len(probs) > 0 {
		head := "a policy file is invalid"
		if len(probs) > 1 {
			head = fmt.Sprintf("%d policy files are invalid", len(probs))
		}
		return nil, fmt.Errorf("%s:\n%s", head, strings.Join(probs, "\n"))
	}
	return files, nil
}

// describePolicyError renders a parse or compile error with all its
// details, one per line.
func describePolicyError(file string, err error) string {
	var ae *apperr.Error
	if !errors.As(err, &ae) {
		return file + ": " + err.Error()
	}
	var b strings.Builder
	b.WriteString(file + ": " + ae.Message)
	for _, d := range ae.Details {
		b.WriteString("\n  ")
		if d.Path != "" {
			b.WriteString(d.Path + ": ")
		}
		b.WriteString(strings.ReplaceAll(d.Message, "\n", "\n    "))
	}
	return b.String()
}

// buildPack loads the policies at path into an unsigned pack.
func buildPack(path, ten string) (*policy.Pack, []policyFile, error) {
	files, err := loadPolicies(path)
	if err != nil {
		return nil, nil, err
	}
	vs := make([]policy.Versioned, 0, len(files))
	for _, f := range files {
		vs = append(vs, policy.Versioned{Version: 1, Compiled: f.Compiled})
	}
	pack, err := policy.NewPack(ten, vs, nil)
	if err != nil {
		return nil, nil, err
	}
	return pack, files, nil
}

// ---- fixtures and org files ----

// A fixture file is a YAML list of policy test cases, the same cases a
// policy's tests: section holds (policy.TestCase).
type (
	fixtureCase = policy.TestCase
	fixtureOrg  = policy.TestOrg
	policyCase  = policy.PreparedCase
)

// decodeStrict decodes YAML (or JSON) rejecting unknown fields, so a
// misspelt key fails loudly instead of silently testing nothing.
func decodeStrict(src []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the file is empty")
		}
		return err
	}
	return nil
}

// loadFixtures reads a YAML list of cases and reports every bad case.
func loadFixtures(path, defTenant string) ([]policyCase, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw []fixtureCase
	if err := decodeStrict(src, &raw); err != nil {
		return nil, fmt.Errorf("%s: fixtures must be a YAML list of {name, input, org, expect}: %v", path, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(src, &root)
	lines := make([]int, len(raw))
	if len(root.Content) > 0 && root.Content[0].Kind == yaml.SequenceNode {
		for i, n := range root.Content[0].Content {
			if i < len(lines) {
				lines[i] = n.Line
			}
		}
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("%s: no test cases", path)
	}
	var (
		cases []policyCase
		probs []string
		names = map[string]bool{}
	)
	for i, rc := range raw {
		if rc.Name == "" {
			rc.Name = fmt.Sprintf("case #%d", i+1)
		}
		rc.Line = lines[i]
		c, err := rc.Prepare(defTenant)
		if err == nil && names[rc.Name] {
			err = errors.New("the name is used twice")
		}
		if err != nil {
			probs = append(probs, fmt.Sprintf("%s:%d: case %q: %v", path, lines[i], rc.Name, err))
			continue
		}
		names[rc.Name] = true
		cases = append(cases, c)
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("invalid fixtures:\n%s", strings.Join(probs, "\n"))
	}
	return cases, nil
}

// loadOrg reads an org policy file ({mode, tools, destinations, publishers}).
func loadOrg(path string) (policy.OrgPolicy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return policy.OrgPolicy{}, err
	}
	var o fixtureOrg
	if err := decodeStrict(src, &o); err != nil {
		return policy.OrgPolicy{}, fmt.Errorf("%s: %v", path, err)
	}
	org, err := o.OrgPolicy()
	if err != nil {
		return policy.OrgPolicy{}, fmt.Errorf("%s: %v", path, err)
	}
	return org, nil
}

// ---- vigil policy test ----

func matchNames(ms []policy.Match) string {
	if len(ms) == 0 {
		return "none"
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = policy.MatchName(m) + " (" + m.Outcome.String() + ")"
	}
	return strings.Join(parts, ", ")
}

func runPolicyTest(_ context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil policy test POLICY FIXTURES",
		"Evaluate the fixture cases in FIXTURES against the policies at POLICY (a file or a directory), offline.\nExits non-zero when a case fails or a policy is invalid.")
	ten := fs.String("tenant", "", tenant.Default, "tenant of the pack and of cases that name none")
	verbose := fs.Bool("v", false, "also print rule evaluation errors of passing cases")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: vigil policy test POLICY FIXTURES")
	}
	if !tenant.Valid(*ten) {
		return fmt.Errorf("--tenant %q: must match ^[a-z0-9][a-z0-9_-]{0,62}$", *ten)
	}
	pack, files, err := buildPack(pos[0], *ten)
	if err != nil {
		return err
	}
	cases, err := loadFixtures(pos[1], *ten)
	if err != nil {
		return err
	}
	disabled := ""
	if n := len(files) - len(pack.Policies); n > 0 {
		disabled = fmt.Sprintf(" (%d disabled, not evaluated)", n)
	}
	fmt.Fprintf(out, "pack %s: %s, %s%s\n", pack.Hash, plural(len(pack.Policies), "policy", "policies"), plural(pack.Rules(), "rule", "rules"), disabled)
	if skip := pack.SkippedOnError(); len(skip) > 0 {
		fmt.Fprintf(out, "onError: skip (an evaluation error turns the rule off instead of failing closed): %s\n", strings.Join(skip, ", "))
	}
	passed, failed := 0, 0
	for _, c := range cases {
		// Run decides as the live service does: a declared input that the
		// request violates refuses it before deciding.
		res := c.Run(pack)
		var d policy.Decision
		if res.Decision != nil {
			d = *res.Decision
		}
		ok := res.Passed
		got := fmt.Sprintf("%s [%s]", d.Outcome, strings.Join(d.ReasonCodes, ", "))
		if res.Refused != nil {
			got = policy.ExpectRejected + " (" + strings.Join(res.Refused, "; ") + ")"
		}
		if ok {
			passed++
			fmt.Fprintf(out, "PASS  %s: %s (matched: %s)\n", c.Name, got, matchNames(d.Matches))
		} else {
			failed++
			want := c.Want.String()
			if c.Rejected {
				want = policy.ExpectRejected
			} else if c.Reasons != nil {
				want += " [" + strings.Join(c.Reasons, ", ") + "]"
			}
			if c.Rules != nil {
				want += " matching " + strings.Join(c.Rules, ", ")
			}
			fmt.Fprintf(out, "FAIL  %s (line %d)\n      got:     %s\n      want:    %s\n      matched: %s\n", c.Name, c.Line, got, want, matchNames(d.Matches))
		}
		if !ok || *verbose {
			for _, e := range d.Errors {
				fmt.Fprintf(out, "      rule error: %s\n", e)
			}
		}
	}
	fmt.Fprintf(out, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d policy test cases failed", failed, len(cases))
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// ---- vigil policy apply ----

// apiError is an error response in Vigil's envelope.
type apiError struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
	Details      []apperr.FieldError
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d", e.Method, e.Path, e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	for _, d := range e.Details {
		b.WriteString("\n  ")
		if d.Path != "" {
			b.WriteString(d.Path + ": ")
		}
		b.WriteString(d.Message)
	}
	if e.Status == http.StatusUnauthorized {
		b.WriteString("\n  (check --key / $VIGIL_API_KEY)")
	}
	return b.String()
}

// apiClient is a minimal client of the policy routes.
type apiClient struct {
	base, key string
	hc        *http.Client
}

func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{Method: method, Path: path, Status: resp.StatusCode}
		var env struct {
			Error struct {
				Code    string              `json:"code"`
				Message string              `json:"message"`
				Details []apperr.FieldError `json:"details"`
			} `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &env) == nil && (env.Error.Message != "" || env.Message != "") {
			ae.Code, ae.Message, ae.Details = env.Error.Code, env.Error.Message, env.Error.Details
			if ae.Message == "" {
				ae.Message = env.Message
			}
		} else {
			ae.Message = strings.TrimSpace(string(data))
			if len(ae.Message) > 300 {
				ae.Message = ae.Message[:300] + "…"
			}
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode response: %w", method, path, err)
		}
	}
	return nil
}

// serverPolicy is the policy view the API returns.
type serverPolicy = api.PolicyView

// diffPolicy lists the document fields where the server's policy differs
// from the local document.
func diffPolicy(local policy.Document, srv serverPolicy) []string {
	var diff []string
	if local.Name != srv.Name {
		diff = append(diff, "name")
	}
	if local.Description != srv.Description {
		diff = append(diff, "description")
	}
	if local.IsEnabled() != srv.Enabled {
		diff = append(diff, "enabled")
	}
	if local.Priority != srv.Priority {
		diff = append(diff, "priority")
	}
	a, _ := json.Marshal(local.Rules)
	b, _ := json.Marshal(srv.Rules)
	if !bytes.Equal(a, b) {
		diff = append(diff, "rules")
	}
	a, _ = json.Marshal(local.Inputs)
	b, _ = json.Marshal(srv.Inputs)
	if !bytes.Equal(a, b) {
		diff = append(diff, "inputs")
	}
	a, _ = json.Marshal(local.Tests)
	b, _ = json.Marshal(srv.Tests)
	if !bytes.Equal(a, b) {
		diff = append(diff, "tests")
	}
	if isKaplaix(local) {
		if !maps.Equal(local.Conditions, srv.Conditions) {
			diff = append(diff, "conditions")
		}
		if local.DefaultDecision != srv.DefaultDecision {
			diff = append(diff, "defaultDecision")
		}
	} else if len(srv.Conditions) > 0 || srv.DefaultDecision != "" {
		diff = append(diff, "conditions")
	}
	return diff
}

// createBody is the POST body: the document with its id; a Kaplaix-form
// document is sent as written, for the server to map.
func createBody(f policyFile) policy.Document {
	d := f.Doc
	d.ID = f.ID
	if isKaplaix(d) {
		d.Rules = nil
	}
	return d
}

// patchBody carries every document field, so the server ends up with the
// file's content whatever it held before.
func patchBody(d policy.Document) map[string]any {
	body := map[string]any{
		"name": d.Name, "description": d.Description, "enabled": d.IsEnabled(), "priority": d.Priority,
		"inputs": d.Inputs, "tests": d.Tests,
	}
	if isKaplaix(d) {
		body["conditions"] = d.Conditions
		if d.DefaultDecision != "" {
			body["defaultDecision"] = d.DefaultDecision
		} else {
			body["defaultDecision"] = nil
		}
	} else {
		body["rules"] = d.Rules
	}
	return body
}

func runPolicyApply(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil policy apply -f DIR",
		"Create or update, on a running Vigil, every policy in DIR (a directory or one file).\nAll files are checked locally first; if any is invalid nothing is applied.")
	dir := fs.String("f", "", "", "policy file or directory (also --file)")
	fs.StringVar(dir, "file", "", "policy file or directory (same as -f)")
	baseURL := fs.String("url", "VIGIL_API_URL", "http://127.0.0.1:8080", "base URL of the Vigil API")
	key := fs.String("key", "VIGIL_API_KEY", "", "API key (admin or owner role)")
	dryRun := fs.Bool("dry-run", false, "report what would change without changing anything")
	timeout := fs.Duration("timeout", "", 30*time.Second, "timeout of each HTTP request")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" && len(pos) == 1 {
		*dir, pos = pos[0], nil
	}
	if *dir == "" || len(pos) > 0 {
		return errors.New("usage: vigil policy apply -f DIR [--url URL] [--key KEY] [--dry-run]")
	}
	u, err := url.Parse(*baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: want an http(s) base URL such as http://127.0.0.1:8080", *baseURL)
	}
	if *key == "" {
		return errors.New("an API key is required: pass --key or set $VIGIL_API_KEY")
	}
	files, err := loadPolicies(*dir)
	if err != nil {
		return err
	}
	c := &apiClient{base: strings.TrimRight(*baseURL, "/"), key: *key, hc: &http.Client{Timeout: *timeout}}
	var created, updated, unchanged int
	var failures []string
	for _, f := range files {
		res, err := applyOne(ctx, c, f, *dryRun)
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s (%s): %v", f.ID, f.Path, err))
			fmt.Fprintf(out, "failed %s: %v\n", f.ID, err)
			continue
		}
		fmt.Fprintln(out, res.line)
		if res.note != "" {
			fmt.Fprintln(out, "  note: "+res.note)
		}
		switch res.kind {
		case "created":
			created++
		case "updated":
			updated++
		default:
			unchanged++
		}
	}
	verb := ""
	if *dryRun {
		verb = " (dry run: nothing changed)"
	}
	fmt.Fprintf(out, "%d created, %d updated, %d unchanged%s\n", created, updated, unchanged, verb)
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d policies could not be applied:\n%s", len(failures), len(files), strings.Join(failures, "\n"))
	}
	return nil
}

type applyResult struct {
	kind, line, note string
}

func applyOne(ctx context.Context, c *apiClient, f policyFile, dryRun bool) (applyResult, error) {
	path := "/v1/policies/" + url.PathEscape(f.ID)
	for attempt := 0; ; attempt++ {
		var srv serverPolicy
		err := c.do(ctx, http.MethodGet, path, nil, &srv)
		var ae *apiError
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			if dryRun {
				return applyResult{kind: "created", line: "would create " + f.ID}, nil
			}
			var v serverPolicy
			err := c.do(ctx, http.MethodPost, "/v1/policies", createBody(f), &v)
			if errors.As(err, &ae) && ae.Status == http.StatusConflict && attempt == 0 {
				continue // created by someone else meanwhile: compare with it
			}
			if err != nil {
				return applyResult{}, err
			}
			return applyResult{kind: "created", line: "created " + f.ID}, nil
		case err != nil:
			return applyResult{}, err
		}
		var note string
		if srv.Status == policy.StatusArchived {
			note = f.ID + " is archived on the server; apply does not restore it"
		}
		diff := diffPolicy(f.Doc, srv)
		if len(diff) == 0 {
			return applyResult{kind: "unchanged", line: "unchanged " + f.ID, note: note}, nil
		}
		if dryRun {
			return applyResult{kind: "updated", line: fmt.Sprintf("would update %s (v%d): %s", f.ID, srv.Version, strings.Join(diff, ", ")), note: note}, nil
		}
		var v serverPolicy
		if err := c.do(ctx, http.MethodPatch, path, patchBody(f.Doc), &v); err != nil {
			return applyResult{}, err
		}
		return applyResult{kind: "updated", line: fmt.Sprintf("updated %s (v%d → v%d)", f.ID, srv.Version, v.Version), note: note}, nil
	}
}

// ---- vigil policy replay ----

// parseSince accepts a look-back such as 7d, 2w, 36h or 90m, or an RFC
// 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			if v, err := strconv.Atoi(n); err == nil && v > 0 {
				return now.Add(-time.Duration(v) * unit), nil
			}
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a look-back such as 7d, 2w, 36h or 90m, or an RFC 3339 time", s)
}

// replayChange counts decisions of one agent and tool whose outcome moved
// from one value to another under the draft.
type replayChange struct {
	AgentID string   `json:"agentId"`
	Tool    string   `json:"tool"`
	From    string   `json:"from"`
	To      string   `json:"to"`
	Count   int      `json:"count"`
	Samples []string `json:"samples"`
}

// replayReport is what `vigil policy replay` prints.
type replayReport struct {
	Tenant    string    `json:"tenant"`
	Since     time.Time `json:"since"`
	PackHash  string    `json:"packHash"`
	Total     int       `json:"total"`
	Unchanged int       `json:"unchanged"`
	Changed   int       `json:"changed"`
	// ReasonsChanged counts unchanged outcomes whose reason codes differ.
	ReasonsChanged int            `json:"reasonsChanged"`
	Changes        []replayChange `json:"changes"`
	// RuleErrors counts decisions on which some draft rule failed to
	// evaluate (and so failed closed, or was skipped by onError: skip),
	// with a few examples.
	RuleErrors       int      `json:"ruleErrors"`
	RuleErrorSamples []string `json:"ruleErrorSamples,omitempty"`
	// Refused counts requests the draft's declared inputs would have
	// refused with 400 before deciding (events are judged, never
	// refused), with a few examples; they are not counted as changed.
	Refused        int      `json:"refused"`
	RefusedSamples []string `json:"refusedSamples,omitempty"`
	// Undecodable counts rows whose record could not be read.
	Undecodable  int  `json:"undecodable"`
	LimitReached bool `json:"limitReached"`
}

// replayRecords re-decides every record and tallies the differences.
func replayRecords(pack *policy.Pack, recs []policy.DecisionRecord, org policy.OrgPolicy, samples int) replayReport {
	rep := replayReport{PackHash: pack.Hash, Changes: []replayChange{}}
	type key struct{ agent, tool, from, to string }
	groups := map[key]*replayChange{}
	for _, rec := range recs {
		rep.Total++
		if rec.Source != policy.SourceEvent {
			if bad := pack.CheckInput(rec.Input); len(bad) > 0 {
				rep.Refused++
				if len(rep.RefusedSamples) < 5 {
					rep.RefusedSamples = append(rep.RefusedSamples, rec.ID+": "+bad[0].Message)
				}
				continue
			}
		}
		d := policy.Replay(pack, rec, org)
		if len(d.Errors) > 0 {
			rep.RuleErrors++
			if len(rep.RuleErrorSamples) < 5 {
				rep.RuleErrorSamples = append(rep.RuleErrorSamples, rec.ID+": "+d.Errors[0])
			}
		}
		if d.Outcome == rec.Decision.Outcome {
			rep.Unchanged++
			if !slices.Equal(d.ReasonCodes, rec.Decision.ReasonCodes) {
				rep.ReasonsChanged++
			}
			continue
		}
		rep.Changed++
		agentID := rec.AgentID
		if agentID == "" {
			agentID = rec.Input.Agent.ID
		}
		k := key{agentID, rec.Input.Action.Tool, rec.Decision.Outcome.String(), d.Outcome.String()}
		g := groups[k]
		if g == nil {
			g = &replayChange{AgentID: k.agent, Tool: k.tool, From: k.from, To: k.to, Samples: []string{}}
			groups[k] = g
		}
		g.Count++
		if len(g.Samples) < samples {
			g.Samples = append(g.Samples, rec.ID)
		}
	}
	for _, g := range groups {
		rep.Changes = append(rep.Changes, *g)
	}
	sort.Slice(rep.Changes, func(i, j int) bool {
		a, b := rep.Changes[i], rep.Changes[j]
		if a.AgentID != b.AgentID {
			return a.AgentID < b.AgentID
		}
		if a.Tool != b.Tool {
			return a.Tool < b.Tool
		}
		if a.From != b.From {
			return a.From < b.From
		}
		return a.To < b.To
	})
	return rep
}

// readDecisions reads the tenant's recorded decisions since a time, each
// once (the projection may hold a redelivered copy until it merges).
func readDecisions(ctx context.Context, dsn, ten string, since time.Time, limit int) ([]policy.DecisionRecord, int, error) {
	conn, err := chx.Open(ctx, dsn)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	q := fmt.Sprintf("SELECT record FROM decisions WHERE tenant_id = ? AND at_time >= ? ORDER BY at_time, decision_id LIMIT 1 BY decision_id LIMIT %d", limit)
	rows, err := conn.Query(ctx, q, ten, since.UTC().Truncate(time.Second))
	if err != nil {
		return nil, 0, fmt.Errorf("read decisions from ClickHouse (has the policy service migrated this database?): %w", err)
	}
	defer rows.Close()
	var (
		recs []policy.DecisionRecord
		bad  int
	)
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, 0, fmt.Errorf("scan decision: %w", err)
		}
		var rec policy.DecisionRecord
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			bad++
			continue
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read decisions from ClickHouse: %w", err)
	}
	return recs, bad, nil
}

func runPolicyReplay(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil policy replay --draft POLICY",
		"Re-evaluate recorded decisions against a draft policy (a file or a directory) and report what would change.\nReads the decisions table in ClickHouse; changes nothing.")
	draft := fs.String("draft", "", "", "draft policy file or directory (the whole pack to try)")
	sinceFlag := fs.String("since", "", "7d", "look back this far (7d, 36h, 90m) or from this RFC 3339 time")
	ten := fs.String("tenant", "", tenant.Default, "tenant whose decisions to replay")
	dsn := fs.String("clickhouse-dsn", "VIGIL_CLICKHOUSE_DSN", "clickhouse://127.0.0.1:9000/vigil", "ClickHouse DSN")
	limit := fs.Int("limit", "", 100000, "replay at most this many decisions (oldest first)")
	samples := fs.Int("samples", "", 5, "sample decision ids listed per change")
	orgFile := fs.String("org", "", "", "org policy file (YAML {mode, tools, destinations, publishers}); default: mode off")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := fs.Duration("timeout", "", 2*time.Minute, "how long the ClickHouse read may take")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *draft == "" || len(pos) > 0 {
		return errors.New("usage: vigil policy replay --draft POLICY [--since 7d] [--tenant T] [--clickhouse-dsn DSN]")
	}
	if !tenant.Valid(*ten) {
		return fmt.Errorf("--tenant %q: must match ^[a-z0-9][a-z0-9_-]{0,62}$", *ten)
	}
	if *limit <= 0 {
		return fmt.Errorf("--limit %d: must be positive", *limit)
	}
	if *samples < 0 {
		return fmt.Errorf("--samples %d: must not be negative", *samples)
	}
	since, err := parseSince(*sinceFlag, time.Now())
	if err != nil {
		return err
	}
	org := policy.OrgPolicy{Mode: policy.OrgOff}
	if *orgFile != "" {
		if org, err = loadOrg(*orgFile); err != nil {
			return err
		}
	}
	pack, _, err := buildPack(*draft, *ten)
	if err != nil {
		return err
	}
	qctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	recs, bad, err := readDecisions(qctx, *dsn, *ten, since, *limit)
	if err != nil {
		return err
	}
	rep := replayRecords(pack, recs, org, *samples)
	rep.Tenant, rep.Since, rep.Undecodable = *ten, since.UTC(), bad
	rep.LimitReached = len(recs)+bad >= *limit
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printReplay(out, rep)
	return nil
}

func printReplay(out io.Writer, rep replayReport) {
	fmt.Fprintf(out, "replayed %d decisions of tenant %q since %s against draft pack %s\n",
		rep.Total, rep.Tenant, rep.Since.Format(time.RFC3339), rep.PackHash)
	fmt.Fprintf(out, "  unchanged: %d\n  changed:   %d\n", rep.Unchanged, rep.Changed)
	if rep.ReasonsChanged > 0 {
		fmt.Fprintf(out, "  same outcome, different reason codes: %d\n", rep.ReasonsChanged)
	}
	if rep.Refused > 0 {
		fmt.Fprintf(out, "  refused by the draft's declared inputs (400 invalid_request, not decided): %d, e.g.:\n", rep.Refused)
		for _, s := range rep.RefusedSamples {
			fmt.Fprintf(out, "    %s\n", s)
		}
	}
	if rep.RuleErrors > 0 {
		fmt.Fprintf(out, "  draft rules failed to evaluate on %d decisions (such a rule fails closed unless it says onError: skip), e.g.:\n", rep.RuleErrors)
		for _, s := range rep.RuleErrorSamples {
			fmt.Fprintf(out, "    %s\n", s)
		}
	}
	if rep.Undecodable > 0 {
		fmt.Fprintf(out, "  skipped %d rows whose record could not be decoded\n", rep.Undecodable)
	}
	if rep.LimitReached {
		fmt.Fprintln(out, "  the --limit was reached: later decisions were not replayed")
	}
	if len(rep.Changes) == 0 {
		return
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tTOOL\tCHANGE\tCOUNT\tSAMPLE DECISIONS")
	for _, c := range rep.Changes {
		agentID, tool := c.AgentID, c.Tool
		if agentID == "" {
			agentID = "-"
		}
		if tool == "" {
			tool = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s → %s\t%d\t%s\n", agentID, tool, c.From, c.To, c.Count, strings.Join(c.Samples, ", "))
	}
	_ = tw.Flush()
}
