//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The connection pool of the Elasticsearch output against real faults:
// each "node" is a proxy in front of the stack's one Elasticsearch (a
// toxiproxy, or one of middlebox_test.go), and the agent must tell a node
// that failed from a request that is merely slow, route around it, bring it
// back, and lose nothing. Every test ends by counting.

// poolNode is one entry of /api/status output.nodes.
type poolNode struct {
	URL           string     `json:"url"`
	State         string     `json:"state"`
	Since         time.Time  `json:"since"`
	Reason        string     `json:"reason"`
	Failures      int        `json:"failures"`
	LastError     string     `json:"last_error"`
	InFlight      int64      `json:"in_flight"`
	NextProbe     *time.Time `json:"next_probe"`
	IdleLimit     string     `json:"idle_limit"`
	Stalls        int64      `json:"stalls"`
	Hedges        int64      `json:"hedges"`
	Resurrections int64      `json:"resurrections"`
}

func (n poolNode) String() string {
	s := fmt.Sprintf("%s %s since %s", n.URL, n.State, n.Since.Format("15:04:05.000"))
	if n.Reason != "" {
		s += " (" + n.Reason + ")"
	}
	if n.LastError != "" {
		s += ", last error: " + n.LastError
	}
	if n.IdleLimit != "" {
		s += ", idle connections retired after " + n.IdleLimit
	}
	return s + fmt.Sprintf(", %d in flight, %d stalls, %d hedges, %d resurrections", n.InFlight, n.Stalls, n.Hedges, n.Resurrections)
}

// poolNodes returns the agent's nodes by URL.
func poolNodes(a *agentProc) map[string]poolNode {
	a.t.Helper()
	var st struct {
		Output struct {
			Nodes []poolNode `json:"nodes"`
		} `json:"output"`
	}
	a.getJSON("GET", "/api/status", &st)
	out := map[string]poolNode{}
	for _, n := range st.Output.Nodes {
		out[n.URL] = n
	}
	return out
}

// poolNodeOf returns one node's entry; the test fails if the agent does not list it.
func poolNodeOf(a *agentProc, url string) poolNode {
	a.t.Helper()
	nodes := poolNodes(a)
	n, ok := nodes[url]
	if !ok {
		a.t.Fatalf("/api/status lists no node %s: %v", url, nodes)
	}
	return n
}

// promSamples are the series of /api/metrics, keyed as exposed:
// name{label="value",...}, labels in name order.
type promSamples map[string]float64

func scrapeMetrics(api string) (promSamples, error) {
	return scrapeMetricsWith(http.DefaultClient, api)
}

