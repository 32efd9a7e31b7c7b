package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/policy"
)

const policyTestdata = "testdata/policy"

func runPolicyCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runPolicy(context.Background(), args, &out)
	return out.String(), err
}

// ---- vigil policy test ----

func TestPolicyTestFixturesPass(t *testing.T) {
	out, err := runPolicyCmd(t, "test", policyTestdata+"/policies", policyTestdata+"/fixtures.yaml")
	if err != nil {
		t.Fatalf("policy test failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "13 passed, 0 failed") || strings.Contains(out, "FAIL") {
		t.Fatalf("unexpected output:\n%s", out)
	}
	if !strings.Contains(out, "PASS  a big refund needs approval: require_approval [AMOUNT_OVER_THRESHOLD] (matched: refunds/big-refund (require_approval))") {
		t.Fatalf("pass line does not show the outcome and matched rule:\n%s", out)
	}
}

func TestPolicyTestFailingCase(t *testing.T) {
	// Flags may follow the positional arguments.
	out, err := runPolicyCmd(t, "test", policyTestdata+"/policies", policyTestdata+"/fixtures_failing.yaml", "--tenant", "acme")
	if err == nil || err.Error() != "1 of 2 policy test cases failed" {
		t.Fatalf("want the failure reported as an error, got %v\n%s", err, out)
	}
	for _, want := range []string{
		"PASS  a lookup is allowed: allow [DEFAULT_ALLOW]",
		"FAIL  a big refund is allowed (wrong on purpose) (line 8)",
		"got:     require_approval [AMOUNT_OVER_THRESHOLD]",
		"want:    allow",
		"matched: refunds/big-refund (require_approval)",
		"1 passed, 1 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPolicyTestReasonCodesMustMatchExactly(t *testing.T) {
	dir := t.TempDir()
	fx := filepath.Join(dir, "fx.yaml")
	writeFile(t, fx, `
- name: order matters
  input: {action: {tool: issue_refund, arguments: {amount: 250000}}}
  expect: {decision: block, reasonCodes: [AMOUNT_OVER_THRESHOLD, AMOUNT_FAR_OVER_THRESHOLD]}
`)
	out, err := runPolicyCmd(t, "test", policyTestdata+"/policies", fx)
	if err == nil || !strings.Contains(out, "want:    block [AMOUNT_OVER_THRESHOLD, AMOUNT_FAR_OVER_THRESHOLD]") {
		t.Fatalf("reason codes in the wrong order passed: %v\n%s", err, out)
	}
}

// typedRefundsYAML declares the amount its rule reads.
const typedRefundsYAML = `
name: Refunds
inputs:
  amount: {type: number, required: true}
rules:
  - id: big
    when: action.tool == "refund" && context.amount > 1000
    outcome: require_approval
`

// TestPolicyTestFailClosedAndInputs: rules that opt out of failing closed
// are listed, an erroring rule fails closed in the output, and a case the
// live service would refuse for a declared input expects invalid_request.
func TestPolicyTestFailClosedAndInputs(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "refunds.yaml"), typedRefundsYAML)
	writeFile(t, filepath.Join(dir, "tiers.yaml"), `
name: Tiers
rules:
  - id: gold-only
    when: context.tier != "gold"
    outcome: warn
    onError: skip
  - id: vip
    when: context.vip == true
    outcome: block
`)
	tests := []cmdCase{
		{"a mistyped input is refused", "{input: {action: {tool: refund}, context: {amount: '5000'}}, expect: {decision: invalid_request}}",
			"PASS  c: invalid_request (field 'amount' must be a number)", false},
		{"expecting a decision for a refused request fails", "{input: {action: {tool: refund}}, expect: {decision: allow}}",
			"got:     invalid_request (field 'amount' is required)", true},
		{"an erroring rule fails closed", "{input: {action: {tool: lookup}, context: {tier: gold}}, expect: {decision: block, reasonCodes: [RULE_VIP, EVALUATION_ERROR]}}",
			"PASS  c: block [RULE_VIP, EVALUATION_ERROR]", false},
		{"onError skip does not apply", "{input: {action: {tool: lookup}, context: {vip: false}}, expect: {decision: allow}}",
			"PASS  c: allow [DEFAULT_ALLOW]", false},
		{"invalid_request is not expected of a valid request", "{input: {action: {tool: refund}, context: {amount: 5, tier: gold, vip: false}}, expect: {decision: invalid_request}}",
			"want:    invalid_request", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := filepath.Join(t.TempDir(), "fx.yaml")
			writeFile(t, fx, "- {name: c, "+strings.TrimPrefix(tt.fixture, "{")+"\n")
			out, err := runPolicyCmd(t, "test", dir, fx)
			if (err != nil) != tt.fail || !strings.Contains(out, tt.want) {
				t.Fatalf("err %v (want failure: %v); output lacks %q:\n%s", err, tt.fail, tt.want, out)
			}
			if !strings.Contains(out, "onError: skip (an evaluation error turns the rule off instead of failing closed): tiers/gold-only") {
				t.Fatalf("onError: skip rules not listed:\n%s", out)
			}
		})
	}
}

