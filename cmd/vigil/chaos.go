package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tcpproxy"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// chaosExperiments are the experiments of `vigil chaos`, in the order
// they run.
var chaosExperiments = []string{"kill-dev", "kill-service", "clickhouse", "webhook", "nats-node"}

// runChaos is `vigil chaos`: the fault suite. Every experiment starts
// Vigil as separate `vigil dev` processes on a fresh ClickHouse database,
// drives events and decisions at them (faultLoad), breaks something,
// then reads back everything that was acknowledged.
func runChaos(ctx context.Context, args []string, out io.Writer) error {
	_, err := chaosSuite(ctx, args, out)
	return err
}

// chaosSuite runs the experiments args select and prints their table;
// the error says which lost or doubled acknowledged writes. binArgs come
// before `dev` when the binary is started (a test binary's subprocess
// mode).
func chaosSuite(ctx context.Context, args []string, out io.Writer, binArgs ...string) ([]faultResult, error) {
	fs := config.New("vigil chaos", `Run the fault suite against this machine's ClickHouse: Vigil as separate
vigil dev processes under a load of events and decisions, while something
breaks. Experiments:
  kill-dev      kill -9 of the all-in-one, restarted on its data, --rounds times
  kill-service  kill -9 of an ingest and of a policy replica (own processes),
                alternately, --rounds times, beside an all-in-one
  clickhouse    ClickHouse cut off through a TCP proxy for --outage
  webhook       every decision is a block sent to a webhook channel whose
                target is down for --phase, then up again
  nats-node     a three-node NATS cluster with R3 streams loses the node
                that leads INGEST for --phase, then gets it back
Each prints acked / lost / duplicated writes (read back through the API and
the ledger), requests that failed, recovery (how long after the fault
requests kept failing) and catch-up (how long until every acknowledged write
was read back). Exits non-zero if anything acknowledged was lost or doubled.`)
	dsn := fs.String("clickhouse-dsn", "VIGIL_CLICKHOUSE_DSN", "clickhouse://127.0.0.1:9000/vigil", "ClickHouse server; each experiment uses its own database vigil_chaos_<id> on it, dropped afterwards")
	rounds := fs.Int("rounds", "", 3, "kills per kill experiment")
	phase := fs.Duration("phase", "", 10*time.Second, "load between faults (a kill round is half before, half after the kill)")
	outage := fs.Duration("outage", "", 60*time.Second, "how long ClickHouse is cut off")
	workers := fs.Int("workers", "", 6, "concurrent clients, each alternating an event and a decision")
	rate := fs.Int("rate", "", 200, "writes per second at most, over all clients (0: as fast as Vigil answers)")
	short := fs.BoolEnv("short", "", false, "one round, 3 s phases and outage (what CI runs)")
	only := fs.String("experiments", "", strings.Join(chaosExperiments, ","), "experiments to run, comma-separated")
	bin := fs.String("vigil", "", "", "the vigil binary to start (default: this one)")
	keep := fs.BoolEnv("keep", "", false, "keep the data directories and databases for inspection")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *short {
		*rounds, *phase, *outage = 1, 3*time.Second, 3*time.Second
	}
	if *rounds < 1 || *phase < time.Second || *outage < time.Second || *workers < 1 || *rate < 0 {
		return nil, errors.New("--rounds and --workers must be at least 1, --phase and --outage at least 1s, --rate at least 0")
	}
	e := &chaosEnv{binArgs: binArgs, rate: *rate, rounds: *rounds, phase: *phase, outage: *outage, workers: *workers, keep: *keep,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	if e.bin = *bin; e.bin == "" {
		if e.bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("--vigil: %w", err)
		}
	}
	if e.dsn, err = url.Parse(*dsn); err != nil {
		return nil, fmt.Errorf("--clickhouse-dsn: %w", err)
	}
	if e.dir, err = os.MkdirTemp("", "vigil-chaos-"); err != nil {
		return nil, err
	}
	if !*keep {
		defer os.RemoveAll(e.dir)
	}
	run := map[string]func(context.Context) faultResult{
		"kill-dev": e.killDev, "kill-service": e.killService, "clickhouse": e.clickhouseOutage, "webhook": e.webhook, "nats-node": e.natsNode,
	}
	var results []faultResult
	for _, name := range strings.Split(*only, ",") {
		f, ok := run[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("--experiments: unknown %q (want %s)", name, strings.Join(chaosExperiments, ", "))
		}
		fmt.Fprintf(out, "running %s…\n", name)
		r := f(ctx)
		r.Name = name
		results = append(results, r)
		if ctx.Err() != nil {
			break
		}
	}
	printChaos(out, results)
	var bad []string
	for _, r := range results {
		if r.Err != nil || r.Lost > 0 || r.Duplicated > 0 || r.LedgerMissing > 0 || r.LedgerDuplicated > 0 {
			bad = append(bad, r.Name)
		}
	}
	if len(bad) > 0 {
		return results, fmt.Errorf("chaos: %s lost, doubled or failed to check acknowledged writes", strings.Join(bad, ", "))
	}
	return results, nil
}