// scrapeMetricsWith scrapes with client, e.g. one with a timeout for a
// sampler that must not hang on an agent being killed.
func scrapeMetricsWith(client *http.Client, api string) (promSamples, error) {
	res, err := client.Get(api + "/api/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/metrics: %s", res.Status)
	}
	out := promSamples{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

func agentMetrics(a *agentProc) promSamples {
	a.t.Helper()
	m, err := scrapeMetrics(a.api)
	if err != nil {
		a.t.Fatal(err)
	}
	return m
}

// get returns a series; labels are name, value pairs in name order. The
// test fails if the agent does not export it.
func (m promSamples) get(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	key := name
	if len(labels) > 0 {
		var kv []string
		for i := 0; i+1 < len(labels); i += 2 {
			kv = append(kv, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
		}
		key += "{" + strings.Join(kv, ",") + "}"
	}
	v, ok := m[key]
	if !ok {
		t.Fatalf("/api/metrics has no series %s", key)
	}
	return v
}

// poolCounters are the pool's metrics a test reports.
func (m promSamples) poolCounters(t *testing.T) string {
	t.Helper()
	g := func(name string, labels ...string) float64 { return m.get(t, name, labels...) }
	return fmt.Sprintf("deaths %g, resurrections %g, stalls upload/body/response %g/%g/%g, hedges won/lost %g/%g, "+
		"probes connect ok/failed %g/%g, full ok/failed %g/%g, reroutes %g, send attempts ok/error %g/%g",
		g("shipper_output_node_deaths_total"), g("shipper_output_node_resurrections_total"),
		g("shipper_output_stalls_total", "layer", "upload"), g("shipper_output_stalls_total", "layer", "body"),
		g("shipper_output_stalls_total", "layer", "response"),
		g("shipper_output_hedges_total", "result", "won"), g("shipper_output_hedges_total", "result", "lost"),
		g("shipper_output_probes_total", "kind", "connect", "result", "ok"), g("shipper_output_probes_total", "kind", "connect", "result", "failed"),
		g("shipper_output_probes_total", "kind", "full", "result", "ok"), g("shipper_output_probes_total", "kind", "full", "result", "failed"),
		g("shipper_output_reroutes_total"),
		g("shipper_output_send_attempts_total", "result", "ok"), g("shipper_output_send_attempts_total", "result", "error"))
}

// resourceWatch samples the agent's goroutines and open file descriptors
// every second, from its metrics, until end.
type resourceWatch struct {
	t          *testing.T
	base       promSamples
	stop, done chan struct{}

	mu                    sync.Mutex
	samples, failed       int
	maxGoroutines, maxFDs float64
}

// watchResources starts sampling; what the agent uses now is the base the
// peaks are held to.
func watchResources(a *agentProc) *resourceWatch {
	a.t.Helper()
	w := &resourceWatch{t: a.t, base: agentMetrics(a), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			m, err := scrapeMetrics(a.api)
			w.mu.Lock()
			if err != nil {
				w.failed++
			} else {
				w.samples++
				w.maxGoroutines = max(w.maxGoroutines, m["go_goroutines"])
				w.maxFDs = max(w.maxFDs, m["process_open_fds"])
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	a.t.Cleanup(w.end)
	return w
}

func (w *resourceWatch) end() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// requireBounded fails the test if the goroutines or open file
// descriptors ever exceeded twice their base plus 50: what a leak per
// request, per retry or per probe would pass within a test.
func (w *resourceWatch) requireBounded(phase string) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	g0, fd0 := w.base.get(w.t, "go_goroutines"), w.base.get(w.t, "process_open_fds")
	w.t.Logf("%s: goroutines %g at most (base %g), open fds %g at most (base %g), %d samples",
		phase, w.maxGoroutines, g0, w.maxFDs, fd0, w.samples)
	if w.samples < 2 {
		w.t.Fatalf("%s: only %d samples of the agent's metrics (%d failed)", phase, w.samples, w.failed)
	}
	if w.maxGoroutines > 2*g0+50 {
		w.t.Errorf("%s: %g goroutines, more than twice the %g before plus 50", phase, w.maxGoroutines, g0)
	}
	if w.maxFDs > 2*fd0+50 {
		w.t.Errorf("%s: %g open file descriptors, more than twice the %g before plus 50", phase, w.maxFDs, fd0)
	}
}

// waitIndexed waits until the index holds n documents.
func waitIndexed(t *testing.T, a *agentProc, index string, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d documents indexed", n), func() (bool, string) {
		a.requireRunning("while delivering")
		got := esCount(t, index)
		return got >= n, fmt.Sprintf("%d of %d indexed", got, n)
	})
}

// flowUntil produces slices of records (numbered from *produced on) while
// cond does not hold: records keep flowing while a test waits for the
// agent to notice something.
func flowUntil(t *testing.T, a *agentProc, topic string, produced *int, slice int, timeout time.Duration, what string,
	cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a.requireRunning("while records flowed")
		produce(t, topic, *produced, slice)
		*produced += slice
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s while records flowed; last state: %s", timeout, what, state)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// flushOpen waits until the agent consumed n records in all, then seals its
// open chunk (flush_interval is long in the tests that call it).
func flushOpen(t *testing.T, a *agentProc, n int) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("%d records consumed", n), func() (bool, string) {
		st := a.stats()
		return st.Consumed >= int64(n), fmt.Sprintf("consumed %d", st.Consumed)
	})
	var res struct {
		Sealed int    `json:"sealed_records"`
		Error  string `json:"error"`
	}
	a.getJSON("POST", "/api/flush", &res)
	if res.Error != "" {
		t.Fatalf("flush: %s", res.Error)
	}
}

