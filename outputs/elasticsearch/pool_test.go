package elasticsearch_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// poolOutput is an output over several nodes with short pool timings.
func poolOutput(t *testing.T, urls []string, mutate func(*elasticsearch.Config)) *elasticsearch.Output {
	t.Helper()
	cfg := elasticsearch.DefaultConfig()
	cfg.URLs = urls
	cfg.Index = "test"
	cfg.RequestTimeout = 10 * time.Second
	cfg.StallTimeout = 300 * time.Millisecond
	cfg.HedgeAfter = 200 * time.Millisecond
	cfg.ProbeInterval = 50 * time.Millisecond
	cfg.ResurrectMax = 200 * time.Millisecond
	cfg.DialTimeout = time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	out, err := elasticsearch.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return out
}

// silentNode accepts connections and reads whatever comes, never
// answering: a node or proxy that stopped forwarding but keeps its
// connections open. It counts the connections it accepted.
func silentNode(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String(), &accepted
}

// freePort returns an address nothing listens on (yet).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func nodeState(out *elasticsearch.Output, url string) elasticsearch.NodeStatus {
	nodes, _ := out.Nodes()
	for _, n := range nodes {
		if n.URL == url {
			return n
		}
	}
	return elasticsearch.NodeStatus{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sendAll(t *testing.T, out *elasticsearch.Output, n int) []elasticsearch.ItemResult {
	t.Helper()
	var values []string
	for range n {
		values = append(values, `{"m":"x"}`)
	}
	res, err := out.Send(context.Background(), records(values...))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	for i, r := range res {
		if r.Outcome != elasticsearch.Delivered {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	return res
}

// A refused node is marked dead and the request goes to the other node at
// once; the node comes back within a few probe intervals of its return.
func TestPoolRefusedNodeRevived(t *testing.T) {
	srv := estest.New(t)
	down := freePort(t)
	out := poolOutput(t, []string{"http://" + down, srv.URL}, nil)
	for range 4 { // round robin reaches the refused node
		sendAll(t, out, 3)
	}
	if st := nodeState(out, "http://"+down); st.State != "dead" || !strings.Contains(st.Reason, "connect") {
		t.Fatalf("refused node: %+v", st)
	}
	if n := len(srv.Docs("test")); n != 3 { // the same ids each time: 409s after the first
		t.Fatalf("%d documents", n)
	}
	ln, err := net.Listen("tcp", down)
	if err != nil {
		t.Fatal(err)
	}
	back := estest.Serve(t, ln)
	waitFor(t, "the node back in rotation", func() bool { return nodeState(out, "http://"+down).State == "alive" })
	_, stats := out.Nodes()
	if stats.Deaths != 1 || stats.Resurrections != 1 || stats.Probes["full_ok"] != 1 {
		t.Fatalf("stats %+v", stats)
	}
	for range 4 {
		sendAll(t, out, 3)
	}
	if back.Requests() == 0 {
		t.Fatal("no request reached the revived node")
	}
}

// A request whose caller gives up says nothing about the node: it stays
// alive.
func TestPoolCallerDeadlineIsNotTheNodes(t *testing.T) {
	url, _ := silentNode(t)
	out := poolOutput(t, []string{url}, func(c *elasticsearch.Config) { c.HedgeAfter = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := out.Send(ctx, records(`{}`)); err == nil {
		t.Fatal("a silent node answered")
	}
	if st := nodeState(out, url); st.State != "alive" || st.Failures != 0 {
		t.Fatalf("after the caller's deadline: %+v", st)
	}
}

// A node that accepts a request and never answers is hedged: first on a
// fresh connection, then on the other node, which answers; the silent node
// is marked dead. Nothing waits for request_timeout.
func TestPoolSilentNodeHedged(t *testing.T) {
	srv := estest.New(t)
	silent, _ := silentNode(t)
	out := poolOutput(t, []string{silent, srv.URL}, nil)
	start := time.Now()
	for range 4 {
		sendAll(t, out, 3)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("4 sends took %s: hedging did not work", took)
	}
	st := nodeState(out, silent)
	_, stats := out.Nodes()
	if st.State != "dead" || stats.HedgeWins == 0 {
		t.Fatalf("silent node %+v; stats %+v", st, stats)
	}
	// Its probes connect but are never answered: it stays dead.
	waitFor(t, "a failed full probe", func() bool { _, s := out.Nodes(); return s.Probes["full_failed"] > 0 })
	if st := nodeState(out, silent); st.State != "dead" {
		t.Fatalf("revived without an answer: %+v", st)
	}
}

// An upload that stops draining is a stall: caught by the watchdog within
// stall_timeout, its connection closed, the request sent to the other node.
func TestPoolUploadStallCaught(t *testing.T) {
	srv := estest.New(t)
	// A listener that accepts and never reads: the kernel's buffers fill
	// and the upload stops.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	stuck := "http://" + ln.Addr().String()
	out := poolOutput(t, []string{stuck, srv.URL}, func(c *elasticsearch.Config) {
		c.HedgeAfter = 0 // only the watchdog
		c.MaxBulkBytes = 64 << 20
	})
	big := strings.Repeat("y", 12<<20) // more than loopback's socket buffers hold
	for range 2 {
		res, err := out.Send(context.Background(), records(`{"big":"`+big+`"}`))
		if err != nil || res[0].Outcome != elasticsearch.Delivered {
			t.Fatalf("send: %v %+v", err, res)
		}
	}
	_, stats := out.Nodes()
	if st := nodeState(out, stuck); st.State != "dead" || stats.Stalls["upload"] != 1 || !strings.Contains(st.Reason, "stall (upload)") {
		t.Fatalf("stuck node %+v; stats %+v", st, stats)
	}
}

// While every node is dead, senders wait (no spinning) and probes go on;
// a node's return lets them through.
func TestPoolAllDeadSendersWait(t *testing.T) {
	down := freePort(t)
	out := poolOutput(t, []string{"http://" + down}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := out.Send(ctx, records(`{}`)); err == nil {
		t.Fatal("sent to a refused node")
	}
	// The node is dead now: a send waits for it.
	sent := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := out.Send(ctx, records(`{}`))
		if err == nil && res[0].Outcome != elasticsearch.Delivered {
			err = io.ErrUnexpectedEOF
		}
		sent <- err
	}()
	time.Sleep(300 * time.Millisecond)
	_, stats := out.Nodes()
	if probes := stats.Probes["connect_failed"]; probes > 20 {
		t.Fatalf("%d connect probes in 300ms at a 50ms interval: probing spins", probes)
	}
	select {
	case err := <-sent:
		t.Fatalf("a send returned while every node was dead: %v", err)
	default:
	}
	ln, err := net.Listen("tcp", down)
	if err != nil {
		t.Fatal(err)
	}
	estest.Serve(t, ln)
	if err := <-sent; err != nil {
		t.Fatalf("send after the node came back: %v", err)
	}
}

// A pooled connection that a middlebox silently dropped (idle too long):
// the request on it goes unanswered, a hedge on a fresh connection to the
// same node answers, and the node is not marked dead.
func TestPoolDroppedIdleConnectionHedgedOnSameNode(t *testing.T) {
	srv := estest.New(t)
	mb := newMiddlebox(t, strings.TrimPrefix(srv.URL, "http://"))
	url := "http://" + mb.addr()
	out := poolOutput(t, []string{url}, nil)
	sendAll(t, out, 3)
	mb.dropExisting() // the pooled connection now leads nowhere
	start := time.Now()
	sendAll(t, out, 3)
	took := time.Since(start)
	st := nodeState(out, url)
	_, stats := out.Nodes()
	if st.State != "alive" || stats.Deaths != 0 || stats.HedgeWins != 1 || st.Hedges != 1 {
		t.Fatalf("node %+v; stats %+v", st, stats)
	}
	if took > 5*time.Second {
		t.Fatalf("the send took %s", took)
	}
	// It learned that idle connections die: they are retired before the
	// next request would meet one.
	if st.IdleLimit != "500ms" {
		t.Fatalf("idle limit %q, want the floor, 500ms (the dropped connection was idle for less)", st.IdleLimit)
	}
	sendAll(t, out, 3)
	time.Sleep(800 * time.Millisecond)
	mb.dropExisting()
	sendAll(t, out, 3)
	if st := nodeState(out, url); st.Hedges != 1 {
		t.Fatalf("a request met a dropped idle connection again: %+v", st)
	}
}

// A pooled connection the server closed while idle is replaced without the
// node counting a failure.
func TestPoolStaleConnectionNotCounted(t *testing.T) {
	srv := estest.New(t)
	mb := newMiddlebox(t, strings.TrimPrefix(srv.URL, "http://"))
	url := "http://" + mb.addr()
	out := poolOutput(t, []string{url}, func(c *elasticsearch.Config) { c.HedgeAfter = 0 })
	sendAll(t, out, 3)
	mb.closeExisting()
	sendAll(t, out, 3)
	if st := nodeState(out, url); st.State != "alive" || st.Failures != 0 {
		t.Fatalf("after a stale connection: %+v", st)
	}
}

// middlebox is a TCP proxy that can silently drop, or close, the
// connections it carries, as a firewall or tunnel does with idle ones.
type middlebox struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*mbConn
	wg     sync.WaitGroup
}

type mbConn struct {
	client, server net.Conn
	dropped        atomic.Bool
}

func newMiddlebox(t *testing.T, target string) *middlebox {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &middlebox{ln: ln, target: target}
	m.wg.Add(1)
	go m.accept()
	t.Cleanup(func() {
		ln.Close()
		m.closeExisting()
		m.wg.Wait()
	})
	return m
}

func (m *middlebox) addr() string { return m.ln.Addr().String() }

func (m *middlebox) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", m.target)
		if err != nil {
			c.Close()
			continue
		}
		mc := &mbConn{client: c, server: s}
		m.mu.Lock()
		m.conns = append(m.conns, mc)
		m.mu.Unlock()
		m.wg.Add(2)
		go m.pipe(mc, c, s)
		go m.pipe(mc, s, c)
	}
}

// pipe copies from one side to the other, discarding once dropped.
func (m *middlebox) pipe(mc *mbConn, from, to net.Conn) {
	defer m.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && !mc.dropped.Load() {
			to.Write(buf[:n])
		}
		if err != nil {
			to.Close()
			return
		}
	}
}

// dropExisting makes every current connection swallow what it carries.
func (m *middlebox) dropExisting() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.dropped.Store(true)
	}
}

