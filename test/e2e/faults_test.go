//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// esProxy is a toxiproxy, in this process, between the agent and
// Elasticsearch: Stop refuses connections (and closes the open ones),
// Start lets them through again, toxics disturb what passes.
type esProxy struct {
	*toxiproxy.Proxy
	URL string // what the agent uses as elasticsearch.urls
}

func newESProxy(t *testing.T) *esProxy {
	t.Helper()
	u, err := url.Parse(stack.ESURL)
	if err != nil {
		t.Fatal(err)
	}
	return newProxyTo(t, u.Host)
}

// newProxyTo is an esProxy in front of upstream (host:port), e.g. a
// middlebox that itself leads to the node.
func newProxyTo(t *testing.T, upstream string) *esProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "elasticsearch", "127.0.0.1:0", upstream)
	if err := srv.Collection.Add(p, true); err != nil {
		t.Fatalf("start toxiproxy: %v", err)
	}
	t.Cleanup(func() { srv.Collection.Clear() })
	return &esProxy{Proxy: p, URL: "http://" + p.Listen}
}

// blackhole makes the stream (upstream: agent to Elasticsearch,
// downstream: back) swallow every byte and hold the connection open: a
// stalled peer, not a refusing one.
func (p *esProxy) blackhole(t *testing.T, name, stream string) {
	t.Helper()
	js := fmt.Sprintf(`{"name":%q,"type":"timeout","stream":%q,"attributes":{"timeout":0}}`, name, stream)
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatalf("add toxic %s: %v", name, err)
	}
}