// TestPoolNodeDownAndBack: of two nodes, A stops (connections refused, open
// ones closed) while records flow. The agent marks A dead and delivers
// through B; A starts again, a probe brings it back, and bulk requests
// reach it again. Nothing is lost, and the agent's goroutines and open
// files stay bounded throughout.
func TestPoolNodeDownAndBack(t *testing.T) {
	const partitions, slice = 2, 2000
	topic := newTopic(t, partitions)
	nodeA, nodeB := newESProxy(t), newESProxy(t)
	bytesA, bytesB := nodeA.countBytes(t, "upstream"), nodeB.countBytes(t, "upstream")
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: nodeA.URL + "," + nodeB.URL}
	a := startAgent(t, o)

	produced := 0
	produce(t, topic, produced, slice)
	produced += slice
	waitIndexed(t, a, o.Index, produced, time.Minute)
	t.Logf("both nodes up: %d KiB of requests reached A, %d KiB B", bytesA.Bytes()>>10, bytesB.Bytes()>>10)
	res := watchResources(a)

	t.Log("node A stops: connections refused")
	nodeA.Stop()
	stopped := time.Now()
	flowUntil(t, a, topic, &produced, slice/4, time.Minute, "A marked dead", func() (bool, string) {
		n := poolNodeOf(a, nodeA.URL)
		return n.State == "dead", n.String()
	})
	dead := poolNodeOf(a, nodeA.URL)
	t.Logf("A dead %s after it stopped: %s", dead.Since.Sub(stopped).Round(time.Millisecond), dead)
	if b := poolNodeOf(a, nodeB.URL); b.State != "alive" {
		t.Fatalf("B is not alive while A is down: %s", b)
	}

	// A stays down for a few probes, records still flowing.
	atB := bytesB.Bytes()
	flowUntil(t, a, topic, &produced, slice/4, time.Minute, "A's probes refused", func() (bool, string) {
		refused := agentMetrics(a).get(t, "shipper_output_probes_total", "kind", "connect", "result", "failed")
		return refused >= 3, fmt.Sprintf("%g connect probes refused", refused)
	})
	waitIndexed(t, a, o.Index, produced, time.Minute)
	if n := poolNodeOf(a, nodeA.URL); n.State != "dead" {
		t.Fatalf("A is %s while stopped: %s", n.State, n)
	}
	t.Logf("while A was down (%s): everything indexed through B (%d KiB more)",
		time.Since(stopped).Round(100*time.Millisecond), (bytesB.Bytes()-atB)>>10)

	t.Log("node A starts again")
	if err := nodeA.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitFor(t, 30*time.Second, "A back in rotation", func() (bool, string) {
		n := poolNodeOf(a, nodeA.URL)
		return n.State == "alive", n.String()
	})
	back := poolNodeOf(a, nodeA.URL)
	t.Logf("A alive %s after it started: %s", back.Since.Sub(started).Round(time.Millisecond), back)
	if back.Resurrections < 1 {
		t.Errorf("A is alive with %d resurrections", back.Resurrections)
	}

	// Probes are a TCP connect and a GET / of a few hundred bytes; only
	// bulk requests carry this much.
	atA := bytesA.Bytes()
	flowUntil(t, a, topic, &produced, slice, time.Minute, "bulk requests reaching A again", func() (bool, string) {
		got := bytesA.Bytes() - atA
		return got >= 256<<10, fmt.Sprintf("%d bytes reached A since it came back", got)
	})
	waitIndexed(t, a, o.Index, produced, time.Minute)
	t.Logf("after A came back: %d KiB of requests reached A", (bytesA.Bytes()-atA)>>10)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	res.requireBounded("A down and back")

	m := agentMetrics(a)
	t.Log(m.poolCounters(t))
	for _, c := range []struct {
		what   string
		name   string
		labels []string
	}{
		{"node deaths", "shipper_output_node_deaths_total", nil},
		{"resurrections", "shipper_output_node_resurrections_total", nil},
		{"failed connect probes", "shipper_output_probes_total", []string{"kind", "connect", "result", "failed"}},
		{"successful full probes", "shipper_output_probes_total", []string{"kind", "full", "result", "ok"}},
	} {
		if v := m.get(t, c.name, c.labels...); v < 1 {
			t.Errorf("%s: %g, want at least 1", c.what, v)
		}
	}
	if up := m.get(t, "shipper_output_node_up", "node", nodeA.URL); up != 1 {
		t.Errorf("shipper_output_node_up for A is %g after it came back", up)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, produced)
}

