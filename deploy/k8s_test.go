package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The Kubernetes manifests (deploy/k8s) are checked the way a cluster
// would read them, without one: every object decodes strictly into the
// Kubernetes API types, every overlay renders with kustomize (in process),
// and what the containers are given (image, flags, VIGIL_* variables,
// ports, probes) is what the binaries built from this repository take.

var overlays = []string{"dev", "production", "clickhouse-cluster"}

// releaseOverlays run the images of a release from a registry (the
// production overlay's images:, which clickhouse-cluster builds on).
var releaseOverlays = map[string]bool{"production": true, "clickhouse-cluster": true}

// k8sScheme knows every kind the manifests use; a kind outside it is an
// error, so a new kind must be added here and thereby checked.
var k8sScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictDecode decodes one YAML object into its typed form, refusing
// unknown and duplicate fields (a misspelled field would otherwise be
// dropped by the API server in silence).
func strictDecode(doc []byte) (runtime.Object, *schema.GroupVersionKind, error) {
	ser := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, k8sScheme, k8sScheme, kjson.SerializerOptions{Yaml: true, Strict: true})
	return ser.Decode(doc, nil, nil)
}

// splitYAML splits a multi-document YAML file, dropping empty documents.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// TestK8sManifestsDecodeStrictly: every object in every manifest file of
// deploy/k8s (the kustomization files aside) is a Kubernetes object with
// no unknown field.
func TestK8sManifestsDecodeStrictly(t *testing.T) {
	n := 0
	err := filepath.WalkDir("k8s", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") || d.Name() == "kustomization.yaml" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range splitYAML(b) {
			if _, _, err := strictDecode(doc); err != nil {
				t.Errorf("%s document %d: %v", path, i+1, err)
			} else {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Errorf("decoded %d objects: the walk missed the manifests", n)
	}
}

// rendered is one overlay as kustomize builds it, decoded.
type rendered struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	secrets      map[string]*corev1.Secret
	configMaps   map[string]*corev1.ConfigMap
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	netpols      []*networkingv1.NetworkPolicy
	namespaces   []string
}

// fixture holds the binaries built once for every test of this file and
// the deployment's generated credentials.
var fixture struct {
	once    sync.Once
	err     error
	bin     string // directory of the built binaries
	secrets string // a base/secrets directory as an operator writes it
}

// vigilBinaries maps each image built here to the Go package of the binary
// it runs (deploy/<name>.Dockerfile builds it).
var vigilBinaries = map[string]string{
	"vigil":          "github.com/vigilhq/vigil/cmd/vigil",
	"vigil-api":      "github.com/vigilhq/vigil/services/api/cmd/api",
	"vigil-ingest":   "github.com/vigilhq/vigil/services/ingest/cmd/ingest",
	"vigil-policy":   "github.com/vigilhq/vigil/services/policy/cmd/policy",
	"vigil-guardian": "github.com/vigilhq/vigil/services/guardian/cmd/guardian",
	"vigil-risk":     "github.com/vigilhq/vigil/services/risk/cmd/risk",
	"vigil-ledger":   "github.com/vigilhq/vigil/services/ledger/cmd/ledger",
	"vigil-notifier": "github.com/vigilhq/vigil/services/notifier/cmd/notifier",
}

