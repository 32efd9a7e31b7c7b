package deploy

import (
	"encoding/xml"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The ClickHouse cluster in the deployments (docs/cluster.md): the
// replicas' configuration (remote_servers, macros, ZooKeeper) parses, and
// agrees with what the services are told (VIGIL_CLICKHOUSE_CLUSTER, the
// replicas in VIGIL_CLICKHOUSE_DSN) and with the replicas and ZooKeeper
// servers the deployment runs.

// chValue is a configuration element whose value is written in the file
// or read from the server's environment (from_env).
type chValue struct {
	Value   string `xml:",chardata"`
	FromEnv string `xml:"from_env,attr"`
}

// resolveIn is the element's value on a server with environment env.
func (v chValue) resolveIn(env map[string]string) string {
	if v.FromEnv != "" {
		return env[v.FromEnv]
	}
	return strings.TrimSpace(v.Value)
}

type chEndpoint struct {
	Host     string  `xml:"host"`
	Port     int     `xml:"port"`
	User     string  `xml:"user"`
	Password chValue `xml:"password"`
}

func (e chEndpoint) hostPort() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// chClusterConfig is the part of a ClickHouse server configuration Vigil's
// cluster mode relies on.
type chClusterConfig struct {
	XMLName   xml.Name     `xml:"clickhouse"`
	ZooKeeper []chEndpoint `xml:"zookeeper>node"`
	Macros    struct {
		Shard   chValue `xml:"shard"`
		Replica chValue `xml:"replica"`
	} `xml:"macros"`
	InterserverHost chValue `xml:"interserver_http_host"`
	RemoteServers   struct {
		Clusters []struct {
			XMLName xml.Name
			Shards  []struct {
				InternalReplication bool         `xml:"internal_replication"`
				Replicas            []chEndpoint `xml:"replica"`
			} `xml:"shard"`
		} `xml:",any"`
	} `xml:"remote_servers"`
	DistributedDDL string `xml:"distributed_ddl>path"`
}

// chReplica is one ClickHouse server of a deployment: the name the
// services and the other replicas reach it by, and its environment.
type chReplica struct {
	host string
	env  map[string]string
}

// checkClusterConfig checks a cluster configuration (mounted into every
// replica) against the deployment: the cluster the services name, the
// host:port list of their DSNs, the replicas and the ZooKeeper servers.
func checkClusterConfig(t *testing.T, data []byte, cluster string, dsnHosts []string, replicas []chReplica, nativePort int, zookeeper []string) {
	t.Helper()
	var cfg chClusterConfig
	if err := xml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("the cluster configuration does not parse: %v", err)
	}
	if len(cfg.RemoteServers.Clusters) != 1 || cfg.RemoteServers.Clusters[0].XMLName.Local != cluster {
		t.Fatalf("remote_servers %+v: want one cluster, %q (VIGIL_CLICKHOUSE_CLUSTER)", cfg.RemoteServers.Clusters, cluster)
	}
	shards := cfg.RemoteServers.Clusters[0].Shards
	// Vigil runs on one shard (docs/cluster.md: no sharding key).
	if len(shards) != 1 || !shards[0].InternalReplication {
		t.Fatalf("cluster %s: %d shards, want one with internal_replication", cluster, len(shards))
	}
	var listed []string
	for _, r := range shards[0].Replicas {
		listed = append(listed, r.hostPort())
	}
	var want []string
	for _, r := range replicas {
		want = append(want, net.JoinHostPort(r.host, strconv.Itoa(nativePort)))
	}
	if !slices.Equal(listed, want) {
		t.Errorf("cluster %s lists %v, want the deployment's replicas %v", cluster, listed, want)
	}
	if !slices.Equal(dsnHosts, listed) {
		t.Errorf("the services' DSN lists %v, want the cluster's replicas in its order %v", dsnHosts, listed)
	}
	for _, r := range shards[0].Replicas {
		for _, rep := range replicas {
			if r.Password.FromEnv != "" && rep.env[r.Password.FromEnv] == "" {
				t.Errorf("replica %s: the cluster's password comes from %s, which it does not set", rep.host, r.Password.FromEnv)
			}
			if u := rep.env["CLICKHOUSE_USER"]; u != "" && r.User != u {
				t.Errorf("cluster %s connects to %s as %q, but the servers' user is %q", cluster, r.Host, r.User, u)
			}
		}
	}
	names := map[string]string{}
	for _, rep := range replicas {
		if cfg.Macros.Shard.resolveIn(rep.env) == "" {
			t.Errorf("replica %s: no shard macro", rep.host)
		}
		name := cfg.Macros.Replica.resolveIn(rep.env)
		if name == "" {
			t.Errorf("replica %s: no replica macro (from %+v)", rep.host, cfg.Macros.Replica)
		} else if other, dup := names[name]; dup {
			t.Errorf("replicas %s and %s share the replica macro %q", other, rep.host, name)
		}
		names[name] = rep.host
		if h := cfg.InterserverHost.resolveIn(rep.env); h != rep.host {
			t.Errorf("replica %s: interserver_http_host %q, want the name the other replicas reach it by", rep.host, h)
		}
	}
	var zk []string
	for _, n := range cfg.ZooKeeper {
		zk = append(zk, n.hostPort())
	}
	if !slices.Equal(zk, zookeeper) {
		t.Errorf("zookeeper nodes %v, want the deployment's ZooKeeper servers %v", zk, zookeeper)
	}
	if cfg.DistributedDDL == "" {
		t.Error("no distributed_ddl path: ON CLUSTER statements would fail")
	}
}

