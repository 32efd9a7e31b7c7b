package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/control"
)

// scenarioFile is the part of scenarios.json the harness reads: the
// policies to apply and what the person does in each scenario.
type scenarioFile struct {
	Format    string            `json:"format"`
	Policies  []json.RawMessage `json:"policies"`
	Scenarios []struct {
		ID     string `json:"id"`
		Person string `json:"person"`
	} `json:"scenarios"`
}

func loadScenarios(tb testing.TB, file string) *scenarioFile {
	tb.Helper()
	var sf scenarioFile
	raw, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(raw, &sf); err != nil {
		tb.Fatalf("scenarios.json: %v", err)
	}
	if sf.Format != "vigil.sdk-conformance.v1" || len(sf.Scenarios) == 0 {
		tb.Fatalf("scenarios.json: format %q with %d scenarios", sf.Format, len(sf.Scenarios))
	}
	return &sf
}

// runner is how one SDK plays the scenarios: a command run from dir
// (relative to the repository root), and what it needs installed.
type runner struct {
	name    string
	dir     string   // must exist, else the SDK is not there yet: skipped
	cmd     []string // relative to the repository root
	install []string // scripts/apt-install.sh COMMAND PACKAGE…, when set
}

func runners(root string) []runner {
	python := "python3"
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		// Debian's interpreter, the one python3-pytest installs into
		// (a python3 earlier on PATH may be another installation).
		python = "/usr/bin/python3"
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	return []runner{
		{name: "go", dir: "sdk/go", cmd: []string{goBin, "test", "-count=1", "-run", "^TestConformance$", "-v", "./vigil/"}},
		{name: "python", dir: "sdk/python/tests", cmd: []string{python, "-m", "pytest", "-q", "sdk/python/tests"}, install: []string{"pytest-3", "python3-pytest", "python3-pip", "python3-setuptools", "python3-wheel"}},
		{name: "typescript", dir: "sdk/typescript/test", cmd: []string{"node", "--test", "sdk/typescript/test"}, install: []string{"node", "nodejs"}},
	}
}

// TestSDK starts one stack and plays scenarios.json with every SDK whose
// runner exists, each in its own tenant behind its own fault proxy.
func TestSDK(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "sdk", "conformance", "scenarios.json")
	sf := loadScenarios(t, file)
	db := chtest.New(t)
	srv := stacktest.Start(t, stacktest.Options{DSN: db.DSN})
	for _, r := range runners(root) {
		t.Run(r.name, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(root, r.dir)); err != nil {
				t.Skipf("no %s runner (%s) yet", r.name, r.dir)
			}
			if r.install != nil {
				inst := exec.Command("bash", append([]string{filepath.Join(root, "scripts", "apt-install.sh")}, r.install...)...)
				if out, err := inst.CombinedOutput(); err != nil {
					t.Fatalf("install %v: %v\n%s", r.install, err, out)
				}
			}
			var resets atomic.Int64
			env := prepare(t, srv, sf, "sdk-"+r.name, &resets)
			env = append(env, "VIGIL_CONFORMANCE_SCENARIOS="+file)
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, r.cmd[0], r.cmd[1:]...)
			cmd.Dir = root
			if r.name == "go" {
				cmd.Dir = filepath.Join(root, r.dir)
			}
			cmd.Env = append(os.Environ(), env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err != nil {
				t.Fatalf("%s runner %v: %v\n%s", r.name, r.cmd, err, out.String())
			}
			// A runner that passes without playing every scenario (a
			// skip, a filter, a missing file) is no conformance.
			if got := resets.Load(); got != int64(len(sf.Scenarios)) {
				t.Fatalf("%s runner played %d scenarios (POST /reset), the file has %d:\n%s", r.name, got, len(sf.Scenarios), tail(out.String(), 60))
			}
			t.Logf("%s runner passed:\n%s", r.name, tail(out.String(), 60))
		})
	}
}

// prepare makes the tenant (setupTenant) and starts its fault proxy,
// control API and approver; it returns the runner's environment.
func prepare(t *testing.T, srv *stacktest.Server, sf *scenarioFile, tenant string, resets *atomic.Int64) []string {
	t.Helper()
	api, agentKey := setupTenant(t, srv, sf, tenant)
	proxy, err := NewFaultProxy(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &http.Server{Handler: proxy, ConnState: proxy.ConnState}
	go func() { _ = ps.Serve(proxy.Listener(ln)) }()
	t.Cleanup(func() { _ = ps.Close() })

	ctl := httptest.NewServer(controlHandler(proxy, api, resets))
	t.Cleanup(ctl.Close)

	run := fmt.Sprintf("%s-%d", strings.TrimPrefix(tenant, "sdk-"), time.Now().UnixNano())
	persons := map[string]string{}
	for _, s := range sf.Scenarios {
		persons[run+"."+s.ID] = s.Person
	}
	actx, acancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); approve(actx, t, api, persons) }()
	t.Cleanup(func() { acancel(); wg.Wait() })

	return []string{
		"VIGIL_URL=http://" + ln.Addr().String(),
		"VIGIL_API_KEY=" + agentKey,
		"VIGIL_AGENT_ID=" + agentID,
		"VIGIL_CONFORMANCE_CONTROL=" + ctl.URL,
		"VIGIL_CONFORMANCE_RUN=" + run,
	}
}

