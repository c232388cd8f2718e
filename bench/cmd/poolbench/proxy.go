package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proxy is a TCP proxy in front of Elasticsearch that the benchmark
// controls and that counts what reaches it. Stop closes its listener and
// every connection through it (the node refuses connections); Start
// listens again on the same address. It counts the bulk requests and the
// GET / probes that arrive (by their request lines in the client's byte
// stream), so a benchmark can tell when the first bulk request reached it
// after it came back. Modes disturb what passes:
//
//	pass         forward both ways
//	blackhole    read and discard whatever a client sends, answer nothing,
//	             keep connections open: a node that takes requests and never
//	             answers
//	stallUpload  forward stallAfter more bytes of each connection, then stop
//	             reading it: a node that stops reading mid-upload
//
// and idleBlackhole, when set, drops a connection silently once it carried
// no data for that long, as a middlebox that forgot its state: from then
// on what the client sends is discarded, nothing comes back, and the
// connection stays open.
type proxy struct {
	name          string
	upstream      string
	addr          string
	rcvBuf        int           // SO_RCVBUF of accepted connections; 0: the kernel's
	idleBlackhole time.Duration // 0: never

	mode       atomic.Int32
	stallAfter atomic.Int64

	accepted, bulks, gets atomic.Int64
	blackholed            atomic.Int64 // connections dropped by idleBlackhole
	stallAt               atomic.Int64 // unix ns when a connection first stopped being read

	mu        sync.Mutex
	ln        net.Listener
	links     map[*link]struct{}
	returned  time.Time     // when Start last listened
	firstBulk time.Time     // the first bulk request after returned
	bulkCh    chan struct{} // closed at firstBulk
	wg        sync.WaitGroup
}

const (
	modePass int32 = iota
	modeBlackhole
	modeStallUpload
)

var (
	bulkLine = []byte("POST /_bulk")
	getRoot  = []byte("GET / HTTP/")
)

// newProxy listens on a free port below the kernel's ephemeral range, so
// that no outgoing connection takes the port while the proxy is stopped.
// newProxyPair starts two proxies to upstream as nodes "<prefix>-A" and
// "<prefix>-B"; A's receive buffer is rcvBufA (0: the system's). The caller
// closes both.
func newProxyPair(prefix, upstream string, rcvBufA int) (a, b *proxy, err error) {
	if a, err = newProxy(prefix+"-A", upstream, rcvBufA, 0); err != nil {
		return nil, nil, err
	}
	if b, err = newProxy(prefix+"-B", upstream, 0, 0); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

func newProxy(name, upstream string, rcvBuf int, idle time.Duration) (*proxy, error) {
	p := &proxy{name: name, upstream: upstream, rcvBuf: rcvBuf, idleBlackhole: idle, links: map[*link]struct{}{}}
	ln, err := listenLowPort(p.listenConfig())
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	p.addr = ln.Addr().String()
	p.startOn(ln)
	return p, nil
}

func (p *proxy) URL() string { return "http://" + p.addr }

func (p *proxy) listenConfig() *net.ListenConfig {
	lc := &net.ListenConfig{}
	if p.rcvBuf > 0 {
		// Set on the listener, inherited by accepted sockets: small
		// enough that a connection the proxy stops reading fills up,
		// instead of the kernel's autotuned buffer taking the whole body.
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, p.rcvBuf) })
			return errors.Join(err, serr)
		}
	}
	return lc
}

// listenLowPort listens on a random free port in the 12,000 ports below
// the ephemeral range.
func listenLowPort(lc *net.ListenConfig) (net.Listener, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 13000 {
				low = n
			}
		}
	}
	var last error
	for range 100 {
		port := low - 12000 + rand.IntN(11999)
		ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, fmt.Errorf("no free port below %d: %w", low, last)
}

func (p *proxy) startOn(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.returned, p.firstBulk, p.bulkCh = time.Now(), time.Time{}, make(chan struct{})
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.serve(ln)
	}()
}

// Stop closes the listener and every connection: the node refuses.
func (p *proxy) Stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.CloseAll()
}