// setup builds the binaries and writes the credentials the way the
// operator does (base/kustomization.yaml says how): `vigil nats init`,
// `vigil secrets init` and a ClickHouse password.
func setup(t *testing.T) {
	t.Helper()
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "vigil-k8s-test")
		if err != nil {
			fixture.err = err
			return
		}
		fixture.bin = filepath.Join(dir, "bin")
		// Stripped: only --help is run, and linking is most of the time.
		args := []string{"build", "-ldflags=-s -w", "-o", fixture.bin + string(filepath.Separator)}
		for _, pkg := range vigilBinaries {
			args = append(args, pkg)
		}
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fixture.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		fixture.secrets = filepath.Join(dir, "secrets")
		vigil := filepath.Join(fixture.bin, "vigil")
		for _, args := range [][]string{
			{"nats", "init", "--dir", filepath.Join(fixture.secrets, "nats")},
			{"secrets", "init", "--env-file", filepath.Join(fixture.secrets, "vigil.env")},
		} {
			if out, err := exec.Command(vigil, args...).CombinedOutput(); err != nil {
				fixture.err = fmt.Errorf("vigil %v: %v\n%s", args, err, out)
				return
			}
		}
		fixture.err = os.WriteFile(filepath.Join(fixture.secrets, "clickhouse.env"), []byte("CLICKHOUSE_PASSWORD=0123456789abcdef0123456789abcdef\n"), 0o600)
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
}

// copyTree copies the directory src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
}

