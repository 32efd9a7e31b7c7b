// Package ssrf keeps outbound requests made on a tenant's behalf (webhook
// deliveries) away from the deployment's own network: every range of the
// IANA special-purpose address registries (private, loopback, link-local,
// CGNAT, unique-local, translation and tunnelling prefixes that embed an
// IPv4 address, documentation, reserved), multicast, IPv4-compatible IPv6
// and cloud-metadata addresses are refused. The check runs on the resolved IP inside the
// dialer, after DNS, so a name that resolves to a public address when the
// channel is created and to a private one later (DNS rebinding) is still
// refused, and so is any redirect that leads there.
package ssrf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrForbidden is wrapped by every refusal.
var ErrForbidden = errors.New("destination address is not allowed")

// blocked lists the ranges no tenant-controlled request may reach: every
// entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries
// (RFC 6890 and its updates; an entry contained in a larger one is kept
// for the record), plus multicast, the deprecated IPv4-compatible ::/96
// (::7f00:1 is 127.0.0.1 to some stacks) and site-local fec0::/10. Some
// registry entries are globally reachable (AS112, AMT, NAT64): a webhook
// has no business there either, and the allowlist re-opens any of them.
var blocked = mustPrefixes(
	// IANA IPv4 Special-Purpose Address Registry.
	"0.0.0.0/8",          // "this network"
	"0.0.0.0/32",         // "this host on this network"
	"10.0.0.0/8",         // private-use
	"100.64.0.0/10",      // shared address space (CGNAT)
	"127.0.0.0/8",        // loopback
	"169.254.0.0/16",     // link local, cloud metadata
	"172.16.0.0/12",      // private-use
	"192.0.0.0/24",       // IETF protocol assignments
	"192.0.0.0/29",       // IPv4 service continuity prefix
	"192.0.0.8/32",       // IPv4 dummy address
	"192.0.0.9/32",       // port control protocol anycast
	"192.0.0.10/32",      // traversal using relays around NAT anycast
	"192.0.0.170/32",     // NAT64/DNS64 discovery
	"192.0.0.171/32",     // NAT64/DNS64 discovery
	"192.0.2.0/24",       // documentation (TEST-NET-1)
	"192.31.196.0/24",    // AS112-v4
	"192.52.193.0/24",    // AMT
	"192.88.99.0/24",     // deprecated 6to4 relay anycast
	"192.168.0.0/16",     // private-use
	"192.175.48.0/24",    // direct delegation AS112 service
	"198.18.0.0/15",      // benchmarking
	"198.51.100.0/24",    // documentation (TEST-NET-2)
	"203.0.113.0/24",     // documentation (TEST-NET-3)
	"240.0.0.0/4",        // reserved
	"255.255.255.255/32", // limited broadcast
	// IPv4 multicast (its own registry), with MCAST-TEST-NET inside.
	"224.0.0.0/4",
	// IANA IPv6 Special-Purpose Address Registry.
	"::1/128",           // loopback
	"::/128",            // unspecified
	"::ffff:0:0/96",     // IPv4-mapped (checked unmapped as well)
	"64:ff9b::/96",      // IPv4-IPv6 translation (embeds any IPv4)
	"64:ff9b:1::/48",    // local-use IPv4/IPv6 translation
	"100::/64",          // discard-only
	"100:0:0:1::/64",    // dummy IPv6 prefix
	"2001::/23",         // IETF protocol assignments
	"2001::/32",         // TEREDO (embeds any IPv4)
	"2001:1::1/128",     // port control protocol anycast
	"2001:1::2/128",     // traversal using relays around NAT anycast
	"2001:1::3/128",     // DNS-SD service registration protocol anycast
	"2001:2::/48",       // benchmarking
	"2001:3::/32",       // AMT
	"2001:4:112::/48",   // AS112-v6
	"2001:10::/28",      // deprecated ORCHID
	"2001:20::/28",      // ORCHIDv2
	"2001:30::/28",      // drone remote ID protocol entity tags
	"2001:db8::/32",     // documentation
	"2002::/16",         // 6to4 (embeds any IPv4)
	"2620:4f:8000::/48", // direct delegation AS112 service
	"3fff::/20",         // documentation
	"5f00::/16",         // segment routing (SRv6) SIDs
	"fc00::/7",          // unique-local (includes fd00:ec2::254)
	"fe80::/10",         // link-local unicast
	// Outside the registry, still never a webhook's destination.
	"::/96",     // deprecated IPv4-compatible addresses (::7f00:1)
	"fec0::/10", // deprecated site-local
	"ff00::/8",  // multicast
)

// metadata addresses stay refused even when an allowlist covers them:
// nothing a tenant configures should read cloud credentials.
var metadata = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("169.254.170.2"),
	netip.MustParseAddr("fd00:ec2::254"),
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Guard decides which addresses outbound requests may reach.
type Guard struct {
	allow []netip.Prefix
}

// New returns a guard that additionally allows the given CIDRs (for
// self-hosted targets on a private network; tests allow loopback).
func New(allow []netip.Prefix) *Guard {
	return &Guard{allow: append([]netip.Prefix(nil), allow...)}
}

// ParseAllowlist parses a comma- or space-separated list of CIDRs or bare
// IPs, as given in configuration.
func ParseAllowlist(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("allowlist entry %q is not a CIDR or IP", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// CheckAddr reports whether a may be reached.
func (g *Guard) CheckAddr(a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrForbidden)
	}
	a = a.Unmap().WithZone("")
	for _, m := range metadata {
		if a == m {
			return fmt.Errorf("%w: %s is a cloud metadata address", ErrForbidden, a)
		}
	}
	for _, p := range g.allow {
		if p.Contains(a) {
			return nil
		}
	}
	for _, p := range blocked {
		if p.Contains(a) {
			return fmt.Errorf("%w: %s is in %s", ErrForbidden, a, p)
		}
	}
	return nil
}

// Resolver is what CheckURL resolves host names with (*net.Resolver).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckURL validates a target URL at configuration time: http or https,
// a host, no credentials, and every address the host resolves to allowed.
func (g *Guard) CheckURL(ctx context.Context, r Resolver, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("url does not parse: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("url scheme must be http or https")
	}
	if u.User != nil {
		return errors.New("url must not carry credentials")
	}
	host := u.Hostname()
	if host == "" {
		return errors.New("url has no host")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return g.CheckAddr(a)
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("host %s does not resolve: %w", host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("host %s has no addresses", host)
	}
	for _, a := range addrs {
		if err := g.CheckAddr(a); err != nil {
			return fmt.Errorf("host %s: %w", host, err)
		}
	}
	return nil
}

// Control is a net.Dialer Control hook: it runs after name resolution,
// on the exact address about to be connected, and refuses forbidden ones.
func (g *Guard) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable dial address %q", ErrForbidden, address)
	}
	return g.CheckAddr(ap.Addr())
}

// MaxRedirects bounds how many redirects a guarded client follows.
const MaxRedirects = 3

// Client returns an HTTP client whose every connection (including those
// made to follow a redirect) passes the guard. It never uses a proxy from
// the environment, since a proxy would hide the real destination.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.Control}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= MaxRedirects {
				return fmt.Errorf("stopped after %d redirects", MaxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("%w: redirect to scheme %q", ErrForbidden, req.URL.Scheme)
			}
			return nil
		},
	}
}