func (p *esProxy) removeToxic(t *testing.T, name string) {
	t.Helper()
	if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// restart closes every connection through the proxy and listens again on
// the same address: the next phase starts from fresh connections.
func (p *esProxy) restart(t *testing.T, change func()) {
	t.Helper()
	p.Stop()
	if change != nil {
		change()
	}
	if err := p.Start(); err != nil {
		t.Fatalf("restart toxiproxy on %s: %v", p.Listen, err)
	}
}

// nodeState is a node of /api/status's output.nodes.
type nodeState struct {
	URL    string `json:"url"`
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// soleNode returns the state of the agent's one Elasticsearch node.
func soleNode(a *agentProc) nodeState {
	a.t.Helper()
	var st struct {
		Output struct {
			Nodes []nodeState `json:"nodes"`
		} `json:"output"`
	}
	a.getJSON("GET", "/api/status", &st)
	if len(st.Output.Nodes) != 1 {
		a.t.Fatalf("status lists %d nodes, want 1", len(st.Output.Nodes))
	}
	return st.Output.Nodes[0]
}

// TestElasticsearchOutage: while Elasticsearch is out of reach, first
// refusing connections, then accepting them and never answering, then
// taking requests but losing every response, the agent keeps running,
// keeps consuming into its disk buffer and keeps trying (a dead node is
// probed, a live one retried); the index does
// not move while nothing reaches it. When Elasticsearch is back, every
// record is indexed exactly once and the commits reach the end.
func TestElasticsearchOutage(t *testing.T) {
	const (
		partitions = 4
		slice      = 8_000
		hold       = 6 * time.Second // each outage lasts at least this long
	)
	topic := newTopic(t, partitions)
	proxy := newESProxy(t)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ESURL: proxy.URL, RequestTimeout: "5s"}
	a := startAgent(t, o)

	produced := 0
	more := func() {
		produce(t, topic, produced, slice)
		produced += slice
	}
	waitIndexed := func(what string, n int) {
		t.Helper()
		waitFor(t, 2*time.Minute, what, func() (bool, string) {
			got := esCount(t, o.Index)
			return got >= n, fmt.Sprintf("%d of %d indexed", got, n)
		})
	}
	// waitBuffered waits until the agent has read everything produced and
	// holds chunks on disk that it cannot deliver.
	waitBuffered := func(phase string) agentStatus {
		t.Helper()
		var st agentStatus
		waitFor(t, time.Minute, phase+": every record consumed into the buffer", func() (bool, string) {
			a.requireRunning("during the outage")
			st = a.stats()
			return st.Consumed >= int64(produced) && st.Buffer.DiskRecords > 0,
				fmt.Sprintf("consumed %d of %d, %d records on disk", st.Consumed, produced, st.Buffer.DiskRecords)
		})
		return st
	}
	// holdOutage keeps the outage for a while and checks, at its end, that
	// not one more document reached the index and the agent is running.
	holdOutage := func(phase string, indexed int) {
		t.Helper()
		time.Sleep(hold)
		a.requireRunning("during the outage")
		if got := esCount(t, o.Index); got != indexed {
			t.Fatalf("%s: the index holds %d documents, want still %d: something reached Elasticsearch", phase, got, indexed)
		}
	}

	more()
	waitIndexed("the first records indexed through the proxy", produced)
	indexed := produced

	// 1: nothing listens. Connections are refused at once.
	t.Log("outage 1: Elasticsearch refuses connections")
	proxy.Stop()
	before := a.stats().Output.Retries
	more()
	st := waitBuffered("refused")
	holdOutage("refused", indexed)
	if st = a.stats(); st.Output.Retries == before {
		t.Fatalf("refused: the agent retried nothing in %s", hold)
	}
	t.Logf("refused: %d records on disk in %d chunks, %d retries", st.Buffer.DiskRecords, st.Buffer.DiskChunks, st.Output.Retries-before)

	// Between outages the node comes back by itself: its probes answer.
	back := func(phase string) {
		t.Helper()
		proxy.restart(t, nil)
		more()
		waitIndexed(phase+": the node probed back into rotation and the backlog indexed", produced)
		indexed = produced
	}

	// 2: connections are accepted and every byte is swallowed. The pool
	// hedges the unanswered request on a fresh connection, then counts a
	// stall when request_timeout (5s here) passes without an answer, and
	// marks the node dead; its probes connect but are never answered, so
	// it stays dead and sends wait instead of hanging.
	back("before outage 2")
	t.Log("outage 2: Elasticsearch accepts connections and never answers")
	proxy.blackhole(t, "stall", "upstream") // on the open connections too
	stalledAt := time.Now()
	more()
	waitBuffered("stalled")
	waitFor(t, time.Minute, "stalled: the node marked dead", func() (bool, string) {
		a.requireRunning("during the outage")
		n := soleNode(a)
		return n.State == "dead", fmt.Sprintf("node %+v", n)
	})
	t.Logf("stalled: the node was marked dead %s after the stall began: %s", time.Since(stalledAt).Round(100*time.Millisecond), soleNode(a).Reason)
	holdOutage("stalled", indexed)
	if n := soleNode(a); n.State != "dead" {
		t.Fatalf("stalled: a node that never answers came back: %+v", n)
	}
	proxy.removeToxic(t, "stall")

	// 3: requests reach Elasticsearch and are indexed, but no response
	// comes back. The agent must send them again, and the deterministic
	// ids make Elasticsearch answer "already indexed".
	back("before outage 3")
	t.Log("outage 3: Elasticsearch indexes, but every response is lost")
	proxy.blackhole(t, "lost", "downstream")
	more()
	waitBuffered("responses lost")
	waitFor(t, time.Minute, "responses lost: documents indexed that the agent does not know of", func() (bool, string) {
		a.requireRunning("during the outage")
		got := esCount(t, o.Index)
		return got > indexed, fmt.Sprintf("the index holds %d documents, %d before", got, indexed)
	})
	time.Sleep(hold)
	a.requireRunning("during the outage")
	if st = a.stats(); st.Buffer.DiskRecords == 0 {
		t.Fatal("responses lost: the buffer is empty, yet no response reached the agent")
	}
	lost := esCount(t, o.Index) - indexed
	t.Logf("responses lost: %d documents indexed unbeknown to the agent, %d records on disk", lost, st.Buffer.DiskRecords)

	// Back to normal, with more records on top.
	t.Log("Elasticsearch is back")
	proxy.restart(t, func() { proxy.removeToxic(t, "lost") })
	more()
	waitIndexed("every record indexed after the outage", produced)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	a.requireRunning("after the outage")
	st = a.stats()
	t.Logf("after the outage: %d indexed, %d found already indexed, %d retries, %d dead letters",
		st.Output.Indexed, st.Output.Duplicates, st.Output.Retries, st.Output.DeadLettered)
	if st.Output.Duplicates == 0 {
		t.Errorf("no document was found already indexed, yet %d were indexed while their responses were lost", lost)
	}
	if st.Output.DeadLettered != 0 {
		t.Errorf("%d documents were dead-lettered: an outage must only delay delivery", st.Output.DeadLettered)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, produced)
}

// mountTmpfs mounts a tmpfs of the given size on a new directory,
// unmounted when the test ends.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%s mounts a small tmpfs to fill a real filesystem and must run as root (CI runs the e2e suite as root): "+
			"sudo -E go test -tags e2e -count=1 -run '%s' ./test/e2e/", t.Name(), t.Name())
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mount -t tmpfs on %s: %v: %s (needs mount(8) from util-linux and CAP_SYS_ADMIN)", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func freeSpace(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// produceLarge writes n JSON records of about size bytes each, carrying
// sequence numbers from..from+n-1 (what assertExactlyOnce counts).
func produceLarge(t *testing.T, topic string, from, n, size int) {
	t.Helper()
	w := loggen.Writer(stack.KafkaBrokers, topic)
	w.BatchBytes = 900 << 10 // under the broker's message.max.bytes
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const batch = 100
	msgs := make([]kafka.Message, 0, batch)
	for i := from; i < from+n; i++ {
		body := strings.Repeat(fmt.Sprintf("%08x", i), size/8)
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "%d", i),
			Value: fmt.Appendf(nil, `{"service":"disk-filler","msg":"large record","seq":%d,"body":%q}`, i, body)})
		if len(msgs) == batch || i == from+n-1 {
			if err := loggen.Write(ctx, w, msgs); err != nil {
				t.Fatalf("produce records up to %d: %v", i, err)
			}
			msgs = msgs[:0]
		}
	}
}

