package deploy

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// load reads compose.yaml the way `docker compose` does (schema
// validation, interpolation from env, path resolution, default profiles).
func load(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	return loadFiles(t, env, "compose.yaml")
}

// composeVariants are the ways to run compose: compose.yaml alone, and
// with each file meant to be added to it (`-f compose.yaml -f …`). The
// checks every deployment must pass run on each.
var composeVariants = [][]string{
	{"compose.yaml"},
	{"compose.yaml", "compose.clickhouse-cluster.yaml"},
}

// loadFiles reads compose files merged in order, as `docker compose -f
// a -f b` does.
func loadFiles(t *testing.T, env map[string]string, files ...string) *types.Project {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var cfs []types.ConfigFile
	for _, f := range files {
		cfs = append(cfs, types.ConfigFile{Filename: f})
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: cfs,
		Environment: env,
	}, func(o *loader.Options) {
		o.SkipInterpolation = false
		o.SetProjectName("vigil", true)
	})
	if err != nil {
		t.Fatalf("load %v: %v", files, err)
	}
	return p
}

// eachVariant runs check on every compose variant, as a subtest named by
// its files.
func eachVariant(t *testing.T, check func(t *testing.T, p *types.Project)) {
	for _, files := range composeVariants {
		t.Run(strings.Join(files, "+"), func(t *testing.T) { check(t, loadFiles(t, nil, files...)) })
	}
}

// service finds a service, enabled or gated by a profile.
func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.AllServices()[name]
	if !ok {
		t.Fatalf("no service %q", name)
	}
	return s
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

var (
	// Services that run until stopped; each needs a healthcheck.
	longRunning = []string{"nats", "clickhouse", "gateway", "ingest", "api", "policy", "guardian", "risk", "ledger", "notifier"}
	// Services built from this repository that serve Vigil's HTTP API.
	vigilServers = []string{"ingest", "api", "policy", "guardian", "risk", "ledger", "notifier"}
)

type serviceCase struct {
	name       string
	enabled    bool // without --profile
	dockerfile string
	image      string // prefix
	ports      []string
	restart    string
}

func TestServices(t *testing.T) {
	p := load(t, nil)
	tests := []serviceCase{
		{name: "nats", enabled: true, image: "nats:", ports: []string{"127.0.0.1:8222:8222"}, restart: "unless-stopped"},
		{name: "clickhouse", enabled: true, image: "clickhouse/clickhouse-server:", restart: "unless-stopped"},
		{name: "ingest", enabled: true, dockerfile: "deploy/ingest.Dockerfile", restart: "unless-stopped"},
		{name: "api", enabled: true, dockerfile: "deploy/api.Dockerfile", restart: "unless-stopped"},
		{name: "policy", enabled: true, dockerfile: "deploy/policy.Dockerfile", restart: "unless-stopped"},
		{name: "guardian", enabled: true, dockerfile: "deploy/guardian.Dockerfile", restart: "unless-stopped"},
		{name: "risk", enabled: true, dockerfile: "deploy/risk.Dockerfile", restart: "unless-stopped"},
		{name: "ledger", enabled: true, dockerfile: "deploy/ledger.Dockerfile", restart: "unless-stopped"},
		{name: "notifier", enabled: true, dockerfile: "deploy/notifier.Dockerfile", restart: "unless-stopped"},
		{name: "gateway", enabled: true, dockerfile: "deploy/vigil.Dockerfile", ports: []string{"127.0.0.1:8080:8080"}, restart: "unless-stopped"},
		{name: "keys", enabled: false, dockerfile: "deploy/vigil.Dockerfile", restart: "no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := service(t, p, tt.name)
			if _, enabled := p.Services[tt.name]; enabled != tt.enabled {
				t.Errorf("enabled without a profile = %v, want %v", enabled, tt.enabled)
			}
			if tt.dockerfile != "" {
				if s.Build == nil {
					t.Fatal("no build")
				}
				if s.Build.Dockerfile != tt.dockerfile {
					t.Errorf("dockerfile %q, want %q", s.Build.Dockerfile, tt.dockerfile)
				}
				if s.Build.Context != repoRoot(t) {
					t.Errorf("build context %q, want the repository root", s.Build.Context)
				}
			}
			if tt.image != "" && !strings.HasPrefix(s.Image, tt.image) {
				t.Errorf("image %q, want %s…", s.Image, tt.image)
			}
			var ports []string
			for _, pc := range s.Ports {
				ports = append(ports, pc.HostIP+":"+pc.Published+":"+strconv.Itoa(int(pc.Target)))
			}
			if !slices.Equal(ports, tt.ports) {
				t.Errorf("ports %v, want %v", ports, tt.ports)
			}
			if s.Restart != tt.restart {
				t.Errorf("restart %q, want %q", s.Restart, tt.restart)
			}
		})
	}
	for name := range p.AllServices() {
		if !slices.ContainsFunc(tests, func(tt serviceCase) bool { return tt.name == name }) {
			t.Errorf("service %q is not covered by this test", name)
		}
	}
}