// TestPoolBlackholeMidBulk: node A's upstream goes dark in the middle of a
// 16 MiB bulk request: after 4 MiB of it, nothing more drains, and the
// connection stays open. With hedging off, only the watchdog can end it:
// after stall_timeout without progress it closes the connection, marks A
// dead for an upload stall and sends the request to B at once. Nothing is
// lost.
func TestPoolBlackholeMidBulk(t *testing.T) {
	const (
		partitions = 2
		small      = 2000     // loggen's records
		large      = 960      // and records of 64 KiB: 60 MiB, four chunks
		largeSize  = 64 << 10 // of 16 MiB
		darkAfter  = 4 << 20  // of the next bulk request through A
	)
	topic := newTopic(t, partitions)
	createIndex(t, topic, `{"properties":{"body":{"type":"text","index":false}}}`)
	nodeA, nodeB := newESProxy(t), newESProxy(t)
	bytesA := nodeA.countBytes(t, "upstream")
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: nodeA.URL + "," + nodeB.URL,
		ChunkSize: "16MiB", FlushInterval: "1h",
		ESExtra: "max_bulk_bytes = \"32MiB\"\n  stall_timeout = \"1s\"\n  hedge_after = \"0s\""}
	a := startAgent(t, o)

	produce(t, topic, 0, small)
	flushOpen(t, a, small)
	waitIndexed(t, a, o.Index, small, time.Minute)
	res := watchResources(a)

	// Chunks seal at 16 MiB only (flush_interval is an hour): the next
	// request through A is a 16 MiB one, and it goes dark 4 MiB in, far
	// more than socket buffers hold.
	atA := bytesA.Bytes()
	dark := nodeA.freezeAfter(t, "upstream", darkAfter)
	produceLarge(t, topic, small, large, largeSize)
	waitFor(t, 2*time.Minute, "A dead after its upstream went dark", func() (bool, string) {
		a.requireRunning("while A was dark")
		n := poolNodeOf(a, nodeA.URL)
		return n.State == "dead", fmt.Sprintf("%s; %d bytes through A since", n, bytesA.Bytes()-atA)
	})
	n := poolNodeOf(a, nodeA.URL)
	frozeAt := dark.FrozeAt()
	if frozeAt.IsZero() {
		t.Fatalf("A is dead, but its upstream never went dark: %s", n)
	}
	t.Logf("A's upstream went dark %d KiB into a request; the stall was caught %s later: %s",
		(bytesA.Bytes()-atA)>>10, n.Since.Sub(frozeAt).Round(time.Millisecond), n)
	t.Logf("agent: %s", a.lastLogLine("stalled send caught"))
	if !strings.Contains(n.Reason, "stall (upload)") {
		t.Errorf("A is dead for %q, want an upload stall", n.Reason)
	}

	flushOpen(t, a, small+large)
	waitIndexed(t, a, o.Index, small+large, 2*time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	res.requireBounded("A dark mid-bulk")
	m := agentMetrics(a)
	t.Log(m.poolCounters(t))
	if v := m.get(t, "shipper_output_stalls_total", "layer", "upload"); v < 1 {
		t.Errorf("%g upload stalls, want at least 1", v)
	}
	if n := poolNodeOf(a, nodeA.URL); n.State != "dead" || n.Stalls < 1 {
		t.Errorf("A, still dark, is %s", n)
	}
	if h := m.get(t, "shipper_output_hedges_total", "result", "won") + m.get(t, "shipper_output_hedges_total", "result", "lost"); h != 0 {
		t.Errorf("%g hedges with hedge_after = 0 (off)", h)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, small+large)
}