// dsnHosts is the host:port list of a (multi-host) ClickHouse DSN.
func dsnHosts(t *testing.T, dsn string) []string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "clickhouse" || u.Path != "/vigil" {
		t.Fatalf("DSN %q: want clickhouse://…/vigil (%v)", dsn, err)
	}
	return strings.Split(u.Host, ",")
}

// TestK8sClickHouseCluster: the overlay clickhouse-cluster runs ClickHouse
// replicas with the cluster configuration mounted, a ZooKeeper ensemble,
// and gives every service that uses ClickHouse the cluster and the
// replicas; the other overlays keep one server and no cluster.
func TestK8sClickHouseCluster(t *testing.T) {
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			r := render(t, overlay)
			clusters, hosts := map[string]bool{}, map[string]bool{}
			var dsn []string
			for name, d := range r.deployments {
				c := d.Spec.Template.Spec.Containers[0]
				env := r.envOf(name, c)
				if _, ok := env["VIGIL_CLICKHOUSE_DSN"]; !ok {
					continue
				}
				if _, ok := env["VIGIL_CLICKHOUSE_CLUSTER"]; !ok {
					t.Errorf("%s: a ClickHouse DSN but no VIGIL_CLICKHOUSE_CLUSTER", name)
				}
				clusters[env["VIGIL_CLICKHOUSE_CLUSTER"]] = true
				dsn = dsnHosts(t, env["VIGIL_CLICKHOUSE_DSN"])
				hosts[strings.Join(dsn, ",")] = true
			}
			if len(clusters) != 1 || len(hosts) != 1 {
				t.Fatalf("services name clusters %v and servers %v: give every process the same", clusters, hosts)
			}
			var cluster string
			for c := range clusters {
				cluster = c
			}
			ch := r.statefulSets["clickhouse"]
			zk := r.statefulSets["zookeeper"]
			if cluster == "" {
				if overlay == "clickhouse-cluster" {
					t.Fatal("no VIGIL_CLICKHOUSE_CLUSTER")
				}
				if *ch.Spec.Replicas != 1 || len(dsn) != 1 || zk != nil {
					t.Errorf("one server: %d ClickHouse replicas, DSN %v, ZooKeeper %v", *ch.Spec.Replicas, dsn, zk != nil)
				}
				return
			}
			if zk == nil || *zk.Spec.Replicas != 3 || *ch.Spec.Replicas < 2 {
				t.Fatalf("want a ZooKeeper ensemble of 3 and at least two ClickHouse replicas")
			}
			if img := service(t, loadFiles(t, nil, composeVariants[1]...), "zookeeper").Image; zk.Spec.Template.Spec.Containers[0].Image != img {
				t.Errorf("ZooKeeper image differs from compose's %s", img)
			}
			c := ch.Spec.Template.Spec.Containers[0]
			nativePort := int(containerPort(&ch.Spec.Template, intstrName("native")))
			if containerPort(&ch.Spec.Template, intstrName("interserver")) != 9009 {
				t.Error("ClickHouse does not declare its interserver port 9009 (part fetches)")
			}
			var replicas []chReplica
			for i := range int(*ch.Spec.Replicas) {
				pod := fmt.Sprintf("%s-%d", ch.Name, i)
				replicas = append(replicas, chReplica{host: pod + "." + ch.Spec.ServiceName, env: r.envOf(pod, c)})
			}
			// The replicas reach each other and ZooKeeper.
			var zkServers []string
			zc := zk.Spec.Template.Spec.Containers[0]
			for i := range int(*zk.Spec.Replicas) {
				zkServers = append(zkServers, net.JoinHostPort(fmt.Sprintf("%s-%d.%s", zk.Name, i, zk.Spec.ServiceName), strconv.Itoa(int(containerPort(&zk.Spec.Template, intstrName("client"))))))
			}
			for _, h := range append(slices.Clone(zkServers), replicas[1].host+":9009", net.JoinHostPort(replicas[1].host, strconv.Itoa(nativePort))) {
				checkReachable(t, r, "clickhouse", &ch.Spec.Template, "cluster.xml", h)
			}
			checkZooKeeperServers(t, r, zk, zc)
			checkClusterConfig(t, mountedConfig(t, r, ch.Spec.Template.Spec, c, "/etc/clickhouse-server/config.d/"), cluster, dsn, replicas, nativePort, zkServers)
		})
	}
}

// intstrName is a named port.
func intstrName(name string) intstr.IntOrString { return intstr.FromString(name) }

// readComposeConfig reads the file of a compose config.
func readComposeConfig(p *types.Project, name string) ([]byte, error) {
	c, ok := p.Configs[name]
	if !ok || c.File == "" {
		return nil, fmt.Errorf("config %s is no file", name)
	}
	return os.ReadFile(c.File)
}