func TestDependsOnHealthy(t *testing.T) {
	p := load(t, nil)
	tests := []struct {
		service string
		deps    []string
	}{
		{"ingest", []string{"nats", "clickhouse"}},
		{"api", []string{"nats", "clickhouse"}},
		{"policy", []string{"nats", "clickhouse"}},
		{"guardian", []string{"nats", "clickhouse"}},
		{"keys", []string{"nats"}},
	}
	for _, tt := range tests {
		s := service(t, p, tt.service)
		for _, dep := range tt.deps {
			d, ok := s.DependsOn[dep]
			if !ok {
				t.Errorf("%s does not depend on %s", tt.service, dep)
				continue
			}
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s depends on %s with %q, want %q", tt.service, dep, d.Condition, types.ServiceConditionHealthy)
			}
		}
	}
	// service_healthy on a service without a healthcheck never starts.
	eachVariant(t, func(t *testing.T, p *types.Project) {
		for name, s := range p.AllServices() {
			for dep, d := range s.DependsOn {
				if d.Condition != types.ServiceConditionHealthy {
					continue
				}
				if hc := service(t, p, dep).HealthCheck; hc == nil || hc.Disable {
					t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			}
		}
	})
}

// TestHealthchecks: every service that runs until stopped (all but the
// one-shot tools of a profile) has a healthcheck, in every variant.
func TestHealthchecks(t *testing.T) {
	eachVariant(t, func(t *testing.T, p *types.Project) {
		for name, s := range p.AllServices() {
			if len(s.Profiles) > 0 && s.Restart == "no" {
				continue
			}
			t.Run(name, func(t *testing.T) {
				hc := s.HealthCheck
				if hc == nil || hc.Disable || len(hc.Test) < 2 {
					t.Fatalf("no healthcheck: %+v", hc)
				}
				if hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL" {
					t.Errorf("healthcheck test %v, want CMD or CMD-SHELL", hc.Test)
				}
				if hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil {
					t.Errorf("healthcheck without interval, timeout or retries: %+v", hc)
				}
			})
		}
	})
	p := load(t, nil)
	for _, name := range longRunning {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("%s does not run by default", name)
		}
	}
}

// TestHealthcheckInImage: a healthcheck of a service built here must run a
// program its image has; the distroless runtime has no shell or wget, and
// must GET /healthz on the port the service listens on.
func TestHealthcheckInImage(t *testing.T) {
	p := load(t, nil)
	for _, name := range vigilServers {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			hc := s.HealthCheck
			if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" {
				t.Fatalf("healthcheck %v: want [CMD /program URL]", hc)
			}
			d := parseDockerfile(t, filepath.Join(s.Build.Context, filepath.FromSlash(s.Build.Dockerfile)))
			if files := d.final().files(d); !slices.Contains(files, hc.Test[1]) {
				t.Errorf("healthcheck runs %s, which %s does not copy into its final stage (it copies %v)", hc.Test[1], s.Build.Dockerfile, files)
			}
			u, err := url.Parse(hc.Test[len(hc.Test)-1])
			if err != nil {
				t.Fatal(err)
			}
			_, port, err := net.SplitHostPort(env(s, "VIGIL_HTTP_ADDR"))
			if err != nil {
				t.Fatalf("VIGIL_HTTP_ADDR: %v", err)
			}
			if u.Hostname() != "127.0.0.1" || u.Port() != port || u.Path != "/healthz" {
				t.Errorf("healthcheck URL %s, want http://127.0.0.1:%s/healthz", u, port)
			}
			for _, pc := range s.Ports {
				if strconv.Itoa(int(pc.Target)) != port {
					t.Errorf("publishes container port %d, but the service listens on %s", pc.Target, port)
				}
			}
		})
	}
}