// agentID is the agent every tenant's runner acts as.
const agentID = "sdk-agent"

// setupTenant issues tenant's owner key (for the harness) and an agent
// key bound to agentID (for the runner), registers the agent and applies
// the scenario file's policies.
func setupTenant(tb testing.TB, srv *stacktest.Server, sf *scenarioFile, tenant string) (*apiClient, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, owner, err := srv.Store.IssueKey(ctx, control.KeySpec{Tenant: tenant, Role: auth.RoleOwner, Name: "conformance-owner", By: "sdk conformance"})
	if err != nil {
		tb.Fatal(err)
	}
	_, agentKey, err := srv.Store.IssueKey(ctx, control.KeySpec{Tenant: tenant, Role: auth.RoleAgent, Name: "conformance-agent", By: "sdk conformance", Agents: []string{agentID}})
	if err != nil {
		tb.Fatal(err)
	}
	api := &apiClient{base: srv.URL, key: owner}
	if st, body := api.do(ctx, http.MethodPost, "/v1/agents", map[string]any{"agentId": agentID, "name": "SDK conformance agent"}); st != http.StatusCreated {
		tb.Fatalf("register the agent: %d %s", st, body)
	}
	for _, p := range sf.Policies {
		if st, body := api.do(ctx, http.MethodPost, "/v1/policies", p); st != http.StatusCreated {
			tb.Fatalf("apply a policy: %d %s", st, body)
		}
	}
	return api, agentKey
}

// approve is the person at the Decision Desk: it decides each pending
// action of the run as its scenario's "person" says.
func approve(ctx context.Context, t *testing.T, api *apiClient, persons map[string]string) {
	decided := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		st, body := api.do(ctx, http.MethodGet, "/v1/guardian/pending-actions?status=pending&limit=100", nil)
		if st != http.StatusOK {
			if ctx.Err() == nil {
				t.Logf("approver: list pending actions: %d %s", st, body)
			}
			continue
		}
		var page struct {
			Data []struct {
				ID        string `json:"id"`
				SessionID string `json:"sessionId"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Logf("approver: %v", err)
			continue
		}
		for _, pa := range page.Data {
			person := persons[pa.SessionID]
			if decided[pa.ID] || (person != "approve" && person != "reject") {
				continue
			}
			st, body := api.do(ctx, http.MethodPost, "/v1/guardian/pending-actions/"+pa.ID+"/decide", map[string]any{"decision": person, "comment": "sdk conformance"})
			if st != http.StatusOK {
				t.Logf("approver: %s %s: %d %s", person, pa.ID, st, body)
				continue
			}
			decided[pa.ID] = true
		}
	}
}

// controlHandler serves the control API of README.md for one proxy.
// resets counts POST /reset: one per scenario a runner played.
func controlHandler(p *FaultProxy, api *apiClient, resets *atomic.Int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		resets.Add(1)
		p.Reset()
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		p.SetDown(true)
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, r *http.Request) {
		p.SetDown(false)
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var f Fault
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			writeJSON(w, 400, map[string]any{"error": err.Error()})
			return
		}
		if err := p.AddFault(f); err != nil {
			writeJSON(w, 400, map[string]any{"error": err.Error()})
			return
		}
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	mux.HandleFunc("GET /requests", func(w http.ResponseWriter, r *http.Request) {
		reqs, refused := p.Requests()
		if reqs == nil {
			reqs = []Request{}
		}
		writeJSON(w, 200, map[string]any{"requests": reqs, "refused": refused})
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		sid := r.URL.Query().Get("sessionId")
		if sid == "" {
			writeJSON(w, 400, map[string]any{"error": "sessionId is required"})
			return
		}
		st, body := api.do(r.Context(), http.MethodGet, "/v1/sessions/"+url.PathEscape(sid)+"?limit=1", nil)
		switch st {
		case http.StatusNotFound:
			writeJSON(w, 200, map[string]any{"count": 0})
		case http.StatusOK:
			var s struct {
				EventCount int `json:"eventCount"`
			}
			if err := json.Unmarshal(body, &s); err != nil {
				writeJSON(w, 502, map[string]any{"error": err.Error()})
				return
			}
			writeJSON(w, 200, map[string]any{"count": s.EventCount})
		default:
			writeJSON(w, 502, map[string]any{"error": fmt.Sprintf("vigil answered %d %s", st, body)})
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// apiClient calls Vigil directly (not through the proxy) with one key.
type apiClient struct {
	base, key string
}

func (a *apiClient) do(ctx context.Context, method, path string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, []byte(err.Error())
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