// TestPoolSilentAndTLSStuckNodes: a node that accepts connections and never
// answers, and one whose TLS handshake never completes, each next to a good
// node. Neither holds anything up: the silent node's requests are hedged to
// the good node and it is marked dead; the TLS node fails its handshake
// after tls_handshake_timeout and is marked dead for it. Everything is
// delivered through the good node, exactly once.
func TestPoolSilentAndTLSStuckNodes(t *testing.T) {
	t.Run("silent", func(t *testing.T) {
		silent := newSilentNode(t)
		n, m := runStuckNode(t, "http://"+silent.Addr, `hedge_after = "1s"`)
		t.Logf("the silent node accepted %d connections, %d still open", silent.accepted.Load(), silent.open.Load())
		if won := m.get(t, "shipper_output_hedges_total", "result", "won"); won < 1 {
			t.Errorf("%g hedges won: the good node should have answered the silent node's requests", won)
		}
		if !strings.Contains(n.Reason, "no answer") && !strings.Contains(n.Reason, "stall") {
			t.Errorf("the silent node is dead for %q, want its silence", n.Reason)
		}
	})
	t.Run("tls", func(t *testing.T) {
		silent := newSilentNode(t)
		n, _ := runStuckNode(t, "https://"+silent.Addr, `tls_handshake_timeout = "1s"`)
		t.Logf("the TLS node accepted %d connections, %d still open", silent.accepted.Load(), silent.open.Load())
		if r := strings.ToLower(n.Reason); !strings.Contains(r, "tls") || !strings.Contains(r, "handshake") {
			t.Errorf("the TLS node is dead for %q, want its TLS handshake", n.Reason)
		}
	})
}

// runStuckNode runs an agent with the stuck node and the stack's node,
// records flowing until the stuck one is dead, and counts.
func runStuckNode(t *testing.T, stuckURL, esExtra string) (poolNode, promSamples) {
	t.Helper()
	const partitions, slice = 2, 500
	topic := newTopic(t, partitions)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ESURL: stuckURL + "," + stack.ESURL, ESExtra: esExtra}
	a := startAgent(t, o)
	produced := 0
	start := time.Now()
	flowUntil(t, a, topic, &produced, slice, time.Minute, "the stuck node marked dead", func() (bool, string) {
		n := poolNodeOf(a, stuckURL)
		return n.State == "dead", n.String()
	})
	n := poolNodeOf(a, stuckURL)
	t.Logf("dead %s after the first records: %s", n.Since.Sub(start).Round(time.Millisecond), n)
	produce(t, topic, produced, slice)
	produced += slice
	waitIndexed(t, a, o.Index, produced, time.Minute)
	t.Logf("%d records indexed %s after the first", produced, time.Since(start).Round(time.Millisecond))
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	m := agentMetrics(a)
	t.Log(m.poolCounters(t))
	if n := poolNodeOf(a, stuckURL); n.State != "dead" {
		t.Errorf("the stuck node came back: %s", n)
	}
	if good := poolNodeOf(a, stack.ESURL); good.State != "alive" {
		t.Errorf("the good node is %s", good)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, produced)
	return n, m
}