func TestDockerfilesReferenced(t *testing.T) {
	p := load(t, nil)
	for name, s := range p.AllServices() {
		if s.Build == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(s.Build.Context, filepath.FromSlash(s.Build.Dockerfile))
			if _, err := os.Stat(file); err != nil {
				t.Fatalf("dockerfile: %v", err)
			}
			// The packages it builds exist (TestDockerfiles checks them in
			// full); name them here so a failure says which service breaks.
			for _, b := range parseDockerfile(t, file).builds {
				dir := filepath.Join(s.Build.Context, filepath.FromSlash(b.dir), filepath.FromSlash(b.pkg))
				if _, err := os.Stat(dir); err != nil {
					t.Errorf("%s builds %s: %v", s.Build.Dockerfile, path.Join(b.dir, b.pkg), err)
				}
			}
		})
	}
}

func TestPortsBindLoopback(t *testing.T) {
	eachVariant(t, func(t *testing.T, p *types.Project) {
		for name, s := range p.AllServices() {
			for _, pc := range s.Ports {
				if pc.HostIP != "127.0.0.1" {
					t.Errorf("%s publishes %s:%d on %q, want 127.0.0.1", name, pc.Published, pc.Target, pc.HostIP)
				}
			}
		}
	})
}

func TestServiceEnv(t *testing.T) {
	p := load(t, nil)
	root := repoRoot(t)
	tests := []struct {
		service, key       string
		scheme, host, port string
	}{
		{"ingest", "VIGIL_NATS_URL", "nats", "nats", "4222"},
		{"ingest", "VIGIL_CLICKHOUSE_DSN", "clickhouse", "clickhouse", "9000"},
		{"api", "VIGIL_NATS_URL", "nats", "nats", "4222"},
		{"api", "VIGIL_CLICKHOUSE_DSN", "clickhouse", "clickhouse", "9000"},
		{"policy", "VIGIL_NATS_URL", "nats", "nats", "4222"},
		{"policy", "VIGIL_CLICKHOUSE_DSN", "clickhouse", "clickhouse", "9000"},
		{"guardian", "VIGIL_NATS_URL", "nats", "nats", "4222"},
		{"keys", "VIGIL_NATS_URL", "nats", "nats", "4222"},
	}
	for _, tt := range tests {
		t.Run(tt.service+"/"+tt.key, func(t *testing.T) {
			s := service(t, p, tt.service)
			u, err := url.Parse(env(s, tt.key))
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != tt.scheme || u.Hostname() != tt.host || u.Port() != tt.port {
				t.Errorf("%s=%s, want %s://%s:%s", tt.key, u, tt.scheme, tt.host, tt.port)
			}
			if _, ok := p.AllServices()[u.Hostname()]; !ok {
				t.Errorf("%s points at %q, which is no service", tt.key, u.Hostname())
			}
		})
	}
	for _, name := range vigilServers {
		s := service(t, p, name)
		if got := env(s, "VIGIL_LOG_FORMAT"); got != "json" {
			t.Errorf("%s: VIGIL_LOG_FORMAT=%q, want json", name, got)
		}
		if got := env(s, "VIGIL_CLICKHOUSE_DSN"); !strings.HasSuffix(got, "/vigil") {
			t.Errorf("%s: VIGIL_CLICKHOUSE_DSN=%q, want the vigil database", name, got)
		}
	}
	// Every VIGIL_* variable given to a service built here is one that its
	// code reads: a renamed setting would otherwise be ignored in silence.
	eachVariant(t, func(t *testing.T, p *types.Project) {
		for name, s := range p.AllServices() {
			if s.Build == nil {
				continue
			}
			d := parseDockerfile(t, filepath.Join(s.Build.Context, filepath.FromSlash(s.Build.Dockerfile)))
			dirs := []string{filepath.Join(root, "pkg")}
			for _, b := range d.builds {
				if b.dir != "deploy" {
					dirs = append(dirs, filepath.Join(root, filepath.FromSlash(b.dir)))
				}
			}
			for key := range s.Environment {
				if strings.HasPrefix(key, "VIGIL_") && !readsEnv(t, key, dirs) {
					t.Errorf("%s: %s is read by no Go code in %v", name, key, dirs)
				}
			}
		}
	})
}