// TestPolicyTestBudgets: fixtures give the budgets a decision sees, so
// rules reading budget.<name> and the budgets' own outcomes are tested
// offline.
func TestPolicyTestBudgets(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "spend.yaml"), `
name: Spend
rules:
  - id: near-cap
    when: budget.calls.used > budget.calls.limit * 0.8
    outcome: warn
    reasonCodes: [NEAR_CAP]
`)
	tests := []cmdCase{
		{"under the cap", "{input: {action: {tool: lookup}, budgets: {calls: {used: 3, limit: 10}}}, expect: {decision: allow}}",
			"PASS  c: allow [DEFAULT_ALLOW]", false},
		{"a rule reads used", "{input: {action: {tool: lookup}, budgets: {calls: {used: 9, limit: 10}}}, expect: {decision: warn, reasonCodes: [NEAR_CAP]}}",
			"PASS  c: warn [NEAR_CAP]", false},
		{"over the cap, the budget's outcome", "{input: {action: {tool: lookup}, budgets: {calls: {used: 11, limit: 10, outcome: require_approval}}}, expect: {decision: require_approval, reasonCodes: [BUDGET_EXCEEDED, NEAR_CAP]}}",
			"PASS  c: require_approval [BUDGET_EXCEEDED, NEAR_CAP]", false},
		{"unavailable usage fails closed", "{input: {action: {tool: lookup}, budgets: {calls: {limit: 10, outcome: warn, unavailable: true}}}, expect: {decision: warn, reasonCodes: [BUDGET_EXCEEDED, BUDGET_UNAVAILABLE, NEAR_CAP, EVALUATION_ERROR]}}",
			"PASS  c: warn [BUDGET_EXCEEDED, BUDGET_UNAVAILABLE, NEAR_CAP, EVALUATION_ERROR]", false},
		{"no such budget errors and fails closed", "{input: {action: {tool: lookup}}, expect: {decision: allow}}",
			"got:     warn [NEAR_CAP, EVALUATION_ERROR]", true},
		{"a bad outcome is a bad fixture", "{input: {action: {tool: lookup}, budgets: {calls: {used: 1, limit: 2, outcome: maybe}}}, expect: {decision: allow}}",
			"input.budgets.calls.outcome", true},
	}
	runFixtureCases(t, dir, tests)
}

func TestPolicyTestInvalidPolicyReportsEveryDetail(t *testing.T) {
	out, err := runPolicyCmd(t, "test", policyTestdata+"/invalid", policyTestdata+"/fixtures.yaml")
	if err == nil {
		t.Fatalf("invalid policies accepted:\n%s", out)
	}
	msg := err.Error()
	for _, want := range []string{
		"2 policy files are invalid",
		"bad-outcome.yml: policy is invalid",
		`rules[0].outcome: line 3: rule nope: unknown outcome "maybe"`,
		"broken.yaml: policy has invalid conditions",
		"rules[1].when: line 7: rule typo: ERROR: <input>:1:26: Syntax error",
		"rules[2].when: line 10: rule unknown-variable: ERROR: <input>:1:1: undeclared reference to 'request'",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "good.yaml") {
		t.Errorf("a valid file is reported:\n%s", msg)
	}
}

