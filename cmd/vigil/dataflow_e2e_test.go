package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// dataFlowE2EPolicy: reading untrusted content labels the session, and a
// labelled session's sends to undeclared destinations need a person.
const dataFlowE2EPolicy = `id: dataflow
name: Data flow
labels:
  - id: untrusted-reads
    source: untrusted_content
rules:
  - id: exfil
    when: '"untrusted_content" in session.labels && action.host != "" && !(action.host in agent.destinations)'
    outcome: require_approval
    reasonCodes: [DATA_FLOW_UNTRUSTED_EGRESS]
    message: untrusted content may not leave for an undeclared destination
`

// dataFlowManifest declares web_fetch a source of untrusted content.
var dataFlowManifest = map[string]any{
	"tools":        []string{"web_fetch", "summarize", "http_post"},
	"destinations": []string{"mail.acme.internal"},
	"sources":      map[string]any{"web_fetch": "untrusted_content"},
}

// counted sums a counter family of reg.
func counted(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

func act(agent, session, kind, tool, target string) map[string]any {
	a := map[string]any{"kind": kind, "tool": tool}
	if target != "" {
		a["target"] = target
	}
	return map[string]any{"agentId": agent, "sessionId": session, "action": a}
}

// wantDataFlowApproval checks that d is the data-flow rule's
// require_approval and that its explanation names the record first.
func wantDataFlowApproval(t *testing.T, what string, d polKLA, first string) {
	t.Helper()
	if d.Decision != "require_approval" || len(d.ReasonCodes) == 0 || d.ReasonCodes[0] != "DATA_FLOW_UNTRUSTED_EGRESS" {
		t.Fatalf("%s: %s, want require_approval for DATA_FLOW_UNTRUSTED_EGRESS", what, d)
	}
	if !slices.ContainsFunc(d.Matches, func(m polMatch) bool { return m.RuleID == "exfil" && strings.Contains(m.Message, first) }) {
		t.Fatalf("%s: no match names the read %s: %+v", what, first, d.Matches)
	}
}

// TestDataFlowRuleOnTheStack: over HTTP, with two policy replicas sharing
// the decisions: a session reads untrusted content, does something
// harmless, then sends to an undeclared destination; the third action
// needs approval and names the first. Other sessions and tenants are not
// touched, and the label survives a restart of the whole stack.
func TestDataFlowRuleOnTheStack(t *testing.T) {
	db := chtest.New(t)
	dir := t.TempDir()
	// Over NATS: the stack's api would otherwise decide in its own process.
	s := startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir, API: unlimited, DecideOverNATS: true})
	replica := startPolicyReplica(t, s.st, dir, func(c *policysvc.Config) { c.EvaluateEvents = false }).reg
	tenants := map[string]polClient{}
	agents := map[string]polClient{}
	for _, tenant := range []string{"acme", "globex"} {
		owner := polClient{t: t, base: s.base, key: s.key(tenant, auth.RoleOwner)}
		owner.createPolicy(dataFlowE2EPolicy)
		owner.post("/v1/agents/a1/manifest", dataFlowManifest).want(t, http.StatusOK, "declare a1")
		tenants[tenant] = owner
		agents[tenant] = polClient{t: t, base: s.base, key: s.key(tenant, auth.RoleAgent, "a1")}
	}
	c := agents["acme"]

	// Enough sessions that both replicas answer (each request goes to
	// either): three actions each.
	const sessions = 8
	firsts := map[string]string{}
	for i := range sessions {
		session := fmt.Sprintf("df-%d", i)
		read := c.evaluate(act("a1", session, "tool_call", "web_fetch", ""))
		if read.Decision != "allow" {
			t.Fatalf("%s read: %s", session, read)
		}
		firsts[session] = read.DecisionID
		if d := c.evaluate(act("a1", session, "tool_call", "summarize", "")); d.Decision != "allow" {
			t.Fatalf("%s harmless: %s", session, d)
		}
		send := c.evaluate(act("a1", session, "http", "http_post", "https://drop.evil.test/upload"))
		wantDataFlowApproval(t, session+" send", send, read.DecisionID)
		// A declared destination stays allowed in the labelled session.
		if d := c.evaluate(act("a1", session, "http", "http_post", "https://mail.acme.internal/send")); d.Decision != "allow" {
			t.Fatalf("%s declared destination: %s", session, d)
		}
	}
	if n := counted(t, replica, "vigil_policy_decisions_total"); n == 0 || n == float64(4*sessions) {
		t.Fatalf("the second replica decided %v of %d: the test did not spread the sessions over both", n, 4*sessions)
	}

	// Isolation: an unlabelled session of acme, and globex's session of
	// the same id, only draw the manifest warning.
	for _, probe := range []struct {
		tenant, session string
	}{{"acme", "df-clean"}, {"globex", "df-0"}} {
		d := agents[probe.tenant].evaluate(act("a1", probe.session, "http", "http_post", "https://drop.evil.test/upload"))
		if d.Decision != "warn" || slices.Contains(d.ReasonCodes, "DATA_FLOW_UNTRUSTED_EGRESS") {
			t.Fatalf("%s/%s: %s, want only the manifest warning", probe.tenant, probe.session, d)
		}
	}

	// The whole stack restarts: the label and its cause are still there.
	s.Stop()
	s2 := startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir, API: unlimited})
	c2 := polClient{t: t, base: s2.base, key: s2.key("acme", auth.RoleAgent, "a1")}
	wantDataFlowApproval(t, "send after a restart", c2.evaluate(act("a1", "df-0", "http", "http_post", "https://drop.evil.test/upload")), firsts["df-0"])
	d := c2.evaluate(act("a1", "df-clean", "http", "http_post", "https://drop.evil.test/upload"))
	if d.Decision != "warn" {
		t.Fatalf("unlabelled session after a restart: %s", d)
	}
}