func printChaos(out io.Writer, rs []faultResult) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "experiment\tacked\tlost\tduplicated\tledger leaves\tledger lost/doubled\tfailed requests\trecovery\tcatch-up\terror")
	for _, r := range rs {
		errText := ""
		if r.Err != nil {
			errText = r.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d/%d\t%d\t%.1fs\t%.1fs\t%s\n", r.Name, r.Acked, r.Lost, r.Duplicated,
			r.LedgerLeaves, r.LedgerMissing, r.LedgerDuplicated, r.Failures, r.Recovery.Seconds(), r.CatchUp.Seconds(), errText)
	}
	_ = tw.Flush()
	for _, r := range rs {
		if r.FirstFailure != "" {
			fmt.Fprintf(out, "%s: first failed request: %s\n", r.Name, r.FirstFailure)
		}
	}
}

// chaosEnv is what every experiment shares.
type chaosEnv struct {
	bin, dir      string
	binArgs       []string
	dsn           *url.URL
	rounds        int
	phase, outage time.Duration
	workers, rate int
	keep          bool
	log           *slog.Logger
}

// database is a fresh database name on the ClickHouse server, its DSN,
// and the DSN with the host replaced (a proxy in front of it).
func (e *chaosEnv) database(host string) (name, dsn string) {
	name = "vigil_chaos_" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	u := *e.dsn
	u.Path = "/" + name
	if host != "" {
		u.Host = host
	}
	return name, u.String()
}

// clickhouse connects to database name directly (never through a proxy)
// and returns the connection and a function that drops the database.
func (e *chaosEnv) clickhouse(ctx context.Context, name string) (driver.Conn, func(), error) {
	u := *e.dsn
	u.Path = "/" + name
	ch, err := daemon.OpenClickHouse(ctx, u.String(), "", 20*time.Second, e.log)
	if err != nil {
		return nil, nil, err
	}
	return ch, func() {
		if !e.keep {
			_ = ch.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+name)
		}
		_ = ch.Close()
	}, nil
}

// chaosProc is one `vigil dev` process, restartable with the same
// arguments (and so the same data and ports).
type chaosProc struct {
	bin  string
	args []string
	// URL is its HTTP base URL.
	URL  string
	logf string
	cmd  *exec.Cmd
	done chan struct{}
}

// newProc prepares `vigil dev` on dataDir serving HTTP on a free port.
func (e *chaosEnv) newProc(name, dataDir string, args ...string) (*chaosProc, error) {
	return newDevProc(e.bin, e.binArgs, filepath.Join(e.dir, name+".log"), dataDir, args...)
}

// newDevProc prepares `bin binArgs... dev` on dataDir serving HTTP on a
// free port and logging to logf; args follow `dev`.
func newDevProc(bin string, binArgs []string, logf, dataDir string, args ...string) (*chaosProc, error) {
	port, err := chaosFreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return &chaosProc{
		bin: bin, URL: "http://" + addr, logf: logf,
		args: append(append(slices.Clone(binArgs), "dev", "--data-dir", dataDir, "--http-addr", addr, "--log-level", "warn"), args...),
	}, nil
}

func chaosFreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// logTail is the end of the process's log.
func (p *chaosProc) logTail() string {
	b, err := os.ReadFile(p.logf)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// Start starts the process and waits until it is ready (/readyz).
func (p *chaosProc) Start(ctx context.Context) error {
	f, err := os.OpenFile(p.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	deadline := time.Now().Add(90 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		if resp, err := client.Get(p.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			// The log goes with the error: a CI run keeps nothing else.
			return fmt.Errorf("vigil %s exited at start (log: %s):\n%s", strings.Join(p.args, " "), p.logf, p.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vigil dev at %s not ready after 90s (log: %s):\n%s", p.URL, p.logf, p.logTail())
		}
	}
}

// Kill is kill -9.
func (p *chaosProc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop is a SIGTERM, then a kill after 30 s.
func (p *chaosProc) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.Kill()
	}
}

var chaosKeyRE = regexp.MustCompile(`vgl_[0-9a-f]{16}_[A-Za-z0-9_-]+`)

// BootstrapKey is the owner key the first start printed.
func (p *chaosProc) BootstrapKey() (string, error) {
	b, err := os.ReadFile(p.logf)
	if err != nil {
		return "", err
	}
	if k := chaosKeyRE.Find(b); k != nil {
		return string(k), nil
	}
	return "", fmt.Errorf("no API key in %s", p.logf)
}

// natsPort is a free port for an embedded NATS server.
func natsListen() (string, int, error) {
	port, err := chaosFreePort()
	return fmt.Sprintf("127.0.0.1:%d", port), port, err
}

// loaded runs fn with a faultLoad against the given processes: it
// registers the agent, drives the load while fn breaks things, then stops
// the load and checks what was acknowledged, reading through read and the
// ledger (served by ledger) in database db.
func (e *chaosEnv) loaded(ctx context.Context, key string, ingestURLs, apiURLs []string, read, ledger string, ch driver.Conn, fn func(load *faultLoad) (time.Duration, error)) faultResult {
	load := newFaultLoad(key, "bot-chaos", ingestURLs, apiURLs)
	if e.rate > 0 {
		// A worker's round is two writes.
		load.pace = time.Duration(2*e.workers) * time.Second / time.Duration(e.rate)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := load.autoRegister(rctx)
	cancel()
	if err != nil {
		return faultResult{Err: err}
	}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); load.Run(lctx, e.workers) }()
	recovery, err := fn(load)
	stop()
	<-done
	if err != nil {
		return faultResult{Err: err, Acked: load.acked()}
	}
	r := load.Check(ctx, read, 5*time.Minute, load.ledgerCheck(ch, tenant.Default, ledger))
	r.Recovery = recovery
	return r
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// allInOne is an experiment's `vigil dev` with an embedded NATS server
// on a fresh database (reached at chHost when set: a proxy), started,
// with its owner key and a direct ClickHouse connection.
type allInOne struct {
	*chaosProc
	key     string
	ch      driver.Conn
	dsn     string
	natsURL string
	cleanup []func()
}

// Close stops the process and drops the database.
func (a *allInOne) Close() {
	for i := len(a.cleanup) - 1; i >= 0; i-- {
		a.cleanup[i]()
	}
}

func (e *chaosEnv) allInOne(ctx context.Context, name, chHost string, args ...string) (*allInOne, error) {
	a := &allInOne{}
	db, dsn := e.database(chHost)
	ch, drop, err := e.clickhouse(ctx, db)
	if err != nil {
		return nil, err
	}
	a.ch, a.dsn, a.cleanup = ch, dsn, []func(){drop}
	nl, nport, err := natsListen()
	if err == nil {
		a.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", nport)
		a.chaosProc, err = e.newProc(name, filepath.Join(e.dir, name), append([]string{"--clickhouse-dsn", dsn, "--nats-listen", nl}, args...)...)
	}
	if err == nil {
		err = a.Start(ctx)
		a.cleanup = append(a.cleanup, a.Stop)
	}
	if err == nil {
		a.key, err = a.BootstrapKey()
	}
	if err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// killRounds kills the processes with -9 in turn, each restarted at once,
// a phase apart, rounds times each; it returns the longest time requests
// kept failing after a kill.
func (e *chaosEnv) killRounds(ctx context.Context, load *faultLoad, procs ...*chaosProc) (time.Duration, error) {
	var worst time.Duration
	for r := range e.rounds * len(procs) {
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		p := procs[r%len(procs)]
		at := time.Now()
		p.Kill()
		if err := p.Start(ctx); err != nil {
			return 0, err
		}
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		worst = max(worst, load.RecoveredAfter(at))
	}
	return worst, nil
}

// killDev: kill -9 of the all-in-one, restarted on its data.
func (e *chaosEnv) killDev(ctx context.Context) faultResult {
	a, err := e.allInOne(ctx, "kill-dev", "")
	if err != nil {
		return faultResult{Err: err}
	}
	defer a.Close()
	return e.loaded(ctx, a.key, []string{a.URL}, []string{a.URL}, a.URL, a.URL, a.ch, func(load *faultLoad) (time.Duration, error) {
		return e.killRounds(ctx, load, a.chaosProc)
	})
}

// killService: an all-in-one plus an ingest replica and a policy
// replica in their own processes; the replicas are killed with -9 in
// turn and restarted. Events go to the ingest replica first (the
// all-in-one's ingest when it is down), decisions to the all-in-one's
// api, answered by either policy replica.
func (e *chaosEnv) killService(ctx context.Context) faultResult {
	a, err := e.allInOne(ctx, "kill-service", "")
	if err != nil {
		return faultResult{Err: err}
	}
	defer a.Close()
	var replicas []*chaosProc
	for _, svc := range []string{streams.ServiceIngest, streams.ServicePolicy} {
		p, err := e.newProc("kill-service-"+svc, filepath.Join(e.dir, "kill-service"), "--clickhouse-dsn", a.dsn, "--services", svc, "--nats-url", a.natsURL, "--instance-id", "chaos-"+svc)
		if err == nil {
			err = p.Start(ctx)
		}
		if err != nil {
			return faultResult{Err: err}
		}
		defer p.Stop()
		replicas = append(replicas, p)
	}
	return e.loaded(ctx, a.key, []string{replicas[0].URL, a.URL}, []string{a.URL}, a.URL, a.URL, a.ch, func(load *faultLoad) (time.Duration, error) {
		return e.killRounds(ctx, load, replicas...)
	})
}

// clickhouseOutage: the all-in-one reaches ClickHouse through a proxy
// that is cut for the outage. Writes go on (JetStream acknowledges
// them); the projections catch up when ClickHouse is back.
func (e *chaosEnv) clickhouseOutage(ctx context.Context) faultResult {
	proxy, err := tcpproxy.New(e.dsn.Host)
	if err != nil {
		return faultResult{Err: err}
	}
	defer proxy.Stop()
	a, err := e.allInOne(ctx, "clickhouse", proxy.Addr())
	if err != nil {
		return faultResult{Err: err}
	}
	defer a.Close()
	return e.loaded(ctx, a.key, []string{a.URL}, []string{a.URL}, a.URL, a.URL, a.ch, func(load *faultLoad) (time.Duration, error) {
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		proxy.Stop()
		if err := sleep(ctx, e.outage); err != nil {
			return 0, err
		}
		back := time.Now()
		if err := proxy.Start(); err != nil {
			return 0, err
		}
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		return load.RecoveredAfter(back), nil
	})
}

// webhook: every decision of the load is a block, signalled to a webhook
// channel whose target (behind a proxy in this process) is down for a
// phase. Each acknowledged block must reach the target once it is back:
// lost counts blocks never delivered (besides writes not read back), and
// duplicated blocks delivered under two webhook ids (a receiver dedupes
// retries of one id). Recovery is from the target's return until the
// last block was delivered.
func (e *chaosEnv) webhook(ctx context.Context) faultResult {
	hook := newHookTarget()
	srv := &http.Server{Handler: hook, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return faultResult{Err: err}
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	proxy, err := tcpproxy.New(ln.Addr().String())
	if err != nil {
		return faultResult{Err: err}
	}
	defer proxy.Stop()
	a, err := e.allInOne(ctx, "webhook", "", "--notifier-allow-private", "127.0.0.0/8")
	if err != nil {
		return faultResult{Err: err}
	}
	defer a.Close()
	p, key, ch := a.chaosProc, a.key, a.ch
	setup := newFaultLoad(key, "", nil, nil)
	for _, req := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/policies", map[string]any{"id": "chaos-block", "name": "chaos", "rules": []map[string]any{{"id": "no-wire", "when": `action.tool == "wire_transfer"`, "outcome": "block"}}}},
		{"/v1/notification-channels", map[string]any{"name": "chaos", "url": "http://" + proxy.Addr() + "/hook", "signals": []string{"verdict.block"}}},
	} {
		if st, b, err := setup.do(ctx, http.MethodPost, p.URL+req.path, req.body); err != nil || st != http.StatusCreated {
			return faultResult{Err: fmt.Errorf("POST %s: %d %s %v", req.path, st, b, err)}
		}
	}
	var decisions map[string]bool
	r := e.loaded(ctx, key, []string{p.URL}, []string{p.URL}, p.URL, p.URL, ch, func(load *faultLoad) (time.Duration, error) {
		load.tool = "wire_transfer"
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		proxy.Stop()
		if err := sleep(ctx, e.phase); err != nil {
			return 0, err
		}
		if err := proxy.Start(); err != nil {
			return 0, err
		}
		hook.back(time.Now())
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		decisions = load.ackedDecisions()
		return 0, nil
	})
	if r.Err != nil {
		return r
	}
	// Retries come 5 s, 15 s, 45 s … after a failed attempt.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		lost, dup, last := hook.missing(decisions)
		if lost == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			r.Lost, r.Duplicated = r.Lost+lost, r.Duplicated+dup
			r.Recovery = last
			return r
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// hookTarget records the decisions signalled to it, by webhook id.
type hookTarget struct {
	mu       sync.Mutex
	ids      map[string]map[string]bool // decision id → webhook ids
	at       map[string]time.Time       // decision id → first delivery
	backFrom time.Time
}

func newHookTarget() *hookTarget {
	return &hookTarget{ids: map[string]map[string]bool{}, at: map[string]time.Time{}}
}

func (h *hookTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var sig struct {
		Group string `json:"group"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&sig); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	if h.ids[sig.Group] == nil {
		h.ids[sig.Group] = map[string]bool{}
		h.at[sig.Group] = time.Now()
	}
	h.ids[sig.Group][r.Header.Get("webhook-id")] = true
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// back marks when the target came back.
func (h *hookTarget) back(t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.backFrom = t
}

// missing counts decisions not delivered and those delivered under more
// than one webhook id, and how long after the target came back the last
// one arrived.
func (h *hookTarget) missing(decisions map[string]bool) (lost, dup int, last time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range decisions {
		if len(h.ids[id]) == 0 {
			lost++
			continue
		}
		if len(h.ids[id]) > 1 {
			dup++
		}
		if d := h.at[id].Sub(h.backFrom); d > last {
			last = d
		}
	}
	return lost, dup, last
}

// natsNode: a three-node NATS cluster (in this process) with R3 streams,
// and Vigil's services split over two processes connected to different
// nodes; the node leading INGEST is stopped for a phase and started
// again.
func (e *chaosEnv) natsNode(ctx context.Context) faultResult {
	db, dsn := e.database("")
	ch, drop, err := e.clickhouse(ctx, db)
	if err != nil {
		return faultResult{Err: err}
	}
	defer drop()
	dir := filepath.Join(e.dir, "nats-node")
	creds := CredsDir(dir)
	users, err := natsauth.Init(creds)
	if err != nil {
		return faultResult{Err: err}
	}
	nkeys, err := natsauth.ServerUsers(users)
	if err != nil {
		return faultResult{Err: err}
	}
	cluster, err := natsx.StartCluster(filepath.Join(dir, "cluster"), 3, nkeys)
	if cluster != nil {
		defer cluster.Shutdown()
	}
	if err != nil {
		return faultResult{Err: err}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = cluster.WaitReady(wctx)
	cancel()
	if err != nil {
		return faultResult{Err: err}
	}
	// Everything but the ingest replica in one process on node 1; a
	// second ingest in another on node 2.
	all := strings.Join([]string{streams.ServiceAPI, streams.ServiceIngest, streams.ServicePolicy, streams.ServiceGuardian,
		streams.ServiceRisk, streams.ServiceLedger, streams.ServiceNotifier}, ",")
	common := []string{"--clickhouse-dsn", dsn, "--stream-replicas", "3"}
	main, err := e.newProc("nats-node-all", dir, append(common, "--services", all, "--nats-url", cluster.URL(0), "--instance-id", "chaos-all")...)
	if err != nil {
		return faultResult{Err: err}
	}
	if err := main.Start(ctx); err != nil {
		return faultResult{Err: err}
	}
	defer main.Stop()
	key, err := main.BootstrapKey()
	if err != nil {
		return faultResult{Err: err}
	}
	ing, err := e.newProc("nats-node-ingest", dir, append(common, "--services", streams.ServiceIngest, "--nats-url", cluster.URL(1), "--instance-id", "chaos-ingest")...)
	if err != nil {
		return faultResult{Err: err}
	}
	if err := ing.Start(ctx); err != nil {
		return faultResult{Err: err}
	}
	defer ing.Stop()
	nc, js, err := natsx.Connect(cluster.URL(2), "vigil-chaos", e.log, natsauthOptions(creds)...)
	if err != nil {
		return faultResult{Err: err}
	}
	defer nc.Close()
	return e.loaded(ctx, key, []string{ing.URL, main.URL}, []string{main.URL}, main.URL, main.URL, ch, func(load *faultLoad) (time.Duration, error) {
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		lost, err := streamLeaderNode(ctx, js, cluster, streams.Ingest)
		if err != nil {
			return 0, err
		}
		cluster.Stop(lost)
		if err := sleep(ctx, e.phase); err != nil {
			return 0, err
		}
		back := time.Now()
		if err := cluster.Start(lost); err != nil {
			return 0, err
		}
		if err := sleep(ctx, e.phase/2); err != nil {
			return 0, err
		}
		return load.RecoveredAfter(back), nil
	})
}

// natsauthOptions are the admin's client options for the seeds in creds.
func natsauthOptions(creds string) []nats.Option {
	opts, err := natsauth.ClientOptions(natsauth.FileCredential(natsauth.SeedFile(creds, natsauth.Admin)), natsauth.TLSFiles{})
	if err != nil {
		return nil // the connect fails with the server's refusal
	}
	return opts
}

// streamLeaderNode is the index of the cluster node leading stream.
func streamLeaderNode(ctx context.Context, js jetstream.JetStream, c *natsx.Cluster, stream string) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1, err
	}
	if i := c.Node(info.Cluster.Leader); i >= 0 {
		return i, nil
	}
	return -1, fmt.Errorf("stream %s: leader %q is no node of the cluster", stream, info.Cluster.Leader)
}

// cpuTicks is the process's CPU time so far in clock ticks; false for
// none (a nil process, one not started or gone).
func (p *chaosProc) cpuTicks() (uint64, bool) {
	if p == nil || p.cmd == nil || p.cmd.Process == nil {
		return 0, false
	}
	return procCPUTicks(p.cmd.Process.Pid)
}