func TestPolicyTestBadFixtures(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, src, want string }{
		{"unknown field", "- name: x\n  input: {action: {tool: a}}\n  expected: {decision: allow}\n", "field expected not found"},
		{"missing decision", "- name: x\n  input: {action: {tool: a}}\n", `:1: case "x": expect.decision is required`},
		{"bad decision", "- name: x\n  expect: {decision: perhaps}\n", `unknown outcome "perhaps"`},
		{"bad org mode", "- name: x\n  org: {mode: denylist}\n  expect: {decision: allow}\n", `org.mode "denylist"`},
		{"duplicate name", "- {name: x, expect: {decision: allow}}\n- {name: x, expect: {decision: allow}}\n", `:2: case "x": the name is used twice`},
		{"not a list", "name: x\n", "must be a YAML list"},
		{"empty", "", "the file is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".yaml")
			writeFile(t, fx, tt.src)
			_, err := runPolicyCmd(t, "test", policyTestdata+"/policies", fx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func TestPolicyUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"test", policyTestdata + "/policies"},
		{"test", "/nonexistent", policyTestdata + "/fixtures.yaml"},
		{"apply", "--key", "k"},
		{"apply", "-f", policyTestdata + "/policies", "--url", "ftp://x", "--key", "k"},
		{"replay"},
		{"replay", "--draft", policyTestdata + "/draft", "--since", "yesterday"},
		{"replay", "--draft", policyTestdata + "/draft", "--tenant", "Bad Tenant"},
	} {
		if _, err := runPolicyCmd(t, args...); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	t.Setenv("VIGIL_API_KEY", "")
	if _, err := runPolicyCmd(t, "apply", "-f", policyTestdata+"/policies"); err == nil || !strings.Contains(err.Error(), "VIGIL_API_KEY") {
		t.Errorf("missing key: %v", err)
	}
}

func TestPolicyParseSince(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2w":                   now.Add(-14 * 24 * time.Hour),
		"36h":                  now.Add(-36 * time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"2026-03-01T00:00:00Z": time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: got %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0d", "-3h", "d", "week"} {
		if _, err := parseSince(in, now); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// ---- vigil policy apply ----

// fakePolicyAPI implements the three policy routes of Vigil's HTTP API in
// memory (POST /v1/policies, GET and PATCH /v1/policies/:id), normalizing
// documents with the policy package exactly as the real server does.
type fakePolicyAPI struct {
	t        *testing.T
	key      string
	mu       sync.Mutex
	seq      uint64
	policies map[string]fakePolicy
	requests []string
}

type fakePolicy struct {
	doc     policy.Document
	version uint64
}

func newFakePolicyAPI(t *testing.T, key string) (*fakePolicyAPI, *httptest.Server) {
	f := &fakePolicyAPI{t: t, key: key, seq: 100, policies: map[string]fakePolicy{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakePolicyAPI) fail(w http.ResponseWriter, status int, code, msg string, details ...apperr.FieldError) {
	if details == nil {
		details = []apperr.FieldError{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error": map[string]any{"code": code, "message": msg, "details": details},
		"code":  strings.ToLower(code), "message": msg,
	})
}

func (f *fakePolicyAPI) failErr(w http.ResponseWriter, err error) {
	var ae *apperr.Error
	if !errors.As(err, &ae) {
		f.fail(w, 500, "INTERNAL_ERROR", err.Error())
		return
	}
	f.fail(w, 400, "VALIDATION_ERROR", ae.Message, ae.Details...)
}

func (f *fakePolicyAPI) view(w http.ResponseWriter, status int, p fakePolicy) {
	d := p.doc
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": d.ID, "name": d.Name, "description": d.Description, "enabled": d.IsEnabled(), "priority": d.Priority,
		"rules": d.Rules, "conditions": d.Conditions, "defaultDecision": d.DefaultDecision,
		"status": "active", "version": p.version, "createdAt": time.Now().UTC(), "updatedAt": time.Now().UTC(),
	})
}

func (f *fakePolicyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "Bearer "+f.key {
		f.fail(w, 401, "AUTHENTICATION_FAILED", "missing or unknown API key")
		return
	}
	body, _ := io.ReadAll(r.Body)
	id, hasID := strings.CutPrefix(r.URL.Path, "/v1/policies/")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/policies":
		doc, err := policy.Parse(body)
		if err != nil {
			f.failErr(w, err)
			return
		}
		if doc.ID == "" {
			f.fail(w, 400, "VALIDATION_ERROR", "the CLI always sends an id")
			return
		}
		if _, ok := f.policies[doc.ID]; ok {
			f.fail(w, 409, "CONFLICT", fmt.Sprintf("policy %q already exists", doc.ID))
			return
		}
		if err := compileOnly(doc); err != nil {
			f.failErr(w, err)
			return
		}
		f.seq += 3 // versions are stream sequences: increasing, not contiguous
		p := fakePolicy{doc: doc, version: f.seq}
		f.policies[doc.ID] = p
		f.view(w, http.StatusCreated, p)
	case r.Method == http.MethodGet && hasID:
		p, ok := f.policies[id]
		if !ok {
			f.fail(w, 404, "NOT_FOUND", fmt.Sprintf("policy %q not found", id))
			return
		}
		f.view(w, http.StatusOK, p)
	case r.Method == http.MethodPatch && hasID:
		p, ok := f.policies[id]
		if !ok {
			f.fail(w, 404, "NOT_FOUND", fmt.Sprintf("policy %q not found", id))
			return
		}
		var patch map[string]json.RawMessage
		if err := json.Unmarshal(body, &patch); err != nil {
			f.fail(w, 400, "VALIDATION_ERROR", "body must be a JSON object")
			return
		}
		cur, _ := json.Marshal(p.doc)
		var merged map[string]json.RawMessage
		_ = json.Unmarshal(cur, &merged)
		for k, v := range patch {
			if string(v) == "null" {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		if _, ok := patch["conditions"]; !ok {
			if _, ok := patch["rules"]; ok {
				delete(merged, "conditions")
				delete(merged, "defaultDecision")
			}
		} else if _, ok := patch["rules"]; !ok {
			delete(merged, "rules")
		}
		b, _ := json.Marshal(merged)
		doc, err := policy.Parse(b)
		if err != nil {
			f.failErr(w, err)
			return
		}
		doc.ID = id
		if err := compileOnly(doc); err != nil {
			f.failErr(w, err)
			return
		}
		f.seq += 2
		p = fakePolicy{doc: doc, version: f.seq}
		f.policies[id] = p
		f.view(w, http.StatusOK, p)
	default:
		f.fail(w, 404, "NOT_FOUND", "no route")
	}
}

func (f *fakePolicyAPI) takeRequests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.requests
	f.requests = nil
	return r
}

func compileOnly(d policy.Document) error {
	c, err := policy.NewCompiler()
	if err != nil {
		return err
	}
	_, err = c.Compile(d)
	return err
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyPolicies copies the example policies to a directory the test may
// change.
func copyPolicies(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(policyTestdata + "/policies")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(policyTestdata, "policies", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, e.Name()), string(b))
	}
	return dir
}

func TestPolicyApplyCreatesUpdatesAndLeavesUnchanged(t *testing.T) {
	fake, srv := newFakePolicyAPI(t, "vk_test")
	dir := copyPolicies(t)
	t.Setenv("VIGIL_API_URL", srv.URL)
	t.Setenv("VIGIL_API_KEY", "vk_test")

	// First run: everything is new.
	out, err := runPolicyCmd(t, "apply", "-f", dir)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	wantLines(t, out, "created payments", "created production-data", "created refunds", "created shell", "4 created, 0 updated, 0 unchanged")
	reqs := fake.takeRequests()
	if want := 8; len(reqs) != want { // GET (404) + POST each
		t.Fatalf("requests %q", reqs)
	}
	// The Kaplaix-form policy took its id from the file name, and so did
	// its mapped rule.
	if p := fake.policies["payments"]; len(p.doc.Rules) != 1 || p.doc.Rules[0].ID != "payments" || p.doc.Conditions["toolType"] != "payment" {
		t.Fatalf("payments stored as %+v", p.doc)
	}
	before := fake.policies["refunds"].version

	// Second run after editing one file (and with the key and URL as
	// flags): one update, the rest unchanged, no writes for those.
	src, _ := os.ReadFile(filepath.Join(dir, "refunds.yaml"))
	writeFile(t, filepath.Join(dir, "refunds.yaml"), strings.Replace(string(src), "amount > 1000\n", "amount > 2500\n", 1))
	out, err = runPolicyCmd(t, "apply", "--url", srv.URL+"/", "--key", "vk_test", "-f", dir)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	after := fake.policies["refunds"].version
	wantLines(t, out, "unchanged payments", "unchanged production-data",
		fmt.Sprintf("updated refunds (v%d → v%d)", before, after), "unchanged shell", "0 created, 1 updated, 3 unchanged")
	if after <= before || !strings.Contains(fake.policies["refunds"].doc.Rules[0].When, "2500") {
		t.Fatalf("refunds not updated: v%d → v%d %+v", before, after, fake.policies["refunds"].doc.Rules[0])
	}
	reqs = fake.takeRequests()
	if !slices.Contains(reqs, "PATCH /v1/policies/refunds") || len(reqs) != 5 {
		t.Fatalf("requests %q", reqs)
	}

	// Third run: nothing to do.
	out, err = runPolicyCmd(t, "apply", "--file", dir)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	wantLines(t, out, "0 created, 0 updated, 4 unchanged")
	for _, r := range fake.takeRequests() {
		if !strings.HasPrefix(r, "GET ") {
			t.Fatalf("an unchanged apply wrote: %s", r)
		}
	}

	// Switching a policy between the rule form and the Kaplaix form
	// replaces the other form on the server.
	writeFile(t, filepath.Join(dir, "payments.json"), `{"name": "Payment refunds need review", "rules": [{"id": "r", "when": "action.toolType == 'payment'", "outcome": "block"}]}`)
	writeFile(t, filepath.Join(dir, "shell.yaml"), "name: Shell commands\nconditions: {toolType: shell}\ndefaultDecision: denied\n")
	out, err = runPolicyCmd(t, "apply", "-f", dir, "--dry-run")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	wantLines(t, out, "would update payments", "would update shell", "0 created, 2 updated, 2 unchanged (dry run: nothing changed)")
	for _, r := range fake.takeRequests() {
		if !strings.HasPrefix(r, "GET ") {
			t.Fatalf("a dry run wrote: %s", r)
		}
	}
	if _, err = runPolicyCmd(t, "apply", "-f", dir); err != nil {
		t.Fatal(err)
	}
	if p := fake.policies["payments"].doc; len(p.Conditions) != 0 || p.Rules[0].ID != "r" {
		t.Fatalf("payments: %+v", p)
	}
	if p := fake.policies["shell"].doc; p.Conditions["toolType"] != "shell" || len(p.Rules) != 1 || p.Rules[0].ID != "shell" {
		t.Fatalf("shell: %+v", p)
	}
	out, err = runPolicyCmd(t, "apply", "-f", dir)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "0 created, 0 updated, 4 unchanged")
}

func TestPolicyApplyInvalidFileAbortsBeforeAnyRequest(t *testing.T) {
	fake, srv := newFakePolicyAPI(t, "vk_test")
	out, err := runPolicyCmd(t, "apply", "-f", policyTestdata+"/invalid", "--url", srv.URL, "--key", "vk_test")
	if err == nil || !strings.Contains(err.Error(), "rule typo: ERROR") || !strings.Contains(err.Error(), `unknown outcome "maybe"`) {
		t.Fatalf("want the local errors, got %v\n%s", err, out)
	}
	if reqs := fake.takeRequests(); len(reqs) != 0 || len(fake.policies) != 0 {
		t.Fatalf("requests were sent for an invalid directory: %q", reqs)
	}
}

func TestPolicyApplyReportsServerErrors(t *testing.T) {
	_, srv := newFakePolicyAPI(t, "vk_test")
	_, err := runPolicyCmd(t, "apply", "-f", policyTestdata+"/policies", "--url", srv.URL, "--key", "wrong")
	if err == nil || !strings.Contains(err.Error(), "GET /v1/policies/payments: 401 AUTHENTICATION_FAILED: missing or unknown API key") {
		t.Fatalf("got %v", err)
	}

	// A validation error's message and every detail are printed.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":{"code":"NOT_FOUND","message":"not found","details":[]},"code":"not_found","message":"not found"}`)
			return
		}
		w.WriteHeader(400)
		_, _ = io.WriteString(w, `{"error":{"code":"VALIDATION_ERROR","message":"policy is invalid","details":[{"path":"rules[0].when","code":"invalid_expression","message":"line 4: rule x: boom"}]},"code":"invalid_request","message":"policy is invalid"}`)
	}))
	defer bad.Close()
	out, err := runPolicyCmd(t, "apply", "-f", policyTestdata+"/policies/refunds.yaml", "--url", bad.URL, "--key", "k")
	if err == nil || !strings.Contains(err.Error(), "POST /v1/policies: 400 VALIDATION_ERROR: policy is invalid\n  rules[0].when: line 4: rule x: boom") {
		t.Fatalf("got %v\n%s", err, out)
	}
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// ---- vigil policy replay ----

