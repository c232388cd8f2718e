//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"
)

// Network faults that toxiproxy's own toxics cannot give: a node that
// accepts connections and never answers, a middlebox that forgets idle
// connections, an upstream that stops draining, and a byte counter.

func init() {
	toxics.Register("bytecount", new(countToxic))
	toxics.Register("freeze", new(freezeToxic))
}

// countToxic passes everything through and counts the bytes, over every
// connection of its proxy: evidence that requests reach a node.
type countToxic struct {
	bytes atomic.Int64
}

func (c *countToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case chunk := <-stub.Input:
			if chunk == nil {
				stub.Close()
				return
			}
			c.bytes.Add(int64(len(chunk.Data)))
			stub.Output <- chunk
		}
	}
}

// Bytes is how many bytes passed.
func (c *countToxic) Bytes() int64 { return c.bytes.Load() }

// freezeToxic lets AfterBytes bytes through (over every connection of its
// proxy since it was added) and then stops reading, holding every
// connection open: the peer vanished. The sender's socket buffers fill and
// its writes stop draining, as on a real network when the far side stops
// acknowledging. toxiproxy's timeout toxic differs: it reads and discards,
// so a sender sees its upload complete and then waits for an answer.
type freezeToxic struct {
	AfterBytes int64 `json:"after_bytes"`

	passed  atomic.Int64
	frozeAt atomic.Int64 // unix nanoseconds; 0 until frozen
}

func (f *freezeToxic) Pipe(stub *toxics.ToxicStub) {
	var held *stream.StreamChunk // read but not passed when the toxic froze
	for {
		if f.passed.Load() >= f.AfterBytes {
			f.frozeAt.CompareAndSwap(0, time.Now().UnixNano())
			<-stub.Interrupt
			if held != nil { // removed: let the rest through
				stub.WriteOutput(held, 5*time.Second)
			}
			return
		}
		select {
		case <-stub.Interrupt:
			return
		case chunk := <-stub.Input:
			if chunk == nil {
				stub.Close()
				return
			}
			n := int64(len(chunk.Data))
			room := f.AfterBytes - (f.passed.Add(n) - n)
			if room < n {
				room = max(room, 0)
				held = &stream.StreamChunk{Data: chunk.Data[room:], Timestamp: chunk.Timestamp}
				chunk = &stream.StreamChunk{Data: chunk.Data[:room], Timestamp: chunk.Timestamp}
			}
			if len(chunk.Data) > 0 {
				stub.Output <- chunk
			}
		}
	}
}

// FrozeAt is when the toxic stopped reading (zero until it did).
func (f *freezeToxic) FrozeAt() time.Time {
	if ns := f.frozeAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// countBytes adds a byte counter to the proxy's stream ("upstream": agent
// to Elasticsearch).
func (p *esProxy) countBytes(t *testing.T, stream string) *countToxic {
	t.Helper()
	return addToxic[*countToxic](t, p, fmt.Sprintf(`{"name":"count-%s","type":"bytecount","stream":%q}`, stream, stream))
}

// freezeAfter makes the stream stop draining once n more bytes passed.
func (p *esProxy) freezeAfter(t *testing.T, stream string, n int64) *freezeToxic {
	t.Helper()
	return addToxic[*freezeToxic](t, p, fmt.Sprintf(`{"name":"freeze-%s","type":"freeze","stream":%q,"attributes":{"after_bytes":%d}}`,
		stream, stream, n))
}

// addToxicJSON adds one of toxiproxy's own toxics, described in its JSON.
func (p *esProxy) addToxicJSON(t *testing.T, js string) {
	t.Helper()
	addToxic[toxics.Toxic](t, p, js)
}

// addToxic adds the toxic the JSON describes and returns it.
func addToxic[T toxics.Toxic](t *testing.T, p *esProxy, js string) T {
	t.Helper()
	w, err := p.Toxics.AddToxicJson(strings.NewReader(js))
	if err != nil {
		t.Fatalf("add toxic %s: %v", js, err)
	}
	return w.Toxic.(T)
}

// silentNode accepts connections, reads whatever comes and never writes a
// byte: a hung node behind a live socket, or, under an https:// URL, a TLS
// handshake that never completes. A connection ends when its client closes
// it.
type silentNode struct {
	Addr     string
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	open     atomic.Int64
}

func newSilentNode(t *testing.T) *silentNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentNode{Addr: ln.Addr().String(), ln: ln}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.open.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				io.Copy(io.Discard, c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				s.open.Add(-1)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// idleAction is what a middlebox does to a connection idle too long.
type idleAction int

const (
	// idleDrop forgets the connection: from then on every byte either side
	// sends is swallowed, and nothing is closed (a NAT or stateful firewall
	// that dropped its entry).
	idleDrop idleAction = iota
	// idleClose closes both sides (a load balancer's idle timeout).
	idleClose
)

func (a idleAction) String() string {
	if a == idleDrop {
		return "drop"
	}
	return "close"
}

func (a idleAction) past() string {
	if a == idleDrop {
		return "dropped"
	}
	return "closed"
}

// middlebox is a TCP proxy in front of a node that acts on connections
// idle longer than its timeout.
type middlebox struct {
	URL      string
	upstream string
	idle     time.Duration
	action   idleAction

	ln   net.Listener
	wg   sync.WaitGroup
	quit chan struct{}

	mu    sync.Mutex
	conns map[*mbConn]bool

	accepted  atomic.Int64
	expired   atomic.Int64 // connections dropped or closed for idleness
	swallowed atomic.Int64 // bytes swallowed on dropped connections

	// dormant turns the idle timeout off: a fault that comes and goes
	// (TestChaos). Connections dropped already stay dropped.
	dormant atomic.Bool
}

type mbConn struct {
	client, server net.Conn
	last           atomic.Int64 // unix nanoseconds of the last byte forwarded
	dropped        atomic.Bool
	closeOnce      sync.Once
}

func (c *mbConn) close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.server.Close()
	})
}

