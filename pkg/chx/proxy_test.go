package chx_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards connections from a local port to target. Stop
// simulates an outage (the listener and every live connection are closed,
// so new dials are refused and open ones break); Start ends it on the same
// port, so clients configured with Addr reconnect without being told.
type tcpProxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	gen   int // bumped by Stop; connections of an older generation are closed
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startProxy listens on 127.0.0.1:0 and forwards to target until the test
// ends.
func startProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &tcpProxy{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.Stop)
	return p
}

// Addr is the proxy's host:port, stable across Stop and Start.
func (p *tcpProxy) Addr() string { return p.addr }

// Start listens again on the proxy's port. It retries briefly in case the
// kernel has not released the port yet.
func (p *tcpProxy) Start() {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.addr)
		if err == nil {
			p.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("proxy re-listen on %s: %v", p.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop closes the listener and every live connection, and waits for the
// forwarding goroutines to end. Stopping a stopped proxy does nothing.
func (p *tcpProxy) Stop() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.gen++
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	gen := p.gen
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					p.t.Logf("proxy accept: %v", err)
				}
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.forward(gen, c)
			}()
		}
	}()
}

// track registers c unless the proxy was stopped since generation gen.
func (p *tcpProxy) track(gen int, c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.gen {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *tcpProxy) forward(gen int, client net.Conn) {
	if !p.track(gen, client) {
		return
	}
	upstream, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.untrack(client)
		return
	}
	if !p.track(gen, upstream) {
		p.untrack(client)
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	<-done
	// One direction ended: close both so the other copy ends too.
	p.untrack(client, upstream)
	<-done
}
