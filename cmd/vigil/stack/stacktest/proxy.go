package stacktest

import (
	"net/url"
	"testing"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/tcpproxy"
)

// Proxy forwards a loopback address to a target (see package tcpproxy).
type Proxy = tcpproxy.Proxy

// NewProxy forwards a fresh loopback address to target until the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := tcpproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// ProxiedClickHouse creates the test's database and puts a Proxy between
// it and the stack: it returns the database, the proxy and the DSN that
// goes through it. Stopping the proxy is ClickHouse going away.
func ProxiedClickHouse(t testing.TB) (*chtest.DB, *Proxy, string) {
	t.Helper()
	db := chtest.New(t)
	u, err := url.Parse(chtest.DSN())
	if err != nil {
		t.Fatalf("clickhouse DSN %q: %v", chtest.DSN(), err)
	}
	p := NewProxy(t, u.Host)
	dsn := u.Scheme + "://" + p.Addr() + "/" + db.Name
	if u.RawQuery != "" {
		dsn += "?" + u.RawQuery
	}
	return db, p, dsn
}
