package ssrf_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/ssrf"
)

func TestCheckAddr(t *testing.T) {
	g := ssrf.New(nil)
	cases := []struct {
		addr    string
		allowed bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"2606:4700:4700::1111", true},
		{"93.184.216.34", true},
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		{"169.254.169.254", false},
		{"169.254.170.2", false},
		{"169.254.1.1", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"255.255.255.255", false},
		{"240.0.0.1", false},
		{"192.0.2.1", false},
		{"198.18.0.1", false},
		{"::", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"::ffff:10.0.0.1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"fd00:ec2::254", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"ff02::1", false},
		{"64:ff9b::7f00:1", false},
		{"2002:7f00:1::1", false},
		{"2001:db8::1", false},
	}
	for _, c := range cases {
		t.Run(c.addr, func(t *testing.T) {
			err := g.CheckAddr(netip.MustParseAddr(c.addr))
			if c.allowed && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.allowed && !errors.Is(err, ssrf.ErrForbidden) {
				t.Fatalf("allowed, want refused (err %v)", err)
			}
		})
	}
	if err := g.CheckAddr(netip.Addr{}); !errors.Is(err, ssrf.ErrForbidden) {
		t.Fatalf("zero address allowed: %v", err)
	}
}

func TestAllowlist(t *testing.T) {
	allow, err := ssrf.ParseAllowlist("127.0.0.0/8, 10.0.0.5 fd00::/8,169.254.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	g := ssrf.New(allow)
	for _, a := range []string{"127.0.0.1", "10.0.0.5", "fd00::1", "169.254.1.1", "::ffff:127.0.0.1"} {
		if err := g.CheckAddr(netip.MustParseAddr(a)); err != nil {
			t.Errorf("%s refused despite allowlist: %v", a, err)
		}
	}
	for _, a := range []string{"10.0.0.6", "192.168.0.1", "169.254.169.254", "fd00:ec2::254"} {
		if err := g.CheckAddr(netip.MustParseAddr(a)); !errors.Is(err, ssrf.ErrForbidden) {
			t.Errorf("%s allowed, want refused (metadata stays refused): %v", a, err)
		}
	}
	for _, bad := range []string{"nope", "10.0.0.0/99", "1.2.3"} {
		if _, err := ssrf.ParseAllowlist(bad); err == nil {
			t.Errorf("ParseAllowlist(%q) accepted", bad)
		}
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestIANASpecialPurposeRegistries checks the first and last address of
// every entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries
// (iana-ipv4-special-registry, iana-ipv6-special-registry, as updated by
// RFCs through 9780), transcribed here independently of the guard's list,
// and a public neighbour of some of them that must stay reachable.
func TestIANASpecialPurposeRegistries(t *testing.T) {
	registry := []struct{ block, name string }{
		{"0.0.0.0/8", "this network"},
		{"0.0.0.0/32", "this host on this network"},
		{"10.0.0.0/8", "private-use"},
		{"100.64.0.0/10", "shared address space"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link local"},
		{"172.16.0.0/12", "private-use"},
		{"192.0.0.0/24", "IETF protocol assignments"},
		{"192.0.0.0/29", "IPv4 service continuity prefix"},
		{"192.0.0.8/32", "IPv4 dummy address"},
		{"192.0.0.9/32", "port control protocol anycast"},
		{"192.0.0.10/32", "traversal using relays around NAT anycast"},
		{"192.0.0.170/32", "NAT64/DNS64 discovery"},
		{"192.0.0.171/32", "NAT64/DNS64 discovery"},
		{"192.0.2.0/24", "documentation (TEST-NET-1)"},
		{"192.31.196.0/24", "AS112-v4"},
		{"192.52.193.0/24", "AMT"},
		{"192.88.99.0/24", "deprecated (6to4 relay anycast)"},
		{"192.168.0.0/16", "private-use"},
		{"192.175.48.0/24", "direct delegation AS112 service"},
		{"198.18.0.0/15", "benchmarking"},
		{"198.51.100.0/24", "documentation (TEST-NET-2)"},
		{"203.0.113.0/24", "documentation (TEST-NET-3)"},
		{"240.0.0.0/4", "reserved"},
		{"255.255.255.255/32", "limited broadcast"},
		{"::1/128", "loopback address"},
		{"::/128", "unspecified address"},
		{"::ffff:0:0/96", "IPv4-mapped address"},
		{"64:ff9b::/96", "IPv4-IPv6 translation"},
		{"64:ff9b:1::/48", "IPv4-IPv6 translation (local use)"},
		{"100::/64", "discard-only address block"},
		{"100:0:0:1::/64", "dummy IPv6 prefix"},
		{"2001::/23", "IETF protocol assignments"},
		{"2001::/32", "TEREDO"},
		{"2001:1::1/128", "port control protocol anycast"},
		{"2001:1::2/128", "traversal using relays around NAT anycast"},
		{"2001:1::3/128", "DNS-SD service registration protocol anycast"},
		{"2001:2::/48", "benchmarking"},
		{"2001:3::/32", "AMT"},
		{"2001:4:112::/48", "AS112-v6"},
		{"2001:10::/28", "deprecated (previously ORCHID)"},
		{"2001:20::/28", "ORCHIDv2"},
		{"2001:30::/28", "drone remote ID protocol entity tags"},
		{"2001:db8::/32", "documentation"},
		{"2002::/16", "6to4"},
		{"2620:4f:8000::/48", "direct delegation AS112 service"},
		{"3fff::/20", "documentation"},
		{"5f00::/16", "segment routing (SRv6) SIDs"},
		{"fc00::/7", "unique-local"},
		{"fe80::/10", "link-local unicast"},
		// Not registry entries, but refused all the same.
		{"::/96", "IPv4-compatible (deprecated)"},
		{"224.0.0.0/4", "IPv4 multicast"},
		{"ff00::/8", "IPv6 multicast"},
	}
	g := ssrf.New(nil)
	for _, r := range registry {
		p := netip.MustParsePrefix(r.block)
		for _, a := range []netip.Addr{p.Addr(), lastAddr(p)} {
			t.Run(r.block+" "+a.String(), func(t *testing.T) {
				if err := g.CheckAddr(a); !errors.Is(err, ssrf.ErrForbidden) {
					t.Fatalf("%s (%s) allowed: %v", a, r.name, err)
				}
			})
		}
	}
	// Just outside some blocks: public addresses stay reachable, so the
	// list is not simply "refuse everything".
	for _, s := range []string{"192.0.1.1", "192.31.197.1", "198.20.0.1", "223.255.255.254", "2001:200::1", "2003::1", "2620:4f:8001::1", "1::1", "2600::1"} {
		if err := g.CheckAddr(netip.MustParseAddr(s)); err != nil {
			t.Errorf("public %s refused: %v", s, err)
		}
	}
}

// fakeResolver maps names to addresses, standing in for DNS that a test
// cannot control (a real resolver would be equally trusted by CheckURL).
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ss, ok := f[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

func TestCheckURL(t *testing.T) {
	g := ssrf.New(nil)
	r := fakeResolver{
		"hooks.example.com": {"93.184.216.34"},
		"metadata.internal": {"169.254.169.254"},
		"mixed.example.com": {"93.184.216.34", "10.0.0.1"},
		"v6local.example":   {"fd00::1"},
	}
	cases := []struct {
		url string
		ok  bool
	}{
		{"https://hooks.example.com/x", true},
		{"http://hooks.example.com:8080/x", true},
		{"https://93.184.216.34/x", true},
		{"https://metadata.internal/latest", false},
		{"https://mixed.example.com/", false},
		{"https://v6local.example/", false},
		{"http://127.0.0.1:9000/", false},
		{"http://[::1]/", false},
		{"http://[fd00:ec2::254]/", false},
		{"http://169.254.169.254/latest/meta-data", false},
		{"http://0.0.0.0/", false},
		{"http://100.100.100.200/", false},
		{"http://[::7f00:1]/", false},
		{"http://[::a9fe:a9fe]/latest", false},
		{"http://[64:ff9b::a9fe:a9fe]/", false},
		{"http://[2001::5efe:7f00:1]/", false},
		{"ftp://hooks.example.com/", false},
		{"file:///etc/passwd", false},
		{"https://user:pw@hooks.example.com/", false},
		{"https:///nohost", false},
		{"https://unknown.example/", false},
		{"::not a url", false},
	}
	for _, c := range cases {
		t.Run(c.url, func(t *testing.T) {
			err := g.CheckURL(context.Background(), r, c.url)
			if c.ok != (err == nil) {
				t.Fatalf("CheckURL = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

// TestClientRefusesAtDialTime shows that the check happens on the address
// actually dialed: a loopback receiver is unreachable without the
// allowlist, reachable with it, and a redirect from an allowed receiver
// to a forbidden address is not followed.
func TestClientRefusesAtDialTime(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer ok.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	}))
	defer redirect.Close()

	strict := ssrf.New(nil).Client(2 * time.Second)
	if _, err := strict.Get(ok.URL); !errors.Is(err, ssrf.ErrForbidden) {
		t.Fatalf("loopback reached without allowlist: %v", err)
	}
	// A host name resolving to loopback is refused the same way.
	_, port, _ := net.SplitHostPort(ok.Listener.Addr().String())
	if _, err := strict.Get("http://localhost:" + port); !errors.Is(err, ssrf.ErrForbidden) {
		t.Fatalf("localhost reached without allowlist: %v", err)
	}

	allow, _ := ssrf.ParseAllowlist("127.0.0.0/8,::1")
	lenient := ssrf.New(allow).Client(2 * time.Second)
	resp, err := lenient.Get(ok.URL)
	if err != nil {
		t.Fatalf("allowlisted loopback: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := lenient.Get(redirect.URL); !errors.Is(err, ssrf.ErrForbidden) {
		t.Fatalf("redirect to metadata followed: %v", err)
	}
}

// FuzzCheckURL: no input panics, and whatever passes names an allowed
// literal address or a resolvable host.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://hooks.example.com/x", "http://127.0.0.1/", "http://[::ffff:169.254.169.254]/", "http://0x7f.1/", "http://2130706433/", "", "http://[fe80::1%25eth0]/"} {
		f.Add(s)
	}
	g := ssrf.New(nil)
	r := fakeResolver{"hooks.example.com": {"93.184.216.34"}}
	f.Fuzz(func(t *testing.T, raw string) {
		if err := g.CheckURL(context.Background(), r, raw); err != nil {
			return
		}
		// Passed: the dial-time check must agree for literal addresses.
		if a, err := netip.ParseAddr(hostOf(raw)); err == nil {
			if g.CheckAddr(a) != nil {
				t.Fatalf("%q passed CheckURL but its address is forbidden", raw)
			}
		}
	})
}

func hostOf(raw string) string {
	req, err := http.NewRequest("GET", raw, nil)
	if err != nil {
		return ""
	}
	return req.URL.Hostname()
}