// Start listens again on the same address and returns when it does.
func (p *proxy) Start() (time.Time, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		ln, err := p.listenConfig().Listen(context.Background(), "tcp", p.addr)
		if err == nil {
			p.startOn(ln)
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.returned, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("proxy %s: listen again on %s: %w", p.name, p.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops the proxy and waits for its goroutines.
func (p *proxy) Close() {
	p.Stop()
	p.wg.Wait()
}

// CloseAll closes every connection through the proxy; it keeps listening.
func (p *proxy) CloseAll() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// SetMode switches what the proxy does with data from now on.
func (p *proxy) SetMode(m int32, stallAfter int64) {
	p.stallAfter.Store(stallAfter)
	p.stallAt.Store(0)
	p.mode.Store(m)
}

// waitFirstBulk waits up to limit for the first bulk request since the
// last Start and returns how long after the Start it arrived.
func (p *proxy) waitFirstBulk(ctx context.Context, limit time.Duration) (time.Duration, bool) {
	p.mu.Lock()
	ch, since := p.bulkCh, p.returned
	p.mu.Unlock()
	t := time.NewTimer(time.Until(since.Add(limit)))
	defer t.Stop()
	select {
	case <-ch:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.firstBulk.Sub(since), true
	case <-t.C:
	case <-ctx.Done():
	}
	return limit, false
}

func (p *proxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

// link is one client connection and its connection to Elasticsearch.
type link struct {
	client, server net.Conn
	lastData       atomic.Int64 // unix ns of the last byte carried either way
	dropped        atomic.Bool  // black-holed by idleBlackhole
	done           chan struct{}
	once           sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		l.server.Close()
	})
}

func (p *proxy) handle(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	l := &link{client: c, server: s, done: make(chan struct{})}
	l.lastData.Store(time.Now().UnixNano())
	p.mu.Lock()
	if p.ln == nil { // stopped meanwhile
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	down := make(chan struct{})
	go func() {
		defer close(down)
		p.pumpDown(l)
	}()
	p.pumpUp(l)
	l.close()
	<-down
}

// pumpUp carries the client's bytes to Elasticsearch, counting request
// lines, until the client closes.
func (p *proxy) pumpUp(l *link) {
	buf := make([]byte, 32<<10)
	var tail []byte
	var forwarded int64
	stallBase := int64(-1)
	for {
		if p.mode.Load() == modeStallUpload {
			if stallBase < 0 {
				stallBase = forwarded
			}
			if forwarded-stallBase >= p.stallAfter.Load() {
				p.stallAt.CompareAndSwap(0, time.Now().UnixNano())
				<-l.done // stop reading; the connection stays open
				return
			}
		} else {
			stallBase = -1
		}
		n, err := l.client.Read(buf)
		if n > 0 {
			now := time.Now()
			tail = p.count(tail, buf[:n], now)
			drop := p.mode.Load() == modeBlackhole || l.dropped.Load()
			if !drop && p.idleBlackhole > 0 && now.Sub(time.Unix(0, l.lastData.Load())) >= p.idleBlackhole {
				// The middlebox forgot the connection: from now on it
				// goes nowhere, silently.
				l.dropped.Store(true)
				p.blackholed.Add(1)
				l.server.Close()
				drop = true
			}
			if !drop {
				if _, werr := l.server.Write(buf[:n]); werr != nil {
					return
				}
				forwarded += int64(n)
				l.lastData.Store(now.UnixNano())
			}
		}
		if err != nil {
			return
		}
	}
}

// pumpDown carries Elasticsearch's answers to the client. When the server
// side ends on a connection the proxy dropped, the client side stays open.
func (p *proxy) pumpDown(l *link) {
	buf := make([]byte, 32<<10)
	for {
		n, err := l.server.Read(buf)
		if n > 0 && p.mode.Load() != modeBlackhole && !l.dropped.Load() {
			if _, werr := l.client.Write(buf[:n]); werr != nil {
				l.close()
				return
			}
			l.lastData.Store(time.Now().UnixNano())
		}
		if err != nil {
			if !l.dropped.Load() && p.mode.Load() != modeBlackhole {
				l.close()
			}
			return
		}
	}
}

// count finds request lines in the client's stream; tail is the end of the
// previous read, so that a line split across reads counts once.
func (p *proxy) count(tail, b []byte, now time.Time) []byte {
	joined := append(tail, b...)
	for k, pat := range [][]byte{bulkLine, getRoot} {
		for i := 0; ; {
			j := bytes.Index(joined[i:], pat)
			if j < 0 {
				break
			}
			// The tail is shorter than a pattern: a match ending in it was
			// not complete before, so every match here is new.
			if end := i + j + len(pat); end > len(tail) {
				if k == 0 {
					p.bulks.Add(1)
					p.noteBulk(now)
				} else {
					p.gets.Add(1)
				}
			}
			i += j + 1
		}
	}
	keep := len(bulkLine) - 1
	if len(joined) < keep {
		keep = len(joined)
	}
	return append(tail[:0:0], joined[len(joined)-keep:]...)
}

func (p *proxy) noteBulk(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.firstBulk.IsZero() && !now.Before(p.returned) {
		p.firstBulk = now
		close(p.bulkCh)
	}
}
