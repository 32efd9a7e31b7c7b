package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// ClusterName is the remote_servers name of a test cluster.
const ClusterName = "vigil"

// zkServer is where Debian's zookeeper package puts its start script.
const zkServer = "/usr/share/zookeeper/bin/zkServer.sh"

// Cluster is a ClickHouse cluster on loopback for one test: one shard of
// replicas, each a clickhouse-server process with its own data directory,
// ports and configuration, coordinated by a ZooKeeper of its own (Debian's
// zookeeper package). Both are installed when missing
// (scripts/apt-install.sh). Everything is stopped when the test ends.
type Cluster struct {
	// Name is the cluster's name in remote_servers (ClusterName).
	Name     string
	Replicas []*Replica

	t   testing.TB
	dir string
	zk  *process
}

// Replica is one clickhouse-server of a Cluster.
type Replica struct {
	// Name is the replica's {replica} macro.
	Name string
	// TCPPort is the native protocol port, HTTPPort the HTTP one.
	TCPPort, HTTPPort, interPort int

	dir    string
	config string
	proc   *process
}

// Addr is the replica's native protocol address.
func (r *Replica) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.TCPPort) }

// process is a server the test started, in its own process group so that
// a kill reaches whatever its start script spawned.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(name string, args []string, dir string, env ...string) (*process, error) {
	out, err := os.Create(filepath.Join(dir, "out.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = out.Close(); close(p.done) }()
	return p, nil
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// StartCluster installs ZooKeeper and clickhouse-server if missing, starts
// ZooKeeper and n replicas of one shard, and returns once every replica
// answers and reaches ZooKeeper.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	install(t)
	c := &Cluster{Name: ClusterName, t: t, dir: t.TempDir()}
	t.Cleanup(c.stop)
	ports := freePorts(t, 1+3*n)
	zkPort := ports[0]
	zkDir := filepath.Join(c.dir, "zk")
	if err := os.MkdirAll(filepath.Join(zkDir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	zkCfg := filepath.Join(zkDir, "zoo.cfg")
	// A short tick keeps session timeouts (2–20 ticks) short, so a
	// killed replica's session ends soon; the admin server would take
	// port 8080.
	writeFile(t, zkCfg, fmt.Sprintf("tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"+
		"admin.enableServer=false\n4lw.commands.whitelist=ruok\nmaxClientCnxns=0\n", filepath.Join(zkDir, "data"), zkPort))
	var err error
	if c.zk, err = start(zkServer, []string{"start-foreground", zkCfg}, zkDir, "ZOO_LOG_DIR="+zkDir); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyWithin(t, 60*time.Second, fmt.Sprintf("zookeeper to answer ruok on port %d", zkPort), func() (bool, string) {
		select {
		case <-c.zk.done:
			t.Fatalf("zookeeper exited: %s", tail(filepath.Join(zkDir, "out.log")))
		default:
		}
		if err := zkReady(zkPort); err != nil {
			return false, err.Error()
		}
		return true, ""
	})

	users := filepath.Join(c.dir, "users.xml")
	writeFile(t, users, usersXML)
	for i := range n {
		c.Replicas = append(c.Replicas, &Replica{
			Name: string(rune('a' + i)), TCPPort: ports[1+3*i], HTTPPort: ports[2+3*i], interPort: ports[3+3*i],
		})
	}
	var shard strings.Builder
	for _, r := range c.Replicas {
		fmt.Fprintf(&shard, "<replica><host>127.0.0.1</host><port>%d</port></replica>", r.TCPPort)
	}
	for _, r := range c.Replicas {
		r.dir = filepath.Join(c.dir, r.Name)
		for _, d := range []string{"data", "tmp", "user_files"} {
			if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		r.config = filepath.Join(r.dir, "config.xml")
		writeFile(t, r.config, fmt.Sprintf(serverXML, r.dir, r.dir, r.TCPPort, r.HTTPPort, r.interPort, r.dir, r.dir, r.dir, users,
			zkPort, r.Name, c.Name, shard.String()))
	}
	for i := range c.Replicas {
		c.launch(i)
	}
	for i := range c.Replicas {
		c.waitReady(i)
	}
	return c
}

// DSN is a DSN of database db listing the replicas in the given order
// (all of them, in index order, when none is given).
func (c *Cluster) DSN(db string, order ...int) string {
	if len(order) == 0 {
		for i := range c.Replicas {
			order = append(order, i)
		}
	}
	addrs := make([]string, len(order))
	for k, i := range order {
		addrs[k] = c.Replicas[i].Addr()
	}
	return "clickhouse://" + strings.Join(addrs, ",") + "/" + db
}

// NewDB names a fresh database (created by the first OpenCluster of it)
// and returns its name.
func (c *Cluster) NewDB() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "vigil_test_" + hex.EncodeToString(b[:])
}

// Open connects to database db on replica i alone, for the cluster; the
// connection closes when the test ends.
func (c *Cluster) Open(t testing.TB, db string, i int) driver.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := chx.OpenCluster(ctx, c.DSN(db, i), c.Name)
	if err != nil {
		t.Fatalf("open %s on replica %s: %v", db, c.Replicas[i].Name, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Kill kills replica i as kill -9 does.
func (c *Cluster) Kill(i int) {
	c.Replicas[i].proc.kill()
}

// Restart starts replica i again on its data and ports and waits until it
// answers.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.launch(i)
	c.waitReady(i)
}

func (c *Cluster) launch(i int) {
	c.t.Helper()
	r := c.Replicas[i]
	p, err := start(clickhouseServer(), []string{"--config-file=" + r.config}, r.dir)
	if err != nil {
		c.t.Fatal(err)
	}
	r.proc = p
}

// waitReady waits until replica i answers and reaches ZooKeeper.
func (c *Cluster) waitReady(i int) {
	c.t.Helper()
	r := c.Replicas[i]
	client := &http.Client{Timeout: 2 * time.Second}
	testkit.EventuallyWithin(c.t, 90*time.Second, "clickhouse replica "+r.Name+" to answer and reach zookeeper", func() (bool, string) {
		select {
		case <-r.proc.done:
			c.t.Fatalf("clickhouse-server %s exited: %s", r.Name, tail(filepath.Join(r.dir, "server.err.log")))
		default:
		}
		resp, err := client.Post(fmt.Sprintf("http://127.0.0.1:%d/", r.HTTPPort), "text/plain",
			strings.NewReader("SELECT count() FROM system.zookeeper WHERE path = '/'"))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return false, fmt.Sprintf("HTTP %d %.300s", resp.StatusCode, b)
		}
		return true, ""
	})
}

func (c *Cluster) stop() {
	var wg sync.WaitGroup
	for _, r := range c.Replicas {
		if r.proc != nil {
			wg.Go(r.proc.kill)
		}
	}
	wg.Wait()
	if c.zk != nil {
		c.zk.kill()
	}
	if c.t.Failed() {
		for _, r := range c.Replicas {
			c.t.Logf("replica %s's error log ends with:\n%s", r.Name, tail(filepath.Join(r.dir, "server.err.log")))
		}
	}
}

// install installs Debian's zookeeper and clickhouse-server when missing.
func install(t testing.TB) {
	t.Helper()
	script, err := aptInstall()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(zkServer); err != nil {
		// zooinspector is the one command the package puts on PATH.
		if out, err := exec.Command("bash", script, "zooinspector", "zookeeper").CombinedOutput(); err != nil {
			t.Fatalf("install zookeeper: %v\n%s", err, out)
		}
	}
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		if out, err := exec.Command("bash", script, "clickhouse-server", "clickhouse-server").CombinedOutput(); err != nil {
			t.Fatalf("install clickhouse-server: %v\n%s", err, out)
		}
	}
}

func clickhouseServer() string {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p
	}
	return "/usr/bin/clickhouse-server"
}

// aptInstall finds scripts/apt-install.sh above the working directory
// (a test runs in its package's directory).
func aptInstall() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "apt-install.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/apt-install.sh not found above the working directory")
		}
		dir = parent
	}
}