// TestPoolSlowButSteadyNeverAStall: one bulk request of 45 MiB through a
// link of 2 MB/s with 200 ms latency each way takes over 20 s to upload,
// ten times stall_timeout, but its bytes keep draining: it is never a
// stall, the node never dies, and it is sent once.
//
// 45 MiB, not 50: this stack's node refuses (429) a bulk request over its
// indexing_pressure.memory.limit, 10% of its 512 MB heap, 51.2 MiB.
func TestPoolSlowButSteadyNeverAStall(t *testing.T) {
	const n, size = 90, 512 << 10
	topic := newTopic(t, 1)
	createIndex(t, topic, `{"properties":{"body":{"type":"text","index":false}}}`)
	proxy := newESProxy(t)
	sent := proxy.countBytes(t, "upstream")
	proxy.addToxicJSON(t, `{"name":"bandwidth","type":"bandwidth","stream":"upstream","attributes":{"rate":2000}}`)
	proxy.addToxicJSON(t, `{"name":"latency-up","type":"latency","stream":"upstream","attributes":{"latency":200}}`)
	proxy.addToxicJSON(t, `{"name":"latency-down","type":"latency","stream":"downstream","attributes":{"latency":200}}`)
	produceLarge(t, topic, 0, n, size)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: proxy.URL,
		ChunkSize: "64MiB", FlushInterval: "1h", RequestTimeout: "2m",
		ESExtra: "max_bulk_bytes = \"64MiB\"\n  stall_timeout = \"2s\""}
	o.MemoryLimit = "256MiB"
	a := startAgent(t, o)

	// Everything in one chunk, sealed at once: one bulk request.
	flushOpen(t, a, n)
	start := time.Now()
	waitIndexed(t, a, o.Index, n, 3*time.Minute)
	took := time.Since(start)
	t.Logf("one bulk request of %.1f MiB through 2 MB/s and 200 ms each way: indexed %s after the flush (%.2f MB/s)",
		float64(sent.Bytes())/(1<<20), took.Round(100*time.Millisecond), float64(sent.Bytes())/took.Seconds()/1e6)
	waitCommittedAtEnd(t, o.Group, topic, 1)
	m := agentMetrics(a)
	t.Log(m.poolCounters(t))
	for _, layer := range []string{"upload", "body", "response"} {
		if v := m.get(t, "shipper_output_stalls_total", "layer", layer); v != 0 {
			t.Errorf("%g %s stalls of a slow but steady request", v, layer)
		}
	}
	if d := m.get(t, "shipper_output_node_deaths_total"); d != 0 {
		t.Errorf("the node died %g times", d)
	}
	if nd := poolNodeOf(a, proxy.URL); nd.State != "alive" || nd.Stalls != 0 {
		t.Errorf("node: %s", nd)
	}
	if ok, failed := m.get(t, "shipper_output_send_attempts_total", "result", "ok"), m.get(t, "shipper_output_send_attempts_total", "result", "error"); ok != 1 || failed != 0 {
		t.Errorf("send attempts: %g ok, %g failed; want the one chunk sent once", ok, failed)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, 1, n)
}

// TestPoolMiddleboxIdleTimeout: a middlebox in front of the node acts on
// connections idle for 2 s: it forgets them (every byte swallowed, nothing
// closed) or closes them. Bursts of records come 3 s apart, so a connection
// pooled in one burst has gone stale by the next. A stale connection is the
// connection's fault, not the node's: the node never dies, and each burst
// is indexed well within request_timeout (its default, 60 s): a stale
// connection is replaced, retired before it goes stale, or its request
// hedged on a fresh one, instead of waited out.
//
// Eight bursts in well under a minute: if every other burst met a
// forgotten connection and needed a hedge, the fourth would come within the
// minute, past the hedge budget's floor of three a minute, and wait out
// request_timeout (the agent did, before it learned to retire idle
// connections ahead of such a middlebox).
func TestPoolMiddleboxIdleTimeout(t *testing.T) {
	const (
		partitions = 2
		bursts     = 8
		burst      = 300
		idle       = 2 * time.Second
		gap        = 3 * time.Second
	)
	esHost := strings.TrimPrefix(stack.ESURL, "http://")
	for _, action := range []idleAction{idleDrop, idleClose} {
		t.Run(action.String(), func(t *testing.T) {
			topic := newTopic(t, partitions)
			mb := newMiddlebox(t, esHost, idle, action)
			o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: mb.URL}
			a := startAgent(t, o)
			produced := 0
			for i := range bursts {
				if i > 0 {
					time.Sleep(gap) // every connection idles past the middlebox's timeout
				}
				start := time.Now()
				produce(t, topic, produced, burst)
				produced += burst
				waitIndexed(t, a, o.Index, produced, 2*time.Minute)
				took := time.Since(start)
				t.Logf("burst %d (%s): indexed %s after it was produced", i+1, action, took.Round(10*time.Millisecond))
				if took > 30*time.Second {
					t.Errorf("burst %d took %s: a stale connection was waited out (request_timeout is 60 s); %s",
						i+1, took.Round(100*time.Millisecond), agentMetrics(a).poolCounters(t))
				}
			}
			waitCommittedAtEnd(t, o.Group, topic, partitions)
			m := agentMetrics(a)
			t.Log(m.poolCounters(t))
			t.Logf("middlebox: %d connections, %d of them %s for idleness, %d bytes swallowed; node: %s",
				mb.accepted.Load(), mb.expired.Load(), action.past(), mb.swallowed.Load(), poolNodeOf(a, mb.URL))
			if mb.expired.Load() == 0 || (action == idleDrop && mb.swallowed.Load() == 0) {
				t.Errorf("no request met a connection the middlebox had %s: the test proved nothing", action.past())
			}
			if d := m.get(t, "shipper_output_node_deaths_total"); d != 0 {
				t.Errorf("the node was marked dead %g times for connections the middlebox %s", d, action.past())
			}
			a.stop(30 * time.Second)
			assertExactlyOnce(t, o.Index, topic, partitions, produced)
		})
	}
}