// mountedConfig is the content of the one ConfigMap key the container
// mounts (subPath) under dir.
func mountedConfig(t *testing.T, r *rendered, spec corev1.PodSpec, c corev1.Container, dir string) []byte {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(m.MountPath, dir) || m.SubPath == "" || path.Dir(m.MountPath)+"/" != dir {
			continue
		}
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 || spec.Volumes[i].ConfigMap == nil || r.configMaps[spec.Volumes[i].ConfigMap.Name] == nil {
			t.Fatalf("%s is mounted from no rendered ConfigMap", m.MountPath)
		}
		return []byte(r.configMaps[spec.Volumes[i].ConfigMap.Name].Data[m.SubPath])
	}
	t.Fatalf("nothing mounted into %s", dir)
	return nil
}

// checkZooKeeperServers: the ensemble's server list names each pod of the
// StatefulSet, with the id the pod takes (its ordinal + 1), on the ports
// the container declares.
func checkZooKeeperServers(t *testing.T, r *rendered, zk *appsv1.StatefulSet, c corev1.Container) {
	t.Helper()
	env := r.envOf(r.podName(zk.Name), c)
	var want []string
	for i := range int(*zk.Spec.Replicas) {
		want = append(want, fmt.Sprintf("server.%d=%s-%d.%s:%d:%d;%d", i+1, zk.Name, i, zk.Spec.ServiceName,
			containerPort(&zk.Spec.Template, intstrName("peer")), containerPort(&zk.Spec.Template, intstrName("election")), containerPort(&zk.Spec.Template, intstrName("client"))))
	}
	if got := strings.Fields(env["ZOO_SERVERS"]); !slices.Equal(got, want) {
		t.Errorf("ZOO_SERVERS %v, want %v", got, want)
	}
	if !slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, "ZOO_MY_ID=$(( ${HOSTNAME##*-} + 1 ))") }) {
		t.Errorf("ZooKeeper args %v: each server's id must be its ordinal + 1", c.Args)
	}
	svc := r.services[zk.Spec.ServiceName]
	if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("ZooKeeper's Service %s must be headless and publish servers before they are ready (the quorum forms from them)", zk.Spec.ServiceName)
	}
}

// TestComposeClickHouseCluster: compose.clickhouse-cluster.yaml on top of
// compose.yaml runs the replicas with the cluster configuration mounted and
// ZooKeeper, and gives every Vigil service the cluster and the replicas.
func TestComposeClickHouseCluster(t *testing.T) {
	p := loadFiles(t, nil, composeVariants[1]...)
	clusters, hosts := map[string]bool{}, map[string]bool{}
	var dsn []string
	for _, name := range vigilServers {
		s := service(t, p, name)
		clusters[env(s, "VIGIL_CLICKHOUSE_CLUSTER")] = true
		dsn = dsnHosts(t, env(s, "VIGIL_CLICKHOUSE_DSN"))
		hosts[strings.Join(dsn, ",")] = true
		for _, h := range dsn {
			host, _, _ := net.SplitHostPort(h)
			if d, ok := s.DependsOn[host]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for the replica %s", name, host)
			}
		}
	}
	if len(clusters) != 1 || clusters[""] || len(hosts) != 1 {
		t.Fatalf("services name clusters %v and servers %v: want one cluster and the same replicas everywhere", clusters, hosts)
	}
	var cluster string
	for c := range clusters {
		cluster = c
	}
	var replicas []chReplica
	var config []byte
	for _, h := range dsn {
		host, _, _ := net.SplitHostPort(h)
		s := service(t, p, host)
		if s.Image != service(t, p, "clickhouse").Image {
			t.Errorf("replica %s runs %s, not the clickhouse service's image", host, s.Image)
		}
		if s.Hostname != host {
			t.Errorf("replica %s: hostname %q, want its service name (how the other reaches it)", host, s.Hostname)
		}
		e := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				e[k] = *v
			}
		}
		replicas = append(replicas, chReplica{host: host, env: e})
		i := slices.IndexFunc(s.Configs, func(c types.ServiceConfigObjConfig) bool {
			return path.Dir(c.Target) == "/etc/clickhouse-server/config.d"
		})
		if i < 0 {
			t.Fatalf("replica %s mounts no configuration into config.d", host)
		}
		b, err := readComposeConfig(p, s.Configs[i].Source)
		if err != nil {
			t.Fatal(err)
		}
		if config != nil && string(b) != string(config) {
			t.Errorf("replica %s mounts another cluster configuration", host)
		}
		config = b
		if d, ok := s.DependsOn["zookeeper"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("replica %s does not wait for ZooKeeper", host)
		}
	}
	checkClusterConfig(t, config, cluster, dsn, replicas, 9000, []string{"zookeeper:2181"})
	zk := service(t, p, "zookeeper")
	if !slices.ContainsFunc(zk.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == "/data" && v.Type == types.VolumeTypeVolume }) {
		t.Error("ZooKeeper keeps its data in no named volume")
	}
}