func zkReady(port int) error {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("ruok")); err != nil {
		return err
	}
	b := make([]byte, 4)
	if _, err := conn.Read(b); err != nil {
		return err
	}
	if string(b) != "imok" {
		return fmt.Errorf("zookeeper answered %q", b)
	}
	return nil
}

// freePorts reserves n distinct loopback ports (released just before the
// servers bind them).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tail is the end of a log file, for a failure message.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

const usersXML = `<?xml version="1.0"?>
<yandex>
  <profiles><default><load_balancing>in_order</load_balancing></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`

// serverXML is one replica's configuration: its ports and directories,
// ZooKeeper, its macros (one shard), the cluster (internal_replication:
// a Distributed table writes each row to one replica, which replicates
// it) and the ON CLUSTER task queue.
const serverXML = `<?xml version="1.0"?>
<yandex>
  <logger><level>information</level><log>%s/server.log</log><errorlog>%s/server.err.log</errorlog><size>10M</size><count>2</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%d</tcp_port>
  <http_port>%d</http_port>
  <interserver_http_port>%d</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>%s/data/</path>
  <tmp_path>%s/tmp/</tmp_path>
  <user_files_path>%s/user_files/</user_files_path>
  <users_config>%s</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
  <zookeeper><node><host>127.0.0.1</host><port>%d</port></node><session_timeout_ms>5000</session_timeout_ms></zookeeper>
  <macros><shard>1</shard><replica>%s</replica></macros>
  <remote_servers><%[12]s><shard><internal_replication>true</internal_replication>%[13]s</shard></%[12]s></remote_servers>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
`