// TestPoolAllNodesDownThenBack: both nodes refuse connections for a minute
// while records keep coming. The agent buffers them and waits without
// spinning: little CPU, goroutines and open files bounded, probes only.
// When the nodes come back, everything is delivered exactly once.
func TestPoolAllNodesDownThenBack(t *testing.T) {
	const (
		partitions = 2
		slice      = 3000
		outage     = 60 * time.Second
		cpuBound   = 10.0 // CPU seconds over the outage: a busy loop spends about 60
	)
	topic := newTopic(t, partitions)
	nodeA, nodeB := newESProxy(t), newESProxy(t)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: nodeA.URL + "," + nodeB.URL}
	a := startAgent(t, o)
	produced := 0
	more := func() {
		produce(t, topic, produced, slice)
		produced += slice
	}
	more()
	waitIndexed(t, a, o.Index, produced, time.Minute)
	indexed := produced
	res := watchResources(a)

	t.Logf("both nodes stop for %s", outage)
	nodeA.Stop()
	nodeB.Stop()
	start := time.Now()
	cpu0 := agentMetrics(a).get(t, "process_cpu_seconds_total")
	more()
	waitFor(t, 30*time.Second, "both nodes dead", func() (bool, string) {
		nodes := poolNodes(a)
		return nodes[nodeA.URL].State == "dead" && nodes[nodeB.URL].State == "dead", fmt.Sprint(nodes)
	})
	t.Logf("both nodes dead %s into the outage", time.Since(start).Round(time.Millisecond))
	for _, at := range []time.Duration{outage / 3, 2 * outage / 3} {
		time.Sleep(time.Until(start.Add(at)))
		more()
	}
	time.Sleep(time.Until(start.Add(outage)))
	a.requireRunning("during the outage")
	cpu := agentMetrics(a).get(t, "process_cpu_seconds_total") - cpu0
	st := a.stats()
	t.Logf("outage of %s: %.2f CPU seconds; consumed %d of %d, %d records on disk",
		time.Since(start).Round(time.Second), cpu, st.Consumed, produced, st.Buffer.DiskRecords)
	if cpu > cpuBound {
		t.Errorf("%.2f CPU seconds in %s with every node down: the agent spins", cpu, outage)
	}
	if got := esCount(t, o.Index); got != indexed {
		t.Fatalf("%d documents indexed during the outage, want still %d", got, indexed)
	}
	res.requireBounded("every node down")
	m := agentMetrics(a)
	t.Log(m.poolCounters(t))

	t.Log("both nodes start again")
	if err := nodeA.Start(); err != nil {
		t.Fatal(err)
	}
	if err := nodeB.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitIndexed(t, a, o.Index, produced, 2*time.Minute)
	t.Logf("the backlog indexed %s after the nodes came back", time.Since(back).Round(100*time.Millisecond))
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	waitFor(t, 30*time.Second, "both nodes alive", func() (bool, string) {
		nodes := poolNodes(a)
		return nodes[nodeA.URL].State == "alive" && nodes[nodeB.URL].State == "alive", fmt.Sprint(nodes)
	})
	res.requireBounded("every node down and back")
	t.Log(agentMetrics(a).poolCounters(t))
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, produced)
}