// closeExisting closes every current connection.
func (m *middlebox) closeExisting() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.client.Close()
		c.server.Close()
	}
	m.conns = nil
}

// An answer that stops arriving mid-body is a stall: the watchdog closes
// its connection within stall_timeout instead of waiting for
// request_timeout.
func TestPoolBodyStallCaught(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		io.WriteString(w, `{"errors":false,"items":[`)
		w.(http.Flusher).Flush()
		select { // and nothing more
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	out := poolOutput(t, []string{srv.URL}, func(c *elasticsearch.Config) { c.HedgeAfter = 0 })
	start := time.Now()
	res, err := out.Send(context.Background(), records(`{}`))
	if err == nil || res[0].Outcome != elasticsearch.Retry {
		t.Fatalf("a stalled answer: %v %+v", err, res)
	}
	_, stats := out.Nodes()
	if stats.Stalls["body"] != 1 {
		t.Fatalf("stats %+v", stats)
	}
	t.Logf("caught after %s (stall_timeout 300ms, request_timeout 10s)", time.Since(start).Round(time.Millisecond))
}

// Connections older than conn_max_lifetime are retired once idle, so a load
// balancer sees new ones.
func TestPoolConnectionLifetime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	srv := estest.Serve(t, countingListener{ln, &conns})
	out := poolOutput(t, []string{srv.URL}, func(c *elasticsearch.Config) { c.ConnMaxLifetime = 100 * time.Millisecond })
	sendAll(t, out, 1)
	sendAll(t, out, 1)
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for two quick requests, want 1 (reused)", n)
	}
	waitFor(t, "the idle connection retired", func() bool {
		sendAll(t, out, 1)
		return conns.Load() > 1
	})
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