// render builds an overlay with kustomize from a copy of deploy/k8s that
// holds the generated credentials, and decodes every object strictly.
func render(t *testing.T, overlay string) *rendered {
	t.Helper()
	setup(t)
	root := filepath.Join(t.TempDir(), "k8s")
	if err := copyTree("k8s", root); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "base", "secrets")); err != nil {
		t.Fatal(err)
	}
	if err := copyTree(fixture.secrets, filepath.Join(root, "base", "secrets")); err != nil {
		t.Fatal(err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, "overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v", overlay, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, secrets: map[string]*corev1.Secret{},
		configMaps: map[string]*corev1.ConfigMap{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
	}
	for _, doc := range splitYAML(out) {
		obj, gvk, err := strictDecode(doc)
		if err != nil {
			t.Fatalf("overlays/%s renders an object that does not decode: %v\n%s", overlay, err, doc)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments[o.Name] = o
		case *appsv1.StatefulSet:
			r.statefulSets[o.Name] = o
		case *corev1.Service:
			r.services[o.Name] = o
		case *corev1.Secret:
			r.secrets[o.Name] = o
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas[o.Name] = o
		case *networkingv1.NetworkPolicy:
			r.netpols = append(r.netpols, o)
		case *corev1.Namespace:
			r.namespaces = append(r.namespaces, o.Name)
		default:
			t.Fatalf("overlays/%s: %s is not checked by this test", overlay, gvk)
		}
		if ns := obj.(interface{ GetNamespace() string }).GetNamespace(); gvk.Kind != "Namespace" && ns == "" {
			t.Errorf("overlays/%s: %s has no namespace", overlay, gvk.Kind)
		}
	}
	return r
}

// secret finds a rendered Secret by its (hash-suffixed) name.
func (r *rendered) secret(name string) *corev1.Secret {
	if s, ok := r.secrets[name]; ok {
		return s
	}
	return nil
}

// binaryFlags runs `<binary> --help` (for the CLI image, `vigil <args>
// --help`) and returns its flags with the environment variable of each.
func binaryFlags(t *testing.T, image string, args []string) map[string]string {
	t.Helper()
	bin := filepath.Join(fixture.bin, filepath.Base(vigilBinaries[image]))
	cmd := exec.Command(bin, append(slices.Clone(args), "--help")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // --help exits non-zero in some commands
	flags := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)(?:\s+\$([A-Z0-9_]+))?`).FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = m[2]
	}
	if len(flags) == 0 {
		t.Fatalf("%s %v --help lists no flags:\n%s", bin, args, out.String())
	}
	return flags
}

// imageName is an image reference without its tag or registry path, as
// the base names it (vigil-api).
func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

func TestK8sOverlaysRender(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			r := render(t, overlay)
			if len(r.namespaces) != 1 {
				t.Errorf("namespaces %v, want the overlay's one", r.namespaces)
			}
			want := []string{"gateway", "api", "ingest", "policy", "guardian", "risk", "ledger", "notifier"}
			for _, name := range want {
				if r.deployments[name] == nil {
					t.Errorf("no Deployment %s", name)
				}
			}
			if len(r.deployments) != len(want) {
				t.Errorf("%d Deployments, want %d", len(r.deployments), len(want))
			}
			if s := r.statefulSets["nats"]; s == nil || *s.Spec.Replicas != 3 {
				t.Errorf("NATS: want a StatefulSet of 3, got %+v", s)
			}
			if r.statefulSets["clickhouse"] == nil {
				t.Error("no ClickHouse StatefulSet")
			}
		})
	}
}

// podTemplates are the rendered workloads' pod templates by name.
func (r *rendered) podTemplates() map[string]*corev1.PodTemplateSpec {
	pods := map[string]*corev1.PodTemplateSpec{}
	for n, d := range r.deployments {
		pods[n] = &d.Spec.Template
	}
	for n, s := range r.statefulSets {
		pods[n] = &s.Spec.Template
	}
	return pods
}

func matches(sel map[string]string, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestK8sContainersMatchBinaries: each Vigil container runs an image built
// here (a Dockerfile of deploy/ builds it), is given only flags and
// VIGIL_* variables its binary takes, listens where it says it does, and
// is probed on the health endpoints the binary serves.
func TestK8sContainersMatchBinaries(t *testing.T) {
	for _, overlay := range overlays {
		r := render(t, overlay)
		for name, d := range r.deployments {
			t.Run(overlay+"/"+name, func(t *testing.T) {
				spec := d.Spec.Template.Spec
				if len(spec.Containers) != 1 {
					t.Fatalf("%d containers, want 1", len(spec.Containers))
				}
				c := spec.Containers[0]
				base := imageName(c.Image)
				if releaseOverlays[overlay] {
					if !pinned(c.Image) || strings.HasSuffix(c.Image, ":dev") {
						t.Errorf("image %q: production pins a release tag", c.Image)
					}
					base = "vigil-" + filepath.Base(base)
					if base == "vigil-vigil" {
						base = "vigil"
					}
				}
				pkg, ok := vigilBinaries[base]
				if !ok {
					t.Fatalf("image %q is built by no Dockerfile of deploy/", c.Image)
				}
				dockerfile := strings.TrimPrefix(base, "vigil-") + ".Dockerfile"
				df := parseDockerfile(t, dockerfile)
				if !slices.ContainsFunc(df.builds, func(b goBuild) bool {
					return pkg == "github.com/vigilhq/vigil/"+path.Join(b.dir, b.pkg)
				}) {
					t.Errorf("%s does not build %s", dockerfile, pkg)
				}
				if ep := df.final().entrypoint; len(ep) != 1 || ep[0] != "/"+path.Base(pkg) || len(c.Command) > 0 {
					t.Errorf("%s runs %v (command %v), want the image's entrypoint /%s", dockerfile, ep, c.Command, path.Base(pkg))
				}
				// The CLI image takes a subcommand first (gateway).
				var sub []string
				args := c.Args
				if base == "vigil" {
					if len(args) == 0 {
						t.Fatal("the vigil image needs a subcommand")
					}
					sub, args = args[:1], args[1:]
				}
				flags := binaryFlags(t, base, sub)
				envs := map[string]bool{}
				for _, e := range flags {
					envs[e] = true
				}
				for _, a := range args {
					f, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
					if _, ok := flags[f]; !strings.HasPrefix(a, "-") || !ok {
						t.Errorf("argument %q is no flag of %s %v", a, base, sub)
					}
				}
				var httpAddr string
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "VIGIL_") && !envs[e.Name] {
						t.Errorf("%s is read by no flag of %s %v", e.Name, base, sub)
					}
					if e.Name == "VIGIL_HTTP_ADDR" {
						httpAddr = e.Value
					}
				}
				if httpAddr == "" {
					httpAddr = ":8080" // --http-addr's default
				}
				_, port, err := net.SplitHostPort(httpAddr)
				if err != nil {
					t.Fatal(err)
				}
				if len(c.Ports) != 1 || c.Ports[0].Name != "http" || strconv.Itoa(int(c.Ports[0].ContainerPort)) != port {
					t.Errorf("ports %+v, want one named http on %s (VIGIL_HTTP_ADDR)", c.Ports, port)
				}
				for probe, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
					want := "/healthz"
					if probe == "readiness" {
						want = "/readyz" // httpkit.HealthRoutes: every dependency answers
					}
					if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port != intstr.FromString("http") {
						t.Errorf("%s probe %+v, want GET %s on port http", probe, p, want)
					}
				}
				checkContainerBasics(t, spec, c)
			})
		}
	}
}

// checkContainerBasics: requests and a memory limit, no root, a read-only
// root file system, no token mounted, spread over zones and nodes.
func checkContainerBasics(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext %+v: want read-only root, no privilege escalation, all capabilities dropped", c.SecurityContext)
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod may run as root")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted: no Vigil process talks to the Kubernetes API")
	}
	keys := map[string]bool{}
	for _, tsc := range spec.TopologySpreadConstraints {
		keys[tsc.TopologyKey] = true
	}
	if !keys["topology.kubernetes.io/zone"] || !keys["kubernetes.io/hostname"] {
		t.Errorf("topology spread over %v, want zones and nodes", keys)
	}
}

// TestK8sEnvMatchesCompose: each service gets in Kubernetes every VIGIL_*
// setting it gets in compose.yaml (deployment keys, the ledger origin, the
// risk partitions…), so the two deployments cannot drift apart. The NATS
// seed comes from the service's own Secret in both.
func TestK8sEnvMatchesCompose(t *testing.T) {
	p := load(t, nil)
	r := render(t, "production")
	for name, s := range p.AllServices() {
		d, ok := r.deployments[name]
		if !ok {
			continue // nats, clickhouse (StatefulSets) and the one-shot keys tool
		}
		c := d.Spec.Template.Spec.Containers[0]
		have := map[string]bool{}
		for _, e := range c.Env {
			have[e.Name] = true
		}
		for _, ef := range c.EnvFrom {
			if ef.SecretRef == nil {
				continue
			}
			sec := r.secret(ef.SecretRef.Name)
			if sec == nil {
				t.Errorf("%s: envFrom Secret %s is not rendered", name, ef.SecretRef.Name)
				continue
			}
			for k := range sec.Data {
				have[k] = true
			}
		}
		for key := range s.Environment {
			// The guardian binary never connects to ClickHouse
			// (daemon.ProcessOptions without ClickHouse): compose gives it
			// the shared block, Kubernetes keeps it out.
			if name == "guardian" && key == "VIGIL_CLICKHOUSE_DSN" {
				continue
			}
			if strings.HasPrefix(key, "VIGIL_") && !have[key] {
				t.Errorf("%s: compose sets %s, the Deployment does not", name, key)
			}
		}
		if len(s.EnvFiles) == 1 && !have["VIGIL_NATS_NKEY"] {
			t.Errorf("%s: no VIGIL_NATS_NKEY from its NATS Secret", name)
		}
		if name != "gateway" {
			if ref := c.EnvFrom; len(ref) != 1 || ref[0].SecretRef == nil || !strings.HasPrefix(ref[0].SecretRef.Name, "vigil-nats-"+name+"-") {
				t.Errorf("%s: envFrom %+v, want its own Secret vigil-nats-%s", name, ref, name)
			}
		}
	}
}

// TestK8sReferencesResolve: every Secret and ConfigMap a pod names exists
// with the key it reads, every Service selects pods and targets a port
// they declare, every URL a container is given names a Service on a port
// it serves, and the NetworkPolicies let the container reach it.
func TestK8sReferencesResolve(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			r := render(t, overlay)
			pods := r.podTemplates()
			for name, pod := range pods {
				for _, v := range pod.Spec.Volumes {
					switch {
					case v.Secret != nil && r.secret(v.Secret.SecretName) == nil:
						t.Errorf("%s: volume %s: no Secret %s", name, v.Name, v.Secret.SecretName)
					case v.ConfigMap != nil && r.configMaps[v.ConfigMap.Name] == nil:
						t.Errorf("%s: volume %s: no ConfigMap %s", name, v.Name, v.ConfigMap.Name)
					}
				}
				for _, c := range pod.Spec.Containers {
					env := r.envOf(r.podName(name), c)
					for _, e := range c.Env {
						if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
							ref := e.ValueFrom.SecretKeyRef
							if s := r.secret(ref.Name); s == nil || len(s.Data[ref.Key]) == 0 {
								t.Errorf("%s: %s reads key %s of Secret %s, which has none", name, e.Name, ref.Key, ref.Name)
							}
						}
						if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
							ref := e.ValueFrom.ConfigMapKeyRef
							if cm := r.configMaps[ref.Name]; cm == nil {
								t.Errorf("%s: %s reads ConfigMap %s, which is not rendered", name, e.Name, ref.Name)
							} else if _, ok := cm.Data[ref.Key]; !ok {
								t.Errorf("%s: %s reads key %s of ConfigMap %s, which has none", name, e.Name, ref.Key, ref.Name)
							}
						}
						if strings.Contains(env[e.Name], "$(") {
							t.Errorf("%s: %s=%s refers to a variable not defined before it", name, e.Name, env[e.Name])
						}
						v := env[e.Name]
						if u, err := url.Parse(v); err == nil && strings.Contains(v, "://") && (u.Scheme == "http" || u.Scheme == "nats" || u.Scheme == "clickhouse") {
							// A ClickHouse DSN may list several servers.
							for _, host := range strings.Split(u.Host, ",") {
								checkReachable(t, r, name, pod, e.Name, host)
							}
						}
					}
					for _, m := range c.VolumeMounts {
						if m.SubPath == "" {
							continue
						}
						i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
						if i < 0 {
							t.Errorf("%s: mount of unknown volume %s", name, m.Name)
							continue
						}
						v := pod.Spec.Volumes[i]
						switch {
						case v.Secret != nil && r.secret(v.Secret.SecretName) != nil && r.secret(v.Secret.SecretName).Data[m.SubPath] == nil:
							t.Errorf("%s: Secret %s has no %s", name, v.Secret.SecretName, m.SubPath)
						case v.ConfigMap != nil && r.configMaps[v.ConfigMap.Name] != nil && r.configMaps[v.ConfigMap.Name].Data[m.SubPath] == "":
							t.Errorf("%s: ConfigMap %s has no %s", name, v.ConfigMap.Name, m.SubPath)
						}
					}
				}
			}
			for name, svc := range r.services {
				found := false
				for _, pod := range pods {
					if !matches(svc.Spec.Selector, pod.Labels) {
						continue
					}
					found = true
					for _, sp := range svc.Spec.Ports {
						if containerPort(pod, sp.TargetPort) == 0 {
							t.Errorf("Service %s targets port %s, which its pods do not declare", name, sp.TargetPort.String())
						}
					}
				}
				if !found {
					t.Errorf("Service %s selects no pods", name)
				}
			}
		})
	}
}

// containerPort resolves a (named or numbered) port of a pod; 0 if none.
func containerPort(pod *corev1.PodTemplateSpec, p intstr.IntOrString) int32 {
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

// envOf is a container's environment as the kubelet gives it in the pod
// named pod: values from ConfigMaps and Secrets, the pod's name for
// metadata.name, and $(VAR) references to variables defined before
// expanded.
func (r *rendered) envOf(pod string, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		v := expandRefs(e.Value, env)
		if f := e.ValueFrom; f != nil {
			switch {
			case f.ConfigMapKeyRef != nil && r.configMaps[f.ConfigMapKeyRef.Name] != nil:
				v = r.configMaps[f.ConfigMapKeyRef.Name].Data[f.ConfigMapKeyRef.Key]
			case f.SecretKeyRef != nil && r.secret(f.SecretKeyRef.Name) != nil:
				v = string(r.secret(f.SecretKeyRef.Name).Data[f.SecretKeyRef.Key])
			case f.FieldRef != nil && f.FieldRef.FieldPath == "metadata.name":
				v = pod
			}
		}
		env[e.Name] = v
	}
	return env
}

// varRef is a $(VAR) reference in a container's env value or argument.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandRefs expands the references to variables of env in v; others stay
// as written, as the kubelet leaves them.
func expandRefs(v string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(v, func(ref string) string {
		if val, ok := env[varRef.FindStringSubmatch(ref)[1]]; ok {
			return val
		}
		return ref
	})
}

// podName is the name of a workload's (first) pod: a StatefulSet's pod 0.
func (r *rendered) podName(workload string) string {
	if _, ok := r.statefulSets[workload]; ok {
		return workload + "-0"
	}
	return workload
}

// resolve finds what a host name reaches inside the namespace: a Service
// (svc) or one pod of a StatefulSet through its headless governing Service
// (pod.svc). It returns the Service and the pod templates behind the name.
func (r *rendered) resolve(host string) (*corev1.Service, map[string]*corev1.PodTemplateSpec, error) {
	podName, svcName, isPod := strings.Cut(host, ".")
	if !isPod {
		svcName = host
	}
	svc, ok := r.services[svcName]
	if !ok {
		return nil, nil, fmt.Errorf("no Service %s", svcName)
	}
	pods := map[string]*corev1.PodTemplateSpec{}
	if !isPod {
		for name, pod := range r.podTemplates() {
			if matches(svc.Spec.Selector, pod.Labels) {
				pods[name] = pod
			}
		}
		return svc, pods, nil
	}
	i := strings.LastIndex(podName, "-")
	ord, err := strconv.Atoi(podName[i+1:])
	ss := r.statefulSets[podName[:max(i, 0)]]
	switch {
	case i < 0 || err != nil || ss == nil:
		return nil, nil, fmt.Errorf("%s is no pod of a StatefulSet", podName)
	case ord < 0 || ord >= int(*ss.Spec.Replicas):
		return nil, nil, fmt.Errorf("StatefulSet %s has %d replicas, no %s", ss.Name, *ss.Spec.Replicas, podName)
	case ss.Spec.ServiceName != svcName || svc.Spec.ClusterIP != corev1.ClusterIPNone:
		return nil, nil, fmt.Errorf("%s: pods of %s are named through its headless governing Service %s", host, ss.Name, ss.Spec.ServiceName)
	}
	pods[ss.Name] = &ss.Spec.Template
	return svc, pods, nil
}

// checkReachable: host:port (given to client in variable v) names a
// Service, or a StatefulSet's pod, serving port, and a NetworkPolicy
// admits the client pod to the pods behind it on that port.
func checkReachable(t *testing.T, r *rendered, client string, from *corev1.PodTemplateSpec, v, hostport string) {
	t.Helper()
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("%s: %s: %v", client, v, err)
		return
	}
	svc, pods, err := r.resolve(host)
	if err != nil {
		t.Errorf("%s is given %s in %s: %v", client, hostport, v, err)
		return
	}
	port, _ := strconv.Atoi(portStr)
	i := slices.IndexFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == port })
	if i < 0 {
		t.Errorf("%s is given %s in %s: Service %s has no port %d", client, hostport, v, svc.Name, port)
		return
	}
	for name, pod := range pods {
		target := containerPort(pod, svc.Spec.Ports[i].TargetPort)
		if !admitted(r.netpols, pod, from, target) {
			t.Errorf("no NetworkPolicy admits %s to %s on port %d (%s in %s)", client, name, target, hostport, v)
		}
	}
}

// admitted evaluates the NetworkPolicies (matchLabels selectors, the only
// kind these manifests use) for one connection within the namespace.
func admitted(pols []*networkingv1.NetworkPolicy, to, from *corev1.PodTemplateSpec, port int32) bool {
	for _, p := range pols {
		if len(p.Spec.PodSelector.MatchExpressions) > 0 || !matches(p.Spec.PodSelector.MatchLabels, to.Labels) {
			continue
		}
		for _, rule := range p.Spec.Ingress {
			peerOK := len(rule.From) == 0
			for _, peer := range rule.From {
				if peer.PodSelector != nil && peer.NamespaceSelector == nil && matches(peer.PodSelector.MatchLabels, from.Labels) {
					peerOK = true
				}
			}
			portOK := len(rule.Ports) == 0
			for _, rp := range rule.Ports {
				if rp.Port != nil && containerPort(to, *rp.Port) == port {
					portOK = true
				}
			}
			if peerOK && portOK {
				return true
			}
		}
	}
	return false
}

// TestK8sNetworkPolicies: ingress is denied by default, and only the front
// door is open to everyone.
func TestK8sNetworkPolicies(t *testing.T) {
	r := render(t, "production")
	deny := slices.ContainsFunc(r.netpols, func(p *networkingv1.NetworkPolicy) bool {
		return len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			len(p.Spec.Ingress) == 0 && slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
	})
	if !deny {
		t.Error("no default-deny ingress policy")
	}
	anyone := &corev1.PodTemplateSpec{}
	anyone.Labels = map[string]string{"app.kubernetes.io/name": "intruder"}
	for name, pod := range r.podTemplates() {
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				open := admitted(r.netpols, pod, anyone, cp.ContainerPort)
				if open != (name == "gateway" && cp.Name == "http") {
					t.Errorf("%s port %s open to any pod: %v", name, cp.Name, open)
				}
			}
		}
	}
}

// TestK8sAvailability: every workload run with more than one replica has a
// PodDisruptionBudget that keeps all but one; the ledger (a single writer)
// has one replica, is replaced with Recreate and is never autoscaled; the
// HPAs scale existing stateless Deployments.
func TestK8sAvailability(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			r := render(t, overlay)
			replicas := map[string]int32{}
			for n, d := range r.deployments {
				replicas[n] = *d.Spec.Replicas
			}
			for n, s := range r.statefulSets {
				replicas[n] = *s.Spec.Replicas
			}
			for name, h := range r.hpas {
				if h.Spec.ScaleTargetRef.Kind != "Deployment" || r.deployments[h.Spec.ScaleTargetRef.Name] == nil {
					t.Errorf("HPA %s scales %+v, which is no Deployment here", name, h.Spec.ScaleTargetRef)
				}
				if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
					t.Errorf("HPA %s: min %v max %d", name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
				}
				if n := h.Spec.ScaleTargetRef.Name; replicas[n] < h.Spec.MaxReplicas {
					replicas[n] = h.Spec.MaxReplicas
				}
			}
			for _, n := range []string{"gateway", "api", "ingest", "policy"} {
				if r.hpas[n] == nil {
					t.Errorf("no HPA for %s", n)
				}
			}
			ledger := r.deployments["ledger"]
			if *ledger.Spec.Replicas != 1 || ledger.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || r.hpas["ledger"] != nil {
				t.Errorf("ledger: %d replicas, strategy %s, HPA %v: want one replica replaced with Recreate, never scaled", *ledger.Spec.Replicas, ledger.Spec.Strategy.Type, r.hpas["ledger"] != nil)
			}
			for name, pod := range r.podTemplates() {
				var budgets []*policyv1.PodDisruptionBudget
				for _, p := range r.pdbs {
					if matches(p.Spec.Selector.MatchLabels, pod.Labels) {
						budgets = append(budgets, p)
					}
				}
				if replicas[name] <= 1 {
					continue
				}
				if len(budgets) != 1 {
					t.Errorf("%s (%d replicas): %d PodDisruptionBudgets, want 1", name, replicas[name], len(budgets))
					continue
				}
				if mu := budgets[0].Spec.MaxUnavailable; mu == nil || *mu != intstr.FromInt32(1) {
					t.Errorf("%s: PodDisruptionBudget maxUnavailable %v, want 1", name, mu)
				}
			}
		})
	}
}

// TestK8sNATSConfig: the NATS servers' configuration, with the users
// `vigil nats init` wrote included, is one nats-server accepts: a cluster
// of the StatefulSet's three pods, JetStream on the volume, and NKey
// users for every service.
func TestK8sNATSConfig(t *testing.T) {
	r := render(t, "production")
	var conf, auth string
	for name, cm := range r.configMaps {
		if strings.HasPrefix(name, "nats-config") {
			conf = cm.Data["nats.conf"]
		}
	}
	for name, s := range r.secrets {
		if strings.HasPrefix(name, "vigil-nats-auth") {
			auth = string(s.Data["nats.conf"])
		}
	}
	if conf == "" || auth == "" {
		t.Fatal("no NATS configuration or users rendered")
	}
	dir := t.TempDir()
	for file, data := range map[string]string{"nats.conf": conf, "auth.conf": auth} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ss := r.statefulSets["nats"]
	t.Setenv("POD_NAME", ss.Name+"-1")
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatalf("nats-server refuses the configuration: %v", err)
	}
	if opts.ServerName != "nats-1" || !opts.JetStream || opts.StoreDir != "/data" {
		t.Errorf("server %q, JetStream %v in %q: want nats-1 with JetStream in /data", opts.ServerName, opts.JetStream, opts.StoreDir)
	}
	var routes []string
	for _, u := range opts.Routes {
		routes = append(routes, u.Host)
	}
	for i := range *ss.Spec.Replicas {
		want := fmt.Sprintf("%s-%d.%s:%d", ss.Name, i, ss.Spec.ServiceName, opts.Cluster.Port)
		if !slices.Contains(routes, want) {
			t.Errorf("routes %v lack %s", routes, want)
		}
	}
	users := map[string]bool{}
	for _, u := range opts.Nkeys {
		users[u.Nkey] = true
	}
	if len(users) < 8 {
		t.Errorf("%d NKey users, want one per service and the admin", len(users))
	}
	c := ss.Spec.Template.Spec.Containers[0]
	ports := map[int]string{opts.Port: "client", opts.Cluster.Port: "cluster", opts.HTTPPort: "monitor"}
	for port, name := range ports {
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return int(cp.ContainerPort) == port && cp.Name == name }) {
			t.Errorf("the server listens on %d (%s), which the container does not declare", port, name)
		}
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == opts.StoreDir }) {
		t.Errorf("JetStream stores in %s, which is no volume", opts.StoreDir)
	}
	// The same image as compose: one NATS version to test against.
	if img := service(t, load(t, nil), "nats").Image; c.Image != img {
		t.Errorf("NATS image %s, compose runs %s", c.Image, img)
	}
	if img := service(t, load(t, nil), "clickhouse").Image; r.statefulSets["clickhouse"].Spec.Template.Spec.Containers[0].Image != img {
		t.Errorf("ClickHouse image differs from compose's %s", img)
	}
}

// TestK8sGatewayUpstreams: the gateway has a URL for every service of the
// route table, each the Service of that name.
func TestK8sGatewayUpstreams(t *testing.T) {
	setup(t)
	r := render(t, "production")
	c := r.deployments["gateway"].Spec.Template.Spec.Containers[0]
	flags := binaryFlags(t, "vigil", []string{"gateway"})
	for flag, env := range flags {
		svc, ok := strings.CutSuffix(flag, "-url")
		if !ok {
			continue
		}
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == env })
		if i < 0 {
			t.Errorf("gateway: no %s (--%s)", env, flag)
			continue
		}
		if u, err := url.Parse(c.Env[i].Value); err != nil || u.Hostname() != svc {
			t.Errorf("gateway %s=%s, want the Service %s", env, c.Env[i].Value, svc)
		}
	}
}