// readsEnv reports whether the string literal "key" is in a non-test Go
// file under one of dirs.
func readsEnv(t *testing.T, key string, dirs []string) bool {
	t.Helper()
	lit := []byte(strconv.Quote(key))
	for _, dir := range dirs {
		found := false
		err := filepath.WalkDir(dir, func(file string, d os.DirEntry, err error) error {
			if err != nil || found {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(file, ".go") || strings.HasSuffix(file, "_test.go") {
				return nil
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			found = strings.Contains(string(data), string(lit))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if found {
			return true
		}
	}
	return false
}

func TestInterpolation(t *testing.T) {
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "info"},
		{map[string]string{"VIGIL_LOG_LEVEL": "debug"}, "debug"},
	} {
		p := load(t, tt.env)
		for _, name := range vigilServers {
			if got := env(service(t, p, name), "VIGIL_LOG_LEVEL"); got != tt.want {
				t.Errorf("env %v: %s VIGIL_LOG_LEVEL=%q, want %q", tt.env, name, got, tt.want)
			}
		}
	}
}

func TestImages(t *testing.T) {
	eachVariant(t, func(t *testing.T, p *types.Project) {
		for name, s := range p.AllServices() {
			if s.Image != "" && !pinned(s.Image) {
				t.Errorf("%s: image %q: pin a tag", name, s.Image)
			}
		}
	})
	p := load(t, nil)
	// Not the long-unsupported 18.x line (the old yandex/ images): a
	// current YY.M release of clickhouse/clickhouse-server.
	ch := service(t, p, "clickhouse").Image
	_, tag, _ := strings.Cut(ch, ":")
	major, err := strconv.Atoi(strings.SplitN(tag, ".", 2)[0])
	if err != nil || major < 24 {
		t.Errorf("clickhouse image %q: want a current YY.M release (24.x or newer), not %q", ch, tag)
	}
	nats := service(t, p, "nats")
	if !slices.Contains(nats.Command, "-js") || !slices.Contains(nats.Command, "-sd") {
		t.Errorf("nats command %v: want JetStream (-js) with a store dir (-sd)", nats.Command)
	}
}

func TestVolumes(t *testing.T) {
	p := load(t, nil)
	mounts := map[string]string{"nats": "/data", "clickhouse": "/var/lib/clickhouse"}
	for name, target := range mounts {
		s := service(t, p, name)
		i := slices.IndexFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == target })
		if i < 0 {
			t.Errorf("%s: nothing mounted on %s", name, target)
			continue
		}
		v := s.Volumes[i]
		if v.Type != types.VolumeTypeVolume {
			t.Errorf("%s: %s is a %s, want a named volume", name, target, v.Type)
		}
		if _, ok := p.Volumes[v.Source]; !ok {
			t.Errorf("%s: volume %q is not declared under top-level volumes", name, v.Source)
		}
	}
	nats := service(t, p, "nats")
	if i := slices.Index(nats.Command, "-sd"); i < 0 || i+1 >= len(nats.Command) || nats.Command[i+1] != mounts["nats"] {
		t.Errorf("nats command %v: the store dir must be the volume at %s", nats.Command, mounts["nats"])
	}
}

func TestKeysTool(t *testing.T) {
	p := load(t, nil)
	s := service(t, p, "keys")
	if !slices.Equal(s.Profiles, []string{"tools"}) {
		t.Errorf("profiles %v, want [tools]", s.Profiles)
	}
	want := []string{"keys", "create", "--tenant", "default", "--role", "owner"}
	if !slices.Equal([]string(s.Command), want) {
		t.Errorf("command %v, want %v", s.Command, want)
	}
	if len(s.Ports) > 0 {
		t.Errorf("ports %v: a one-shot tool publishes none", s.Ports)
	}
}

// pinned reports whether an image reference names a tag other than latest
// (or a digest).
func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return false
	}
	return image[i+1:] != "" && image[i+1:] != "latest"
}