func mustPackFrom(t *testing.T, path, ten string) *policy.Pack {
	t.Helper()
	p, _, err := buildPack(path, ten)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// replayFixtureInputs is recorded history: the agent, tool and arguments
// of each decision.
func replayFixtureInputs(ten string) []policy.Input {
	in := func(agent, tool string, args map[string]any) policy.Input {
		return policy.Input{Tenant: ten, Agent: policy.AgentState{ID: agent}, Action: policy.Action{Kind: "tool_call", Tool: tool, Arguments: args}, Context: map[string]any{}}
	}
	var ins []policy.Input
	for range 3 {
		ins = append(ins, in("bot-a", "lookup", nil))
	}
	for _, amount := range []float64{10, 2000, 3000, 200000} {
		ins = append(ins, in("bot-a", "issue_refund", map[string]any{"amount": amount}))
	}
	for _, cmd := range []string{"ls", "pwd", "rm -rf /"} {
		ins = append(ins, in("bot-b", "shell", map[string]any{"command": cmd}))
	}
	ins = append(ins, in("bot-b", "issue_refund", map[string]any{"amount": 1500.0}))
	return ins
}

func insertDecisions(t testing.TB, conn driver.Conn, recs []policy.DecisionRecord) {
	t.Helper()
	ctx := context.Background()
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO decisions (tenant_id, decision_id, agent_id, session_id, source, event_id, outcome, reason_codes, pack_hash, action_kind, tool, target, publisher, signature, at_time, at_ms, record)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		a := r.Input.Action
		if err := batch.Append(r.Tenant, r.ID, r.AgentID, r.SessionID, r.Source, r.EventID, r.Decision.Outcome.String(), r.Decision.ReasonCodes,
			r.Decision.PackHash, a.Kind, a.Tool, a.Target, a.Publisher, r.Signature, r.At.Truncate(time.Second), r.At.UnixMilli(), string(raw)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyReplayMatchesEvaluatingByHand(t *testing.T) {
	db := chtest.New(t)
	ctx := context.Background()
	if _, err := chx.Migrate(ctx, db.Conn, os.DirFS("../../services/policy/migrations"), "policy"); err != nil {
		t.Fatal(err)
	}
	const ten = "acme"
	live := mustPackFrom(t, policyTestdata+"/policies", ten)
	draft := mustPackFrom(t, policyTestdata+"/draft", ten)

	// Record history as the policy service would: decided by the live pack.
	now := time.Now().UTC()
	record := func(in policy.Input, at time.Time) policy.DecisionRecord {
		d := live.Evaluate(in, policy.OrgPolicy{Mode: policy.OrgOff})
		return policy.DecisionRecord{
			ID: policy.NewDecisionID(), Tenant: in.Tenant, AgentID: in.Agent.ID, Source: policy.SourceDecision,
			Input: in, Decision: d, Signature: policy.Signature(in.Agent.ID, in.Action, d.ReasonCodes), At: at,
		}
	}
	var history []policy.DecisionRecord
	for i, in := range replayFixtureInputs(ten) {
		history = append(history, record(in, now.Add(-time.Duration(i+1)*time.Hour)))
	}
	rows := slices.Clone(history)
	rows = append(rows, history[4]) // a redelivered copy, not yet merged away
	other := replayFixtureInputs("other")[4]
	rows = append(rows, record(other, now.Add(-time.Hour)))                            // another tenant
	rows = append(rows, record(replayFixtureInputs(ten)[4], now.Add(-9*24*time.Hour))) // before --since
	insertDecisions(t, db.Conn, rows)

	// By hand: evaluate every recorded input with the draft.
	type change struct{ agent, tool, from, to string }
	byHand := map[change]int{}
	unchanged := 0
	for _, rec := range history {
		d := draft.Evaluate(rec.Input, policy.OrgPolicy{Mode: policy.OrgOff})
		if d.Outcome == rec.Decision.Outcome {
			unchanged++
			continue
		}
		byHand[change{rec.AgentID, rec.Input.Action.Tool, rec.Decision.Outcome.String(), d.Outcome.String()}]++
	}
	// And the numbers the example draft is meant to produce: the higher
	// refund threshold lets 2000, 3000 and 1500 through; shell commands
	// other than rm -rf go from warn to require_approval.
	wantHand := map[change]int{
		{"bot-a", "issue_refund", "require_approval", "allow"}: 2,
		{"bot-b", "issue_refund", "require_approval", "allow"}: 1,
		{"bot-b", "shell", "warn", "require_approval"}:         2,
	}
	if !mapsEqual(byHand, wantHand) || unchanged != 6 {
		t.Fatalf("by hand: %v unchanged=%d", byHand, unchanged)
	}

	out, err := runPolicyCmd(t, "replay", "--draft", policyTestdata+"/draft", "--since", "7d", "--tenant", ten,
		"--clickhouse-dsn", db.DSN, "--samples", "1", "--json")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	var rep replayReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Total != len(history) || rep.Unchanged != unchanged || rep.Changed != len(history)-unchanged || rep.PackHash != draft.Hash || rep.LimitReached {
		t.Fatalf("report %+v, want total %d unchanged %d", rep, len(history), unchanged)
	}
	got := map[change]int{}
	ids := map[string]bool{}
	for _, rec := range history {
		ids[rec.ID] = true
	}
	for _, c := range rep.Changes {
		got[change{c.AgentID, c.Tool, c.From, c.To}] = c.Count
		if len(c.Samples) != 1 || !ids[c.Samples[0]] {
			t.Errorf("samples %v", c.Samples)
		}
	}
	if !mapsEqual(got, byHand) {
		t.Fatalf("replay changes %v, by hand %v", got, byHand)
	}

	// The text report, and the limit.
	out, err = runPolicyCmd(t, "replay", "--draft", policyTestdata+"/draft", "--tenant", ten, "--clickhouse-dsn", db.DSN, "--limit", "4")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	wantLines(t, out, "replayed 4 decisions", "the --limit was reached", "AGENT", "bot-b", "warn → require_approval")

	// Against the live pack nothing changes.
	out, err = runPolicyCmd(t, "replay", "--draft", policyTestdata+"/policies", "--tenant", ten, "--clickhouse-dsn", db.DSN)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	wantLines(t, out, fmt.Sprintf("replayed %d decisions", len(history)), fmt.Sprintf("unchanged: %d", len(history)), "changed:   0")

	// An org blocklist file takes part in the replay.
	out, err = runPolicyCmd(t, "replay", "--draft", policyTestdata+"/policies", "--tenant", ten, "--clickhouse-dsn", db.DSN,
		"--org", writeTemp(t, "org.yaml", "mode: blocklist\ntools: [lookup]\n"), "--json")
	if err != nil {
		t.Fatal(err)
	}
	rep = replayReport{}
	_ = json.Unmarshal([]byte(out), &rep)
	if rep.Changed != 3 || len(rep.Changes) != 1 || rep.Changes[0].To != "block" || rep.Changes[0].Tool != "lookup" {
		t.Fatalf("org replay %+v", rep)
	}
}

func TestPolicyReplayMissingTable(t *testing.T) {
	db := chtest.New(t)
	_, err := runPolicyCmd(t, "replay", "--draft", policyTestdata+"/draft", "--clickhouse-dsn", db.DSN)
	if err == nil || !strings.Contains(err.Error(), "read decisions from ClickHouse") {
		t.Fatalf("got %v", err)
	}
}

func TestPolicyReplayKeepsRecordedSuppression(t *testing.T) {
	live := mustPackFrom(t, policyTestdata+"/policies", "acme")
	in := policy.Input{Tenant: "acme", Agent: policy.AgentState{ID: "bot"}, Action: policy.Action{Tool: "shell", Arguments: map[string]any{"command": "ls"}}}
	d := live.Evaluate(in, policy.OrgPolicy{})
	suppressed := policy.DecisionRecord{
		ID: "dec_1", AgentID: "bot", Input: in, Signature: policy.Signature("bot", in.Action, d.ReasonCodes),
		Decision: policy.Decision{Outcome: policy.Allow, ReasonCodes: []string{policy.ReasonSuppressed}},
	}
	// Same reasons under the live pack: still suppressed, unchanged.
	if rep := replayRecords(live, []policy.DecisionRecord{suppressed}, policy.OrgPolicy{}, 5); rep.Unchanged != 1 {
		t.Fatalf("%+v", rep)
	}
	// The draft gives the action other reasons: the suppression no longer applies.
	in.Action.Arguments = map[string]any{"command": "rm -rf /"}
	suppressed.Input = in
	rep := replayRecords(live, []policy.DecisionRecord{suppressed}, policy.OrgPolicy{}, 5)
	if rep.Changed != 1 || rep.Changes[0].To != "block" || rep.Changes[0].Samples[0] != "dec_1" {
		t.Fatalf("%+v", rep)
	}
}

// TestPolicyReplayRefusedByInputs: a draft that declares inputs reports
// the recorded requests it would refuse instead of deciding them; an
// ingested event is judged (failing closed), never refused.
func TestPolicyReplayRefusedByInputs(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "refunds.yaml"), typedRefundsYAML)
	draft := mustPackFrom(t, dir, "acme")
	rec := func(id, source string, ctx map[string]any) policy.DecisionRecord {
		return policy.DecisionRecord{ID: id, AgentID: "bot", Source: source,
			Input:    policy.Input{Tenant: "acme", Action: policy.Action{Tool: "refund"}, Context: ctx},
			Decision: policy.Decision{Outcome: policy.Allow, ReasonCodes: []string{policy.ReasonDefaultAllow}}}
	}
	rep := replayRecords(draft, []policy.DecisionRecord{
		rec("dec_ok", policy.SourceDecision, map[string]any{"amount": 5.0}),
		rec("dec_str", policy.SourceDecision, map[string]any{"amount": "5000"}),
		rec("dec_event", policy.SourceEvent, map[string]any{"amount": "5000"}),
	}, policy.OrgPolicy{}, 5)
	if rep.Total != 3 || rep.Unchanged != 1 || rep.Refused != 1 || rep.RefusedSamples[0] != "dec_str: field 'amount' must be a number" ||
		rep.Changed != 1 || rep.Changes[0].To != "require_approval" || rep.Changes[0].Samples[0] != "dec_event" {
		t.Fatalf("%+v", rep)
	}
	var out bytes.Buffer
	printReplay(&out, rep)
	if !strings.Contains(out.String(), "refused by the draft's declared inputs (400 invalid_request, not decided): 1") {
		t.Fatalf("report:\n%s", out.String())
	}
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	writeFile(t, p, content)
	return p
}

func mapsEqual[K comparable](a, b map[K]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPolicyTestLabels: fixtures give a session's data-flow labels, the
// manifest's sources, and an unreadable label store.
func TestPolicyTestLabels(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "flow.yaml"), dataFlowE2EPolicy)
	agent := "agent: {id: a1, declared: true, tools: [web_fetch, http_post], destinations: [mail.acme.internal], sources: {web_fetch: [untrusted_content]}}"
	send := "action: {kind: http, tool: http_post, target: 'https://drop.evil.test/'}"
	tests := []cmdCase{
		{"labelled session sends out", "{input: {" + agent + ", " + send + ", session: {id: s1, labels: [untrusted_content]}}, expect: {decision: require_approval, reasonCodes: [DATA_FLOW_UNTRUSTED_EGRESS, UNDECLARED_DESTINATION]}}",
			"PASS  c: require_approval [DATA_FLOW_UNTRUSTED_EGRESS, UNDECLARED_DESTINATION]", false},
		{"clean session sends out", "{input: {" + agent + ", " + send + ", session: {id: s1}}, expect: {decision: warn}}",
			"PASS  c: warn [UNDECLARED_DESTINATION]", false},
		{"label store unavailable fails closed", "{input: {" + agent + ", " + send + ", session: {id: s1, labelsUnavailable: true}}, expect: {decision: require_approval, reasonCodes: [DATA_FLOW_UNTRUSTED_EGRESS, EVALUATION_ERROR, UNDECLARED_DESTINATION]}}",
			"PASS  c: require_approval [DATA_FLOW_UNTRUSTED_EGRESS, EVALUATION_ERROR, UNDECLARED_DESTINATION]", false},
		{"a misspelt session key is a bad fixture", "{input: {" + send + ", session: {id: s1, lables: [x]}}, expect: {decision: warn}}",
			"lables", true},
	}
	runFixtureCases(t, dir, tests)
}

// cmdCase is one single-case fixture file run by `vigil policy test`
// against a policy directory: it fails or not, and its output holds want.
type cmdCase struct {
	name, fixture, want string
	fail                bool
}

func runFixtureCases(t *testing.T, dir string, tests []cmdCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := filepath.Join(t.TempDir(), "fx.yaml")
			writeFile(t, fx, "- {name: c, "+strings.TrimPrefix(tt.fixture, "{")+"\n")
			out, err := runPolicyCmd(t, "test", dir, fx)
			if (err != nil) != tt.fail || !strings.Contains(out+fmt.Sprint(err), tt.want) {
				t.Fatalf("err %v (want failure: %v); output lacks %q:\n%s", err, tt.fail, tt.want, out)
			}
		})
	}
}