// TestFullDisk: the buffer lives on a 192 MiB filesystem and Elasticsearch
// is unreachable, so the backlog fills the filesystem. The buffer stops at
// min_free_space: appends block, the Kafka input stops consuming, the
// agent keeps running (the same process throughout) and says why in
// /api/status. Another process then fills the disk almost completely, and
// Elasticsearch comes back meanwhile: the agent survives it, and the input
// stays paused. The other process deletes its file: the buffer drains,
// value-log GC gives the space back, consumption resumes, and every record
// is indexed exactly once.
func TestFullDisk(t *testing.T) {
	const (
		partitions = 4
		n          = 12_000
		recordSize = 10 << 10 // 12,000 records: about 118 MiB, twice the room
		fsSize     = 192 << 20
		minFree    = 128 << 20
		floor      = 112 << 20 // what badger needs free to never fault on a mapped file
	)
	mnt := mountTmpfs(t, fsSize)
	topic := newTopic(t, partitions)
	proxy := newESProxy(t)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		BufferDir: filepath.Join(mnt, "buffer"), ESURL: proxy.URL, RequestTimeout: "5s",
		Extra: fmt.Sprintf("min_free_space = \"%dMiB\"\n  disk_limit = \"10GiB\"", minFree>>20)}
	proxy.Stop() // Elasticsearch is out of reach from the start
	a := startAgent(t, o)

	produceLarge(t, topic, 0, n, recordSize)
	var st agentStatus
	waitFor(t, 2*time.Minute, "the buffer blocked on the full filesystem", func() (bool, string) {
		a.requireRunning("while the disk filled")
		st = a.stats()
		return strings.HasPrefix(st.Buffer.Blocked, "filesystem full"),
			fmt.Sprintf("blocked %q, consumed %d, %d records on disk, %d bytes free", st.Buffer.Blocked,
				st.Consumed, st.Buffer.DiskRecords, st.Buffer.FilesystemFree)
	})
	t.Logf("blocked: %q; consumed %d of %d, %d records in %d chunks on disk, directory %d MiB, %d MiB free",
		st.Buffer.Blocked, st.Consumed, n, st.Buffer.DiskRecords, st.Buffer.DiskChunks,
		st.Buffer.DiskUsage>>20, freeSpace(t, mnt)>>20)
	if st.Consumed >= n {
		t.Fatalf("all %d records were consumed: the filesystem never filled", n)
	}
	if free := freeSpace(t, mnt); free < floor {
		t.Fatalf("the buffer left only %d MiB free, below the %d MiB badger needs", free>>20, floor>>20)
	}

	// Blocked means blocked: the input reads nothing more.
	consumed := st.Consumed
	time.Sleep(4 * time.Second)
	a.requireRunning("while the disk was full")
	st = a.stats()
	if st.Consumed != consumed || !strings.HasPrefix(st.Buffer.Blocked, "filesystem full") {
		t.Fatalf("while the filesystem is full: consumed %d then %d, blocked %q", consumed, st.Consumed, st.Buffer.Blocked)
	}

	// Another process fills the disk to 32 MiB free. The buffer stays
	// blocked and the agent keeps running.
	filler := filepath.Join(mnt, "filler")
	fillTo(t, filler, freeSpace(t, mnt)-32<<20)
	waitFor(t, 30*time.Second, "the agent sees the disk filled by someone else", func() (bool, string) {
		a.requireRunning("while another process filled the disk")
		st = a.stats()
		return st.Buffer.FilesystemFree < 48<<20 && strings.HasPrefix(st.Buffer.Blocked, "filesystem full"),
			fmt.Sprintf("%d MiB free, blocked %q", st.Buffer.FilesystemFree>>20, st.Buffer.Blocked)
	})
	t.Logf("another process filled the disk: blocked %q", st.Buffer.Blocked)
	peak := st.Buffer.DiskUsage

	// Elasticsearch is back while the disk is still full of someone
	// else's data. Whatever the agent does with its chunks now, writing
	// into the little room left must not kill it (badger's mapped files
	// fault on a page the filesystem cannot allocate), and the input stays
	// paused.
	t.Log("Elasticsearch is back; the disk is still full")
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	a.requireRunning("when Elasticsearch came back on a full disk")
	if st = a.stats(); st.Consumed != consumed || !strings.HasPrefix(st.Buffer.Blocked, "filesystem full") {
		t.Fatalf("with %d MiB free: consumed %d then %d, blocked %q; the input must stay paused below min_free_space",
			st.Buffer.FilesystemFree>>20, consumed, st.Consumed, st.Buffer.Blocked)
	}
	t.Logf("Elasticsearch back on a full disk: %d documents indexed, %d records on disk, %d chunks in flight; blocked %q",
		esCount(t, o.Index), st.Buffer.DiskRecords, st.Buffer.InFlightChunks, st.Buffer.Blocked)

	// The other process deletes its file: the buffer drains, GC gives its
	// space back, consumption resumes, and the rest goes through.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "value-log GC gives the space of delivered chunks back", func() (bool, string) {
		a.requireRunning("while the buffer drained")
		st = a.stats()
		return st.Buffer.GCRuns > 0 && st.Buffer.GCReclaimed > 0,
			fmt.Sprintf("%d GC runs, %d bytes reclaimed, directory %d MiB (peak %d MiB), %d records on disk",
				st.Buffer.GCRuns, st.Buffer.GCReclaimed, st.Buffer.DiskUsage>>20, peak>>20, st.Buffer.DiskRecords)
	})
	t.Logf("draining: %d GC runs reclaimed %d MiB, directory %d MiB (peak %d MiB)",
		st.Buffer.GCRuns, st.Buffer.GCReclaimed>>20, st.Buffer.DiskUsage>>20, peak>>20)
	waitFor(t, 3*time.Minute, "every record indexed after the disk was full", func() (bool, string) {
		a.requireRunning("while the buffer drained")
		got := esCount(t, o.Index)
		return got >= n, fmt.Sprintf("%d of %d indexed", got, n)
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	st = a.stats()
	a.requireRunning("after the disk was full")
	t.Logf("done: consumed %d, %d GC runs reclaimed %d MiB in all, directory %d MiB",
		st.Consumed, st.Buffer.GCRuns, st.Buffer.GCReclaimed>>20, st.Buffer.DiskUsage>>20)
	if st.Consumed < n {
		t.Errorf("the agent consumed %d records, want all %d: consumption did not resume", st.Consumed, n)
	}
	if st.Buffer.Blocked != "" {
		t.Errorf("the buffer still says blocked: %q", st.Buffer.Blocked)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
}

// fillTo writes a file of size bytes, as another process filling the disk
// would.
func fillTo(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 1<<20)
	for written := int64(0); written < size; {
		k := min(int64(len(block)), size-written)
		if _, err := f.Write(block[:k]); err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
		written += k
	}
}

// TestRestartDuringOutage: an agent killed and restarted while
// Elasticsearch is out of reach finds its backlog in the buffer and does
// not buffer it again. Re-reading from the committed offset (which cannot
// move during the outage) into a buffer that already holds those records
// would add a full copy of the backlog at every restart: the disk limit
// would fill with copies while new records wait in Kafka (where retention
// may delete them), and the commit would wait for every copy. Then
// Elasticsearch returns and every record is indexed exactly once.
func TestRestartDuringOutage(t *testing.T) {
	const (
		partitions = 4
		n          = 20_000
		restarts   = 2
	)
	requireShortSessions(t, time.Second)
	topic := newTopic(t, partitions)
	proxy := newESProxy(t)
	proxy.Stop()
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ESURL: proxy.URL, RequestTimeout: "5s", SessionTimeout: "1s", HeartbeatInterval: "250ms"}
	produce(t, topic, 0, n)

	for i := 0; i <= restarts; i++ {
		a := startAgent(t, o)
		// Settled: the agent owns the partitions, has read all it is going
		// to read and has written it to disk.
		var st agentStatus
		last, since := int64(-1), time.Now()
		waitFor(t, time.Minute, fmt.Sprintf("agent %d settled", i+1), func() (bool, string) {
			a.requireRunning("during the outage")
			st = a.stats()
			if st.Consumed != last {
				last, since = st.Consumed, time.Now()
			}
			return len(st.Assigned) > 0 && st.Buffer.OpenRecords == 0 && time.Since(since) > 2*time.Second,
				fmt.Sprintf("%d partitions, consumed %d, %d records open, %d on disk",
					len(st.Assigned), st.Consumed, st.Buffer.OpenRecords, st.Buffer.DiskRecords)
		})
		t.Logf("agent %d: consumed %d, %d records on disk for the %d in Kafka", i+1, st.Consumed, st.Buffer.DiskRecords, n)
		if st.Buffer.DiskRecords > n {
			t.Errorf("agent %d: the buffer holds %d records, %d of them copies of records it already held",
				i+1, st.Buffer.DiskRecords, st.Buffer.DiskRecords-n)
		}
		if i < restarts {
			a.kill()
		} else {
			a.stop(30 * time.Second)
		}
	}

	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, o)
	waitFor(t, 2*time.Minute, "every record indexed after the outage", func() (bool, string) {
		got := esCount(t, o.Index)
		return got >= n, fmt.Sprintf("%d of %d indexed", got, n)
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	st := a.stats()
	t.Logf("after the outage: %d indexed, %d found already indexed", st.Output.Indexed, st.Output.Duplicates)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
}
