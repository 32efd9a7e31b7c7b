package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/services/ledger"
)

// TestRiskE2E drives the risk service through the whole stack: events in
// over HTTP, policy verdicts, baselines, anomalies listed as verdicts,
// learn, session risk, the session list with include=risk,policy,
// profiles, reset, metrics and tenant isolation.
func TestRiskE2E(t *testing.T) {
	e := newEnv(t)
	// The default warm-up is 20 observations and a burst is 5 failures.
	var events []map[string]any
	for i := 0; i < 20; i++ {
		events = append(events, ev("riskbot", "rs1", baseTime.Add(time.Duration(i)*time.Second)))
	}
	events = append(events, with(ev("riskbot", "rs1", baseTime.Add(21*time.Second)), "payload", map[string]any{"toolName": "shell_exec", "responseStatus": 200}))
	for i := 0; i < 5; i++ {
		events = append(events, with(ev("riskbot", "rs1", baseTime.Add(time.Duration(22+i)*time.Second)), "payload", map[string]any{"toolName": "web_search", "responseStatus": 500}))
	}
	e.postBatch(e.owner, events)

	type riskBody struct {
		Score      int    `json:"score"`
		Severity   string `json:"severity"`
		Actions    int    `json:"actions"`
		Dimensions []struct {
			Name  string `json:"name"`
			Score int    `json:"score"`
		} `json:"dimensions"`
		Factors []struct {
			Code    string   `json:"code"`
			Records []string `json:"records"`
		} `json:"factors"`
	}
	var rb riskBody
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/sessions/rs1/risk")
		if r.status != http.StatusOK {
			return false, r.String()
		}
		r.decode(t, &rb)
		return rb.Actions == 26 && rb.Score == 50, r.String()
	})
	// behavior: new tool (medium, 10) + error burst (high, 20); reliability:
	// 5 failures × 4 = 20 (the cap); no policy findings.
	if rb.Severity != "high" || len(rb.Factors) != 3 {
		t.Fatalf("risk %+v", rb)
	}

	// The anomalies are verdicts with source baseline.
	var anomalyID string
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/verdicts?agent=riskbot&source=baseline&limit=100")
		var page struct {
			Data []struct {
				ID          string   `json:"id"`
				Source      string   `json:"source"`
				ReasonCodes []string `json:"reasonCodes"`
			} `json:"data"`
		}
		r.decode(t, &page)
		for _, v := range page.Data {
			if v.Source != "baseline" {
				t.Fatalf("source=baseline listed a %s verdict", v.Source)
			}
			if v.ReasonCodes[0] == "BASELINE_NEW_TOOL" {
				anomalyID = v.ID
			}
		}
		return len(page.Data) == 2 && anomalyID != "", r.String()
	})
	// An anomaly's verdict is a sealed record like any decision: its
	// lineage anchors and the ledger audit finds no row the ledger lacks.
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/lineage/"+anomalyID+"/verify")
		var l ledger.Lineage
		if r.status == http.StatusOK {
			r.decode(t, &l)
		}
		return l.Anchored && l.LedgerIndex != nil, r.String()
	})
	var keyDoc struct {
		PublicKey string `json:"publicKey"`
	}
	e.get(e.owner, "/v1/ledger/key").decode(t, &keyDoc)
	e.waitAuditClean(keyDoc.PublicKey, "default")
	expect(t, e.post(e.owner, "/v1/verdicts/"+anomalyID+"/learn", nil), http.StatusOK, "learn an anomaly")
	r := e.get(e.owner, "/v1/agents/riskbot")
	if !contains(r.String(), "shell_exec") {
		t.Fatalf("learn did not declare the tool: %s", r)
	}

	// The session list carries the risk summary and the policy decision.
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/sessions?include=risk,policy&agentId=riskbot")
		var page struct {
			Data []struct {
				SessionID   string `json:"sessionId"`
				RiskSummary *struct {
					Score int `json:"score"`
				} `json:"riskSummary"`
				PolicyDecision *struct {
					Decision  string `json:"decision"`
					Decisions int    `json:"decisions"`
				} `json:"policyDecision"`
			} `json:"data"`
		}
		r.decode(t, &page)
		ok := len(page.Data) == 1 && page.Data[0].RiskSummary != nil && page.Data[0].RiskSummary.Score == 50 &&
			page.Data[0].PolicyDecision != nil && page.Data[0].PolicyDecision.Decisions == 26
		return ok, r.String()
	})
	expect(t, e.get(e.owner, "/v1/sessions?include=bogus"), http.StatusBadRequest, "bad include")

	// The score follows a new event with a new publisher (low, 5). Learn
	// gave the agent a declaration holding only shell_exec, so web_search
	// is now undeclared: policy warns (5) and the baseline flags it
	// (medium, 10); behavior stays at its cap of 40.
	e.postBatch(e.owner, []map[string]any{with(ev("riskbot", "rs1", baseTime.Add(40*time.Second)), "payload", map[string]any{"toolName": "web_search", "publisher": "acme"})})
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/sessions/rs1/risk")
		r.decode(t, &rb)
		return rb.Score == 65, r.String()
	})

	// Profiles (a static path, not /v1/agents/:id), then reset.
	profile := func() (obs int, body string) {
		r := e.get(e.owner, "/v1/agents/profiles")
		expect(t, r, http.StatusOK, "profiles")
		var page struct {
			Data []struct {
				AgentID      string `json:"agentId"`
				Observations int    `json:"observations"`
			} `json:"data"`
		}
		r.decode(t, &page)
		for _, p := range page.Data {
			if p.AgentID == "riskbot" {
				return p.Observations, r.String()
			}
		}
		return -1, r.String()
	}
	if n, body := profile(); n != 27 {
		t.Fatalf("profile observations %d: %s", n, body)
	}
	expect(t, e.post(e.owner, "/v1/agents/riskbot/reset", nil), http.StatusOK, "reset")
	if n, body := profile(); n != 0 {
		t.Fatalf("after reset, observations %d: %s", n, body)
	}

	// Metrics: today's actions and anomalies (decisions are timed when
	// they are made).
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/metrics/timeseries?interval=day&days=1")
		var ts struct {
			Data []struct {
				Actions   int `json:"actions"`
				Anomalies int `json:"anomalies"`
			} `json:"data"`
		}
		r.decode(t, &ts)
		return len(ts.Data) == 1 && ts.Data[0].Actions == 27 && ts.Data[0].Anomalies == 4, r.String()
	})

	// Tenant isolation and roles.
	other := e.key("other", auth.RoleOwner)
	viewer := e.key("default", auth.RoleViewer)
	for _, c := range []struct {
		method, path, key string
		want              int
	}{
		{http.MethodGet, "/v1/sessions/rs1/risk", other, http.StatusNotFound},
		{http.MethodPost, "/v1/agents/riskbot/reset", other, http.StatusNotFound},
		{http.MethodPost, "/v1/agents/riskbot/reset", viewer, http.StatusForbidden},
		{http.MethodGet, "/v1/sessions/rs1/risk", viewer, http.StatusOK},
		{http.MethodGet, "/v1/metrics/timeseries?interval=week", e.owner, http.StatusBadRequest},
	} {
		expect(t, e.do(req{method: c.method, path: c.path, key: c.key}), c.want, fmt.Sprintf("%s %s", c.method, c.path))
	}
	r = e.get(other, "/v1/agents/profiles")
	if contains(r.String(), "riskbot") {
		t.Fatalf("another tenant sees riskbot: %s", r)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