// TestNATSAuth checks that NATS runs with the authorization `vigil nats
// init` writes and that every service built here connects with its own
// credential (the keys tool with the admin one).
func TestNATSAuth(t *testing.T) {
	p := load(t, nil)
	nats := service(t, p, "nats")
	i := slices.Index(nats.Command, "-c")
	if i < 0 || i+1 >= len(nats.Command) {
		t.Fatalf("nats command %v: want -c <config>", nats.Command)
	}
	conf := nats.Command[i+1]
	j := slices.IndexFunc(nats.Configs, func(c types.ServiceConfigObjConfig) bool { return c.Target == conf })
	if j < 0 {
		t.Fatalf("nats: no config mounted at %s", conf)
	}
	src, ok := p.Configs[nats.Configs[j].Source]
	if !ok || src.File != filepath.Join(repoRoot(t), "deploy", "nats", "nats.conf") {
		t.Errorf("nats config %q is %+v, want the file deploy/nats/nats.conf", nats.Configs[j].Source, src)
	}
	users := map[string]string{"keys": "admin"}
	for _, name := range vigilServers {
		users[name] = name
	}
	for name, user := range users {
		s := service(t, p, name)
		want := filepath.Join(repoRoot(t), "deploy", "nats", user+".env")
		if len(s.EnvFiles) != 1 || s.EnvFiles[0].Path != want {
			t.Errorf("%s: env files %+v, want %s", name, s.EnvFiles, want)
		}
		if env(s, "VIGIL_NATS_NKEY") != "" {
			t.Errorf("%s: a NATS seed written into compose.yaml", name)
		}
	}
}

// TestGatewayIsTheFrontDoor: the gateway is the only published Vigil
// port, and it has an upstream for every service of the route table
// (pkg/routes/table.json), each a compose service on the port it listens
// on, which the gateway waits for.
func TestGatewayIsTheFrontDoor(t *testing.T) {
	p := load(t, nil)
	for name, s := range p.AllServices() {
		if len(s.Ports) > 0 && name != "gateway" && name != "nats" {
			t.Errorf("%s publishes %v: only the gateway (and NATS monitoring) may", name, s.Ports)
		}
	}
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "pkg", "routes", "table.json"))
	if err != nil {
		t.Fatal(err)
	}
	var table []struct{ Service string }
	if err := json.Unmarshal(b, &table); err != nil {
		t.Fatal(err)
	}
	gw := service(t, p, "gateway")
	if !slices.Equal([]string(gw.Command), []string{"gateway"}) {
		t.Errorf("gateway command %v, want [gateway]", gw.Command)
	}
	want := map[string]bool{}
	for _, r := range table {
		want[r.Service] = true
	}
	for svc := range want {
		key := "VIGIL_" + strings.ToUpper(svc) + "_URL"
		u, err := url.Parse(env(gw, key))
		if err != nil || u.Scheme != "http" {
			t.Errorf("gateway %s=%q: want http://%s:<port>", key, env(gw, key), svc)
			continue
		}
		s := service(t, p, u.Hostname())
		if _, port, _ := net.SplitHostPort(env(s, "VIGIL_HTTP_ADDR")); u.Port() != port {
			t.Errorf("gateway %s=%s, but %s listens on %q", key, u, u.Hostname(), env(s, "VIGIL_HTTP_ADDR"))
		}
		if d, ok := gw.DependsOn[u.Hostname()]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("gateway does not wait for %s to be healthy", u.Hostname())
		}
	}
	for key := range gw.Environment {
		if svc, ok := strings.CutSuffix(strings.TrimPrefix(key, "VIGIL_"), "_URL"); ok && !want[strings.ToLower(svc)] {
			t.Errorf("gateway %s: %s serves no route of the table", key, strings.ToLower(svc))
		}
	}
}

// TestDecisionPathWeighsMore: under CPU contention the kernel gives the
// decision path (api, policy), whose callers wait on every request, more
// of the machine than the services that consume what is already recorded
// (`vigil bench decide --apart … --apart-nice N` measures why).
func TestDecisionPathWeighsMore(t *testing.T) {
	eachVariant(t, func(t *testing.T, p *types.Project) {
		weight := func(name string) int64 {
			s, ok := p.Services[name]
			if !ok {
				t.Fatalf("no service %s", name)
			}
			if s.CPUShares == 0 {
				return 1024 // Docker's default weight
			}
			return s.CPUShares
		}
		for _, front := range []string{"api", "policy"} {
			for _, back := range []string{"guardian", "risk", "ledger", "notifier"} {
				if w, b := weight(front), weight(back); b >= w || p.Services[back].CPUShares == 0 {
					t.Errorf("cpu_shares: %s %d, %s %d (set): want %s below %s", front, w, back, b, back, front)
				}
			}
		}
	})
}