func newMiddlebox(t *testing.T, upstream string, idle time.Duration, action idleAction) *middlebox {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &middlebox{URL: "http://" + ln.Addr().String(), upstream: upstream, idle: idle, action: action,
		ln: ln, quit: make(chan struct{}), conns: map[*mbConn]bool{}}
	m.wg.Add(2)
	go m.accept()
	go m.expire()
	t.Cleanup(func() {
		close(m.quit)
		ln.Close()
		m.mu.Lock()
		for c := range m.conns {
			c.close()
		}
		m.mu.Unlock()
		m.wg.Wait()
	})
	return m
}

func (m *middlebox) accept() {
	defer m.wg.Done()
	for {
		client, err := m.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", m.upstream)
		if err != nil {
			client.Close()
			continue
		}
		m.accepted.Add(1)
		c := &mbConn{client: client, server: server}
		c.last.Store(time.Now().UnixNano())
		m.mu.Lock()
		m.conns[c] = true
		m.mu.Unlock()
		m.wg.Add(2)
		go m.pipe(c, client, server, true)
		go m.pipe(c, server, client, false)
	}
}

// pipe copies from one side to the other until the source ends. On a
// dropped connection it swallows what it reads, and only the client going
// away closes it; otherwise either side ending closes both.
func (m *middlebox) pipe(c *mbConn, from, to net.Conn, fromClient bool) {
	defer m.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && c.dropped.Load() {
			m.swallowed.Add(int64(n))
		} else if n > 0 {
			c.last.Store(time.Now().UnixNano())
			if _, werr := to.Write(buf[:n]); werr != nil && err == nil {
				err = werr
			}
		}
		if err != nil {
			if fromClient || !c.dropped.Load() {
				c.close()
				m.mu.Lock()
				delete(m.conns, c)
				m.mu.Unlock()
			}
			return
		}
	}
}

// expire acts on connections idle longer than the timeout.
func (m *middlebox) expire() {
	defer m.wg.Done()
	tick := time.NewTicker(m.idle / 20)
	defer tick.Stop()
	for {
		select {
		case <-m.quit:
			return
		case <-tick.C:
		}
		if m.dormant.Load() {
			continue
		}
		now := time.Now()
		m.mu.Lock()
		for c := range m.conns {
			if c.dropped.Load() || now.Sub(time.Unix(0, c.last.Load())) <= m.idle {
				continue
			}
			m.expired.Add(1)
			if m.action == idleDrop {
				c.dropped.Store(true)
			} else {
				c.close()
				delete(m.conns, c)
			}
		}
		m.mu.Unlock()
	}
}
