package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack"
	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/gateway"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/routes"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// serviceBinaries are the per-service binaries (services/*/cmd/*), the
// way compose runs them.
var serviceBinaries = []string{"api", "ingest", "policy", "guardian", "risk", "ledger", "notifier"}

// separateServices is Vigil as compose runs it: each service its own
// process (the binaries `make build` builds), sharing one NATS server (with
// each service's own credential) and one ClickHouse database.
type separateServices struct {
	urls  map[string]string // service → base URL
	owner string            // an owner key of tenant default
}

// startSeparateServices builds the service binaries and runs each as a
// process until the test ends (SIGTERM, as an orchestrator stops them).
func startSeparateServices(t *testing.T) *separateServices {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	for _, s := range serviceBinaries {
		args = append(args, "github.com/vigilhq/vigil/services/"+s+"/cmd/"+s)
	}
	if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	srv, local, err := stack.StartNATS(stack.Config{DataDir: filepath.Join(dir, "data"), NATSHost: "127.0.0.1", NATSPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	db := chtest.New(t)
	secret := func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	env := append(os.Environ(),
		"VIGIL_NATS_URL="+srv.ClientURL(), "VIGIL_CLICKHOUSE_DSN="+db.DSN, "VIGIL_CLICKHOUSE_WAIT=30s",
		"VIGIL_SIGNING_KEY="+secret(), "VIGIL_REDACTION_KEY="+secret(), "VIGIL_JUDGE_SEAL_KEY="+secret(),
		"VIGIL_NOTIFIER_KEY="+secret(), "VIGIL_RISK_PARTITIONS=2", "VIGIL_LOG_LEVEL=warn")
	ss := &separateServices{urls: map[string]string{}}
	for _, s := range serviceBinaries {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		logFile := filepath.Join(dir, s+".log")
		out, err := os.Create(logFile)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(dir, s))
		cmd.Env = append(env, "VIGIL_HTTP_ADDR="+addr, "VIGIL_NATS_CREDS="+natsauth.SeedFile(stack.CredsDir(filepath.Join(dir, "data")), s))
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			out.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logFile)
				t.Logf("%s log:\n%s", s, tail(b, 3000))
			}
		})
		ss.urls[s] = "http://" + addr
	}
	for _, s := range serviceBinaries {
		eventually(t, 2*time.Minute, func() (bool, string) {
			res, err := http.Get(ss.urls[s] + "/readyz")
			if err != nil {
				return false, s + ": " + err.Error()
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK, fmt.Sprintf("%s /readyz: %d", s, res.StatusCode)
		})
	}
	_, js, err := local.Connect(natsauth.Admin, "gateway-test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ss.owner, err = control.NewStore(js).CreateKey(ctx, tenant.Default, auth.RoleOwner, "gateway-test", "gateway test"); err != nil {
		t.Fatal(err)
	}
	return ss
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// serveGateway runs the front door over the separate services.
func serveGateway(t *testing.T, ss *separateServices) string {
	t.Helper()
	ups := map[string]*url.URL{}
	for s, u := range ss.urls {
		ups[s], _ = url.Parse(u)
	}
	e, err := gateway.New(gateway.Config{Table: routes.Default(), Upstreams: ups, Log: testLogger(t), Reg: daemon.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestGatewayOverSeparateServices runs every service as its own process
// behind `vigil gateway` and sends every route of the route table through
// the gateway: none may meet a 404 "no such route", a 405 or a
// misdirection, and each service's own request metrics must show every
// route the table gives it — so each request reached the right process.
// On a service's own port, a route of another service is refused with a
// 404 naming it (GET /v1/agents/profiles used to fall into the api's
// /v1/agents/:id). An event posted through the one base URL is then read
// back from the api, the risk service and the ledger through it.
func TestGatewayOverSeparateServices(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs every service binary")
	}
	ss := startSeparateServices(t)
	base := serveGateway(t, ss)
	gw := &testStack{t: t, base: base}
	gw.httpc = stacktest.ContractClient(t) // every answer through the gateway checked against the OpenAPI document
	owner := ss.owner
	expect(t, gw.post(owner, "/v1/agents", map[string]any{"agentId": "probe"}), 201, "register the probe agent")

	direct := send
	r, err := direct(ss.urls["api"], req{method: http.MethodGet, path: "/v1/agents/profiles", key: owner})
	if err != nil {
		t.Fatal(err)
	}
	checkEnvelope(t, r, http.StatusNotFound, "NOT_FOUND", "not_found", nil)
	if !strings.Contains(string(r.body), "served by the risk service") {
		t.Errorf("GET /v1/agents/profiles on the api's port: %s, want it to name the risk service", r.body)
	}
	if r := gw.get(owner, "/v1/agents/profiles"); r.status != http.StatusOK {
		t.Errorf("GET /v1/agents/profiles through the gateway: %s", r)
	}

	param := regexp.MustCompile(`:[A-Za-z]+`)
	for _, rt := range routes.Default() {
		path := param.ReplaceAllString(rt.Path, "probe")
		var body any
		if rt.Method == http.MethodPost || rt.Method == http.MethodPatch || rt.Method == http.MethodPut {
			body = map[string]any{}
		}
		r := gw.do(req{method: rt.Method, path: path, key: owner, body: body})
		switch {
		case r.status == http.StatusMethodNotAllowed,
			r.status == http.StatusNotFound && (strings.Contains(string(r.body), `"message":"Not Found"`) || strings.Contains(string(r.body), "is served by")),
			r.status == http.StatusServiceUnavailable && strings.Contains(string(r.body), "is unreachable"):
			t.Errorf("%s through the gateway: %s", rt, r)
		}
	}
	for _, s := range routes.Default().Services() {
		res, err := http.Get(ss.urls[s] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(res.Body)
		res.Body.Close()
		for _, rt := range routes.Default().Of(s) {
			if want := fmt.Sprintf(`vigil_http_requests_total{method=%q,route=%q,`, rt.Method, rt.Path); !strings.Contains(string(metrics), want) {
				t.Errorf("%s did not serve %s", s, rt)
			}
		}
	}

	expect(t, gw.post(owner, "/v1/events", ev("probe", "gw-session", time.Now())), 202, "event through the gateway")
	gw.waitSession(owner, "gw-session", 1)
	for _, path := range []string{"/v1/sessions/gw-session/risk", "/v1/sessions/gw-session/evidence", "/v1/agents/probe"} {
		eventually(t, catchUp, func() (bool, string) {
			r := gw.get(owner, path)
			return r.status == http.StatusOK, r.String()
		})
	}
}
