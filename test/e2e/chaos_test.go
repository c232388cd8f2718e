//go:build e2e

package e2e

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestChaos runs the faults the other tests inject one at a time all
// together, on a schedule drawn from a seed, over the real stack: agents
// SIGKILLed and restarted, a fourth agent joining the group of three and
// leaving it, Elasticsearch nodes (proxies) refusing, stalling, slowing,
// resetting and silently dropping idle connections, 429 bursts, a full
// buffer filesystem; and in the stream, poison records (a mapping conflict)
// and aborted transactions. Every record carries a unique uid. At the end
// every produced record is looked for in Elasticsearch and in every
// agent's dead-letter store, and the run is judged in Jepsen's terms:
// lost, duplicated and unexpected must all be zero. docs/reliability.md
// describes the schedule and holds the latest figures.
//
// make test runs it for 2 minutes; make chaos for 15 (CHAOS_DURATION=,
// SEED= to replay a run's schedule and record stream).

var (
	chaosDuration = flag.Duration("chaos.duration", 2*time.Minute, "how long TestChaos injects faults (make chaos: 15m)")
	chaosSeed     = flag.Uint64("chaos.seed", 0, "TestChaos's seed, which draws the fault schedule and the record stream; 0 takes one from the clock")
	chaosRate     = flag.Int("chaos.rate", 500, "records a second TestChaos's plain producer writes")
)

const (
	chaosPartitions = 12
	chaosSession    = 3 * time.Second
	// chaosDrain bounds the wait, after the faults, for every agent to
	// deliver and commit everything; what is missing then counts as lost.
	chaosDrain = 4 * time.Minute
	// chaosIdle is the middleboxes' idle timeout while they act.
	chaosIdle = 2 * time.Second
	// One record in chaosPoisonOneIn breaks the index's mapping.
	chaosPoisonOneIn = 200
	// agent-1's buffer lives on a tmpfs of chaosTmpfs bytes with
	// min_free_space chaosMinFree, so that another process can fill it.
	chaosTmpfs   = 256 << 20
	chaosMinFree = 128 << 20
)

// chaosMapping gives "amount" a type a poison record's string cannot
// take: Elasticsearch answers that document 400 document_parsing_exception,
// which the agent dead-letters. (A value that is not JSON would not do:
// the agent indexes it as "message".)
const chaosMapping = `{"properties":{"uid":{"type":"keyword"},"seq":{"type":"long"},"kind":{"type":"keyword"},` +
	`"amount":{"type":"long"},"msg":{"type":"text"}}}`

// faultKind names a fault of the schedule.
type faultKind string

const (
	faultKill   faultKind = "kill"           // SIGKILL an agent of the three; restarted on its data dir after For
	faultMember faultKind = "join-leave"     // a fourth agent joins the group; SIGTERM after For
	faultDown   faultKind = "node-down"      // a node's proxy stops: connections refused, open ones closed
	faultStall  faultKind = "node-stall"     // a node stops reading (freeze toxic): requests and probes hang
	faultSlow   faultKind = "node-slow"      // latency each way, sometimes a bandwidth cap on uploads
	faultReset  faultKind = "node-reset"     // every connection reset ResetMS after its first bytes
	faultIdle   faultKind = "node-idle-drop" // a middlebox forgets connections idle for chaosIdle
	fault429    faultKind = "429-burst"      // index.blocks.read_only_allow_delete: every document answered 429
	faultDisk   faultKind = "disk-full"      // another process fills agent-1's buffer filesystem below min_free_space
)

var faultKinds = []faultKind{faultKill, faultMember, faultDown, faultStall, faultSlow, faultReset, faultIdle, fault429, faultDisk}

// fault is one event of the schedule: it starts At (from the start of the
// faults) and is undone For later.
type fault struct {
	Kind   faultKind
	At     time.Duration
	For    time.Duration
	Target int // the agent (kill, 0..2) or the node (node-*, 0..1)
	// Parameters of some kinds.
	LatencyMS, JitterMS, RateKBps int // node-slow
	ResetMS                       int // node-reset
	FreeMiB                       int // disk-full: what is left free
}

var nodeNames = [2]string{"es-a", "es-b"}

func (f fault) String() string {
	s := string(f.Kind)
	switch f.Kind {
	case faultKill:
		return fmt.Sprintf("%s agent-%d, restarted after %s", s, f.Target+1, f.For)
	case faultMember:
		return fmt.Sprintf("%s agent-4 joins, leaves after %s", s, f.For)
	case fault429:
		return fmt.Sprintf("%s for %s", s, f.For)
	case faultDisk:
		return fmt.Sprintf("%s agent-1's filesystem down to %d MiB free for %s", s, f.FreeMiB, f.For)
	case faultSlow:
		s += fmt.Sprintf(" %s for %s: %d±%d ms each way", nodeNames[f.Target], f.For, f.LatencyMS, f.JitterMS)
		if f.RateKBps > 0 {
			s += fmt.Sprintf(", uploads at %d KB/s", f.RateKBps)
		}
		return s
	case faultReset:
		return fmt.Sprintf("%s %s for %s: reset %d ms into each connection", s, nodeNames[f.Target], f.For, f.ResetMS)
	}
	return fmt.Sprintf("%s %s for %s", s, nodeNames[f.Target], f.For)
}

// chaosPlan draws the schedule of a run of d from the seed. Faults come in
// lanes; within a lane they follow one another with a gap, across lanes
// they overlap freely. No fault lasts past d.
func chaosPlan(seed uint64, d time.Duration) []fault {
	rng := rand.New(rand.NewPCG(seed, 0xc4a05))
	const s = time.Second
	dur := func(lo, hi time.Duration) time.Duration {
		return (lo + time.Duration(rng.Int64N(int64(hi-lo)+1))).Round(100 * time.Millisecond)
	}
	var plan []fault
	lane := func(gapLo, gapHi time.Duration, next func() fault) {
		for at := dur(gapLo, gapHi); ; {
			f := next()
			if at+f.For > d {
				return
			}
			f.At = at
			plan = append(plan, f)
			at += f.For + dur(gapLo, gapHi)
		}
	}
	lane(8*s, 25*s, func() fault { return fault{Kind: faultKill, Target: rng.IntN(3), For: dur(0, 4*s)} })
	lane(15*s, 40*s, func() fault { return fault{Kind: faultMember, For: dur(15*s, 40*s)} })
	for node := range 2 {
		lane(4*s, 15*s, func() fault {
			f := fault{Target: node}
			switch rng.IntN(5) {
			case 0:
				f.Kind, f.For = faultDown, dur(4*s, 15*s)
			case 1:
				f.Kind, f.For = faultStall, dur(8*s, 20*s)
			case 2:
				f.Kind, f.For = faultSlow, dur(10*s, 25*s)
				f.LatencyMS = 50 + rng.IntN(451)
				f.JitterMS = f.LatencyMS / 4
				if rng.IntN(2) == 0 {
					f.RateKBps = 256 + rng.IntN(1793)
				}
			case 3:
				f.Kind, f.For = faultReset, dur(3*s, 10*s)
				f.ResetMS = rng.IntN(301)
			default:
				f.Kind, f.For = faultIdle, dur(15*s, 30*s)
			}
			return f
		})
	}
	lane(10*s, 30*s, func() fault { return fault{Kind: fault429, For: dur(2*s, 8*s)} })
	lane(20*s, 45*s, func() fault { return fault{Kind: faultDisk, For: dur(5*s, 15*s), FreeMiB: 32 + rng.IntN(65)} })
	slices.SortStableFunc(plan, func(a, b fault) int { return cmp.Compare(a.At, b.At) })
	return plan
}

// recState is what the producer knows of a record.
type recState uint8

const (
	recPending   recState = iota // sent, no answer yet
	recCommitted                 // acknowledged (acks=all), or its transaction committed
	recAborted                   // its transaction aborted: must never be indexed
	recUnknown                   // the producer got an error: it may or may not be in Kafka
)

// chaosRecord is the ledger's entry for one record; its index is the
// record's seq.
type chaosRecord struct {
	state     recState
	poison    bool
	txn       bool
	partition int32
	offset    int64
}

// chaosLedger remembers every record produced.
type chaosLedger struct {
	mu        sync.Mutex
	recs      []chaosRecord
	committed int64
}

// reserve adds records (pending) and returns the seq of the first.
func (l *chaosLedger) reserve(recs []chaosRecord) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := len(l.recs)
	l.recs = append(l.recs, recs...)
	return first
}

func (l *chaosLedger) settle(seq int, st recState, partition int32, offset int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &l.recs[seq]
	r.state, r.partition, r.offset = st, partition, offset
	if st == recCommitted {
		l.committed++
	}
}

func (l *chaosLedger) committedCount() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committed
}

func (l *chaosLedger) snapshot() []chaosRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recs)
}

// chaosNode is one "Elasticsearch node" of the agents: a toxiproxy in
// front of a middlebox in front of the stack's node. Stopping the proxy
// refuses connections; the middlebox drops idle ones while it is awake.
type chaosNode struct {
	proxy *esProxy
	mb    *middlebox
}

// chaosSlot is an agent's place: its data dir, and the process running
// on it, if any.
type chaosSlot struct {
	name string
	opts agentOpts
	cur  *chaosProc // the latest process; nil if none ever ran
	// deadLetters is the store's size as last seen (it survives
	// restarts: the store is in the data dir).
	deadLetters int64
}

// chaosProc is one agent process.
type chaosProc struct {
	slot *chaosSlot
	p    *agentProc
	// gone: killed, stopping or crashed; the sampler leaves it alone and
	// only the test goroutine waits for it.
	gone      bool
	leaving   bool // SIGTERM sent at sigtermAt
	sigtermAt time.Time
	left      bool // its exit after SIGTERM was checked
	// counters holds the last values of chaosCounters the sampler saw.
	counters map[string]float64
}

// chaosCounters are the agents' counters the summary adds up, over every
// process as last seen (a killed process's last second is missed): what
// the pool saw, and evidence that each kind of fault reached the agents.
var chaosCounters = []struct{ name, metric, label string }{
	{"stalls", "shipper_output_stalls_total", ""},
	{"resurrections", "shipper_output_node_resurrections_total", ""},
	{"node deaths", "shipper_output_node_deaths_total", ""},
	{"hedges", "shipper_output_hedges_total", ""},
	{"reroutes", "shipper_output_reroutes_total", ""},
	{"429 cuts", "shipper_output_in_flight_limit_cuts_total", `cause="429"`},
	// Sent again after a kill or a rebalance, or a hedge's loser: the
	// re-sends the deterministic ids make harmless.
	{"found already indexed", "shipper_output_documents_total", `outcome="duplicate"`},
	{"blocked seconds", "shipper_buffer_blocked_seconds_total", ""},
	{"aborted records skipped", "shipper_input_filtered_records_total", ""},
}

// chaosWorkers are goroutines the run starts and stops together.
type chaosWorkers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (w *chaosWorkers) start(fns ...func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for _, fn := range fns {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			fn(ctx)
		}()
	}
}

// stop cancels and waits; safe twice and before start.
func (w *chaosWorkers) stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// chaosRun is the state of one TestChaos run. The fault schedule, agent
// starts and stops, and the verification run on the test goroutine; the
// producers and the sampler are workers.
type chaosRun struct {
	t       *testing.T
	seed    uint64
	run     string // the seed in base 36: every uid starts with it
	dur     time.Duration
	topic   string // also the group and the index
	nodes   [2]chaosNode
	diskDir string // agent-1's buffer filesystem
	filler  string // the file that fills it
	keepDir string // where a failed run leaves its logs
	start   time.Time
	plan    []fault
	tally   map[faultKind]int

	ledger    chaosLedger
	producers chaosWorkers
	sampler   chaosWorkers
	http      *http.Client

	mu       sync.Mutex
	slots    [4]*chaosSlot
	procs    []*chaosProc
	problems []string // crashes and producer errors, found by workers
	peakRSS  int64
	peakAnon int64
	peakWho  string
	// Progress: indexed documents plus dead letters, as sampled.
	progress     int64
	progressAt   time.Time
	longestStuck time.Duration
	longestFrom  time.Duration // when the longest stretch began, from start
	prodErrors   int
	// sawFSFull: agent-1 said its appends wait on the full filesystem.
	sawFSFull bool
}

func TestChaos(t *testing.T) {
	requireShortSessions(t, chaosSession)
	// toxiproxy's bandwidth toxic logs every interruption through
	// zerolog's global logger, a line per connection per fault.
	level := zerolog.GlobalLevel()
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	t.Cleanup(func() { zerolog.SetGlobalLevel(level) })
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	c := &chaosRun{t: t, seed: seed, run: strconv.FormatUint(seed, 36), dur: *chaosDuration,
		tally: map[faultKind]int{}, http: &http.Client{Timeout: 5 * time.Second},
		keepDir: filepath.Join(os.TempDir(), fmt.Sprintf("shipper-chaos-%d", seed))}
	t.Logf("chaos: seed %d, %s of faults, %d records/s; replay with: make chaos SEED=%d CHAOS_DURATION=%s",
		seed, c.dur, *chaosRate, seed, c.dur)
	c.plan = chaosPlan(seed, c.dur)
	for _, f := range c.plan {
		t.Logf("  planned +%-7s %s", f.At, f)
	}
	c.setUp()
	// Registered after every data dir exists, so it runs before they are
	// removed; after the agents' own clean-ups, so their logs are whole.
	t.Cleanup(c.keepOnFailure)

	for i := range 3 {
		c.startSlot(i)
	}
	waitGroupSettled(t, c.topic, chaosPartitions, c.running(0).p, c.running(1).p, c.running(2).p)
	c.start = time.Now()
	c.progressAt = c.start
	c.sampler.start(c.sample)
	t.Cleanup(c.sampler.stop)
	// The clients are made here, on the test goroutine, which alone may
	// fail the test; the clients close after the producers stopped.
	plain := franzClient(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	txn := franzClient(t, kgo.TransactionalID(c.topic+"-txn"))
	c.producers.start(func(ctx context.Context) { c.producePlain(ctx, plain) },
		func(ctx context.Context) { c.produceTransactions(ctx, txn) })
	t.Cleanup(c.producers.stop)

	c.runPlan()
	c.heal()
	c.producers.stop()
	t.Logf("%s faults over; producers stopped: %d records, %d committed", c.clock(), len(c.ledger.snapshot()), c.ledger.committedCount())
	drained, took := c.drain()
	c.sampler.stop()

	rep := c.verify()
	rep.drained, rep.drainTook = drained, took
	c.stopAll()
	if c2, e := committedOffsets(t, c.topic, c.topic, chaosPartitions), endOffsets(t, c.topic, chaosPartitions); drained && fmt.Sprint(c2) != fmt.Sprint(e) {
		t.Errorf("after the agents stopped: committed %v, want the end of every partition %v", c2, e)
	}
	summary := c.summary(rep)
	t.Log("\n" + summary)
	c.mu.Lock()
	problems := slices.Clone(c.problems)
	c.mu.Unlock()
	for _, p := range problems {
		t.Errorf("during the run: %s", p)
	}
	if !drained {
		t.Errorf("the agents did not deliver and commit everything within %s of the faults' end", chaosDrain)
	}
	for _, e := range c.unfelt(rep) {
		t.Errorf("a fault left no trace: %s; the run proved nothing about it", e)
	}
	if rep.lost > 0 || rep.duplicated > 0 || rep.unexpected > 0 || rep.misfiled > 0 {
		t.Errorf("chaos run seed %d failed: lost %d, duplicated %d, unexpected %d, dead-lettered without cause %d",
			seed, rep.lost, rep.duplicated, rep.unexpected, rep.misfiled)
	}
	if t.Failed() {
		c.writeKept("report.txt", summary+"\n"+rep.details())
	}
}

// TestChaosVerdict: TestChaos's verdict is worth what it can catch. One
// agent delivers plain records (one of them poison) and a committed and an
// aborted transaction, and the verdict finds nothing wrong. Then the index
// and the ledger are tampered with: a document deleted (lost), one indexed
// again under another id (duplicated), an aborted record's document and a
// stranger's indexed (unexpected), the poison record entered in the ledger
// as a good one (misfiled). The verdict counts each, exactly.
func TestChaosVerdict(t *testing.T) {
	c := &chaosRun{t: t, seed: 1, run: "verdict", tally: map[faultKind]int{}, http: &http.Client{Timeout: 5 * time.Second}}
	c.topic = newTopic(t, chaosPartitions)
	createIndex(t, c.topic, chaosMapping)
	for i := range c.slots {
		c.slots[i] = &chaosSlot{name: fmt.Sprintf("agent-%d", i+1),
			opts: agentOpts{Topic: c.topic, Group: c.topic, Index: c.topic, DataDir: t.TempDir()}}
	}
	c.startSlot(0)
	plain, txn := franzClient(t), franzClient(t, kgo.TransactionalID(c.topic+"-txn"))
	recs := make([]chaosRecord, 40) // seq 0..39
	recs[7].poison = true
	c.sendPlain(plain, recs)
	c.sendTxn(txn, make([]chaosRecord, 10), true)  // 40..49
	c.sendTxn(txn, make([]chaosRecord, 10), false) // 50..59
	if drained, _ := c.drain(); !drained {
		t.Fatal("one agent did not deliver 60 records within " + chaosDrain.String())
	}
	want := "committed 50, poison 1, aborted 10, indexed 49, dead-lettered 1, lost 0, duplicated 0, unexpected 0, misfiled 0"
	if got := c.verify().counts(); got != want {
		t.Fatalf("verdict before tampering: %s\nwant %s", got, want)
	}

	ledger := c.ledger.snapshot()
	put := func(id, source string) {
		if code := esDo(t, "PUT", "/"+c.topic+"/_doc/"+id+"?refresh=true", strings.NewReader(source), nil); code != 201 {
			t.Fatalf("index %s: HTTP %d", id, code)
		}
	}
	esDo(t, "DELETE", "/"+c.topic+"/_doc/"+docID(t, c.topic, int(ledger[3].partition), ledger[3].offset)+"?refresh=true", nil, nil)
	put("copy-of-5", `{"uid":"verdict-5","seq":5}`)
	put("aborted-55", `{"uid":"verdict-55","seq":55}`)
	put("stranger", `{"uid":"someone-else-1","seq":1}`)
	c.ledger.mu.Lock()
	c.ledger.recs[7].poison = false
	c.ledger.mu.Unlock()
	want = "committed 50, poison 0, aborted 10, indexed 48, dead-lettered 0, lost 1, duplicated 1, unexpected 2, misfiled 1"
	if got := c.verify().counts(); got != want {
		t.Fatalf("verdict after tampering: %s\nwant %s", got, want)
	}
	c.stopAll()
}

// setUp creates the topic, the index, the two nodes, agent-1's
// filesystem and the four agents' settings.
func (c *chaosRun) setUp() {
	t := c.t
	c.topic = newTopic(t, chaosPartitions)
	createIndex(t, c.topic, chaosMapping)
	esHost := strings.TrimPrefix(stack.ESURL, "http://")
	var urls []string
	for i := range c.nodes {
		mb := newMiddlebox(t, esHost, chaosIdle, idleDrop)
		mb.dormant.Store(true)
		c.nodes[i] = chaosNode{proxy: newProxyTo(t, strings.TrimPrefix(mb.URL, "http://")), mb: mb}
		urls = append(urls, c.nodes[i].proxy.URL)
	}
	c.diskDir = mountTmpfs(t, chaosTmpfs)
	c.filler = filepath.Join(c.diskDir, "filler")
	for i := range c.slots {
		o := agentOpts{Topic: c.topic, Group: c.topic, Index: c.topic, DataDir: t.TempDir(),
			ESURL: strings.Join(urls, ","), SessionTimeout: chaosSession.String(), HeartbeatInterval: "500ms",
			// Shorter than the defaults (60s, 10s) so that a stall is
			// seen, and routed around, several times in a short run.
			RequestTimeout: "15s", ESExtra: `stall_timeout = "5s"`}
		if i == 0 {
			o.BufferDir = filepath.Join(c.diskDir, "buffer")
			o.Extra = fmt.Sprintf(`min_free_space = "%dMiB"`, chaosMinFree>>20)
		}
		c.slots[i] = &chaosSlot{name: fmt.Sprintf("agent-%d", i+1), opts: o}
	}
}

// clock is the time since the faults began, for the log.
func (c *chaosRun) clock() string {
	if c.start.IsZero() {
		return "+0s"
	}
	return "+" + time.Since(c.start).Round(100*time.Millisecond).String()
}

func (c *chaosRun) problem(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problems = append(c.problems, fmt.Sprintf("%s ", c.clock())+fmt.Sprintf(format, args...))
}

// running returns the slot's live process, or nil.
func (c *chaosRun) running(i int) *chaosProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cp := c.slots[i].cur; cp != nil && !cp.gone {
		return cp
	}
	return nil
}

// startSlot starts an agent on the slot's data dir, once its previous
// process, if it was leaving, has exited.
func (c *chaosRun) startSlot(i int) {
	s := c.slots[i]
	if c.running(i) != nil {
		c.t.Logf("%s %s is running already", c.clock(), s.name)
		return
	}
	if prev := s.cur; prev != nil {
		c.awaitLeave(prev)
	}
	p := startAgent(c.t, s.opts)
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := &chaosProc{slot: s, p: p}
	s.cur = cp
	c.procs = append(c.procs, cp)
}

// killSlot SIGKILLs the slot's agent.
func (c *chaosRun) killSlot(i int) {
	cp := c.running(i)
	if cp == nil {
		c.t.Logf("%s %s is not running: nothing to kill", c.clock(), c.slots[i].name)
		return
	}
	c.mu.Lock()
	cp.gone = true
	c.mu.Unlock()
	if err := cp.p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.t.Fatalf("SIGKILL %s: %v", cp.slot.name, err)
	}
	select {
	case <-cp.p.done:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("%s (pid %d) still running 30s after SIGKILL", cp.slot.name, cp.p.cmd.Process.Pid)
	}
	// Killed by us, or exited by itself just before: the latter is a crash.
	if ws, ok := cp.p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		c.problem("%s exited by itself (%s) before it was killed; log %s", cp.slot.name, cp.p.cmd.ProcessState, cp.p.logPath)
	}
}

// leaveSlot sends SIGTERM; the exit is checked by awaitLeave, so the
// schedule goes on while the agent shuts down.
func (c *chaosRun) leaveSlot(i int) {
	cp := c.running(i)
	if cp == nil {
		c.t.Logf("%s %s is not running: nothing to stop", c.clock(), c.slots[i].name)
		return
	}
	c.mu.Lock()
	cp.gone, cp.leaving, cp.sigtermAt = true, true, time.Now()
	c.mu.Unlock()
	if err := cp.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.problem("SIGTERM %s: %v", cp.slot.name, err)
	}
}

// awaitLeave waits until a process sent SIGTERM has exited, and requires
// a clean exit within 40s of the signal (shutdown_timeout is 20s).
func (c *chaosRun) awaitLeave(cp *chaosProc) {
	if !cp.leaving || cp.left {
		return
	}
	cp.left = true
	// Looked at first: long after the signal, the deadline below is
	// ready at once too, and select would pick either.
	ended, err := cp.p.exited()
	if !ended {
		select {
		case err = <-cp.p.done:
			cp.p.done <- err
		case <-time.After(time.Until(cp.sigtermAt.Add(40 * time.Second))):
			c.problem("%s still running 40s after SIGTERM; log %s", cp.slot.name, cp.p.logPath)
			cp.p.cmd.Process.Kill()
			err := <-cp.p.done
			cp.p.done <- err
			return
		}
	}
	if err != nil {
		c.problem("%s exited with %v after SIGTERM; log %s", cp.slot.name, err, cp.p.logPath)
	}
}

// runPlan applies the schedule: each fault at its time, undone For later.
func (c *chaosRun) runPlan() {
	type step struct {
		at  time.Duration
		f   fault
		end bool
	}
	var steps []step
	for _, f := range c.plan {
		steps = append(steps, step{f.At, f, false}, step{f.At + f.For, f, true})
	}
	slices.SortStableFunc(steps, func(a, b step) int { return cmp.Compare(a.at, b.at) })
	for _, s := range steps {
		time.Sleep(time.Until(c.start.Add(s.at)))
		if s.end {
			c.t.Logf("%s end   %s", c.clock(), s.f)
			c.undo(s.f)
		} else {
			c.t.Logf("%s start %s", c.clock(), s.f)
			c.apply(s.f)
			c.tally[s.f.Kind]++
		}
	}
	time.Sleep(time.Until(c.start.Add(c.dur)))
}

func (c *chaosRun) apply(f fault) {
	t := c.t
	n := &c.nodes[f.Target%2]
	switch f.Kind {
	case faultKill:
		c.killSlot(f.Target)
	case faultMember:
		c.startSlot(3)
	case faultDown:
		n.proxy.Stop()
	case faultStall:
		n.proxy.freezeAfter(t, "upstream", 0)
	case faultSlow:
		for _, stream := range []string{"upstream", "downstream"} {
			n.proxy.addToxicJSON(t, fmt.Sprintf(`{"name":"slow-%s","type":"latency","stream":%q,"attributes":{"latency":%d,"jitter":%d}}`,
				stream, stream, f.LatencyMS, f.JitterMS))
		}
		if f.RateKBps > 0 {
			n.proxy.addToxicJSON(t, fmt.Sprintf(`{"name":"narrow","type":"bandwidth","stream":"upstream","attributes":{"rate":%d}}`, f.RateKBps))
		}
	case faultReset:
		n.proxy.addToxicJSON(t, fmt.Sprintf(`{"name":"reset","type":"reset_peer","stream":"upstream","attributes":{"timeout":%d}}`, f.ResetMS))
	case faultIdle:
		n.mb.dormant.Store(false)
	case fault429:
		c.setReadOnly(true)
	case faultDisk:
		free, want := freeSpace(t, c.diskDir), int64(f.FreeMiB)<<20
		if free <= want {
			t.Logf("%s %s: only %d MiB free already", c.clock(), f.Kind, free>>20)
			return
		}
		fillTo(t, c.filler, free-want)
	}
}

func (c *chaosRun) undo(f fault) {
	t := c.t
	n := &c.nodes[f.Target%2]
	switch f.Kind {
	case faultKill:
		c.startSlot(f.Target)
	case faultMember:
		c.leaveSlot(3)
	case faultDown:
		if err := n.proxy.Start(); err != nil {
			t.Fatalf("start %s's proxy again: %v", nodeNames[f.Target], err)
		}
	case faultStall:
		n.proxy.removeToxic(t, "freeze-upstream")
	case faultSlow:
		n.proxy.removeToxic(t, "slow-upstream")
		n.proxy.removeToxic(t, "slow-downstream")
		if f.RateKBps > 0 {
			n.proxy.removeToxic(t, "narrow")
		}
	case faultReset:
		n.proxy.removeToxic(t, "reset")
	case faultIdle:
		n.mb.dormant.Store(true)
	case fault429:
		c.setReadOnly(false)
	case faultDisk:
		if err := os.Remove(c.filler); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// setReadOnly sets or lifts the index's read_only_allow_delete block
// (what the flood-stage disk watermark sets): the node answers every
// document 429.
func (c *chaosRun) setReadOnly(on bool) {
	var v any
	if on {
		v = true
	}
	if code := esDo(c.t, "PUT", "/"+c.topic+"/_settings", mustJSON(map[string]any{"index.blocks.read_only_allow_delete": v}), nil); code != 200 {
		c.t.Fatalf("index.blocks.read_only_allow_delete = %v: HTTP %d", v, code)
	}
}

// heal makes sure nothing of the schedule is left: every fault ended by
// its step already, so this only checks, and restarts an agent that
// crashed.
func (c *chaosRun) heal() {
	for i, n := range c.nodes {
		if !n.proxy.Enabled {
			c.problem("%s's proxy still stopped after the schedule", nodeNames[i])
			n.proxy.Start()
		}
		if toxics := n.proxy.Toxics.GetToxicArray(); len(toxics) > 0 {
			c.problem("%s still has %d toxics after the schedule", nodeNames[i], len(toxics))
		}
		n.mb.dormant.Store(true)
	}
	if _, err := os.Stat(c.filler); err == nil {
		c.problem("the disk filler is still there after the schedule")
		os.Remove(c.filler)
	}
	for i := range 3 {
		if c.running(i) == nil {
			c.startSlot(i)
		}
	}
}

// producePlain writes *chaosRate records a second, round-robin over the
// partitions, a tenth of a second's worth at a time, until ctx ends.
func (c *chaosRun) producePlain(ctx context.Context, cl *kgo.Client) {
	rng := rand.New(rand.NewPCG(c.seed, 1))
	per := max(*chaosRate/10, 1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		recs := make([]chaosRecord, per)
		for i := range recs {
			recs[i].poison = rng.IntN(chaosPoisonOneIn) == 0
		}
		c.sendPlain(cl, recs)
	}
}

// produceTransactions writes a transaction of 10 to 60 records every 1 to
// 3 s; 4 in 10 are aborted.
func (c *chaosRun) produceTransactions(ctx context.Context, cl *kgo.Client) {
	rng := rand.New(rand.NewPCG(c.seed, 2))
	for {
		if err := sleep(ctx, time.Second+time.Duration(rng.Int64N(int64(2*time.Second)))); err != nil {
			return
		}
		recs := make([]chaosRecord, 10+rng.IntN(51))
		for i := range recs {
			recs[i].poison = rng.IntN(chaosPoisonOneIn) == 0
		}
		c.sendTxn(cl, recs, rng.IntN(10) >= 4)
	}
}

// sendPlain produces the records outside any transaction (acks=all): each
// counts as produced once the broker confirms it.
func (c *chaosRun) sendPlain(cl *kgo.Client, recs []chaosRecord) {
	first, out := c.build(recs, "plain")
	res := c.sync(cl, out)
	for i, r := range out {
		if err := res[r]; err != nil {
			c.ledger.settle(first+i, recUnknown, 0, -1)
			c.produceError(err)
		} else {
			c.ledger.settle(first+i, recCommitted, r.Partition, r.Offset)
		}
	}
}

// sendTxn produces the records in one transaction and commits or aborts
// it; a transaction any of whose records failed is aborted.
func (c *chaosRun) sendTxn(cl *kgo.Client, recs []chaosRecord, commit bool) {
	for i := range recs {
		recs[i].txn = true
	}
	first, out := c.build(recs, "txn")
	settleAll := func(st recState) {
		for i, r := range out {
			c.ledger.settle(first+i, st, r.Partition, r.Offset)
		}
	}
	if err := cl.BeginTransaction(); err != nil {
		c.produceError(err)
		settleAll(recAborted) // nothing was sent
		return
	}
	res := c.sync(cl, out)
	end := kgo.TransactionEndTry(commit)
	for _, err := range res {
		if err != nil {
			c.produceError(err)
			end = kgo.TryAbort
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch err := cl.EndTransaction(ctx, end); {
	case err != nil:
		c.produceError(err)
		settleAll(recUnknown)
	case end == kgo.TryCommit:
		settleAll(recCommitted)
	default:
		settleAll(recAborted)
	}
}

// build enters the records in the ledger and makes them: each carries its
// uid (the run, then its seq), its seq and its kind; a poison record's
// "amount" is a string the mapping refuses.
func (c *chaosRun) build(recs []chaosRecord, kind string) (int, []*kgo.Record) {
	first := c.ledger.reserve(recs)
	out := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		seq := first + i
		amount := strconv.Itoa(seq % 1000)
		if r.poison {
			amount = `"not a number"`
		}
		out[i] = &kgo.Record{Topic: c.topic, Partition: int32(seq % chaosPartitions),
			Value: fmt.Appendf(nil, `{"uid":"%s-%d","seq":%d,"kind":%q,"amount":%s,"msg":"record %d of chaos run %s, `+
				`padded to the size of a log line: the quick brown fox jumps over the lazy dog"}`,
				c.run, seq, seq, kind, amount, seq, c.run)}
	}
	return first, out
}

// sync produces the records and returns each one's error. The producers
// finish a batch they started even when the run stops them, so that no
// record is left pending.
func (c *chaosRun) sync(cl *kgo.Client, out []*kgo.Record) map[*kgo.Record]error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := map[*kgo.Record]error{}
	// Results come in the order they complete, not the order sent.
	for _, r := range cl.ProduceSync(ctx, out...) {
		res[r.Record] = r.Err
	}
	return res
}

func (c *chaosRun) produceError(err error) {
	c.mu.Lock()
	c.prodErrors++
	n := c.prodErrors
	c.mu.Unlock()
	if n <= 5 {
		c.t.Logf("%s produce: %v", c.clock(), err)
	}
}

// sample watches the agents once a second until ctx ends: crashes (an
// agent that exits unasked), their memory, their stall and resurrection
// counters, their dead-letter stores, and progress (documents indexed plus
// dead letters) against what was produced.
func (c *chaosRun) sample(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c.mu.Lock()
		var live []*chaosProc
		for _, cp := range c.procs {
			if cp.gone {
				continue
			}
			if ended, err := cp.p.exited(); ended {
				cp.gone = true
				c.problems = append(c.problems, fmt.Sprintf("%s %s exited unasked: %v; log %s", c.clock(), cp.slot.name, err, cp.p.logPath))
				continue
			}
			live = append(live, cp)
		}
		c.mu.Unlock()

		type seen struct {
			cp        *chaosProc
			ok        bool
			dead      int64
			counters  map[string]float64
			blocked   string
			rss, anon int64
		}
		var got []seen
		for _, cp := range live {
			s := seen{cp: cp}
			var st agentStatus
			m, err := scrapeMetricsWith(c.http, cp.p.api)
			if err == nil && c.getJSON(cp.p.api+"/api/status", &st) == nil {
				s.ok, s.dead, s.counters, s.blocked = true, st.Buffer.DeadLetters, map[string]float64{}, st.Buffer.Blocked
				for _, k := range chaosCounters {
					s.counters[k.name] = sumSeries(m, k.metric, k.label)
				}
			}
			s.rss, s.anon = procMemory(cp.p.cmd.Process.Pid)
			got = append(got, s)
		}
		var count struct {
			Count int64 `json:"count"`
		}
		countErr := c.getJSON(stack.ESURL+"/"+c.topic+"/_count", &count)
		committed := c.ledger.committedCount()

		c.mu.Lock()
		for _, s := range got {
			if s.rss > c.peakRSS {
				c.peakRSS, c.peakWho = s.rss, s.cp.slot.name
			}
			c.peakAnon = max(c.peakAnon, s.anon)
			if !s.ok {
				continue
			}
			s.cp.slot.deadLetters = s.dead
			s.cp.counters = s.counters
			c.sawFSFull = c.sawFSFull || strings.HasPrefix(s.blocked, "filesystem full")
		}
		if countErr == nil {
			progress := count.Count
			for _, sl := range c.slots {
				progress += sl.deadLetters
			}
			now := time.Now()
			switch {
			case progress > c.progress || committed <= progress:
				// Moving, or nothing waits.
				c.progress, c.progressAt = max(progress, c.progress), now
			case now.Sub(c.progressAt) > c.longestStuck:
				c.longestStuck, c.longestFrom = now.Sub(c.progressAt), c.progressAt.Sub(c.start)
			}
		}
		c.mu.Unlock()
	}
}

func (c *chaosRun) getJSON(url string, v any) error {
	res, err := c.http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

// sumSeries adds every series of the metric that has the label (name="value"),
// or every series when label is "".
func sumSeries(m promSamples, name, label string) float64 {
	var sum float64
	for k, v := range m {
		if (k == name || strings.HasPrefix(k, name+"{")) && strings.Contains(k, label) {
			sum += v
		}
	}
	return sum
}

// counted adds a counter of chaosCounters over every process, or over the
// processes of one slot. The caller holds c.mu.
func (c *chaosRun) counted(name string, slot *chaosSlot) float64 {
	var sum float64
	for _, cp := range c.procs {
		if slot == nil || cp.slot == slot {
			sum += cp.counters[name]
		}
	}
	return sum
}

// procMemory reads a process's resident set and its anonymous part (heap
// and stacks, what memory_limit bounds; the rest is mapped files) in bytes.
func procMemory(pid int) (rss, anon int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, _ := strings.Cut(sc.Text(), ":")
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "RssAnon":
			anon = kb << 10
		}
	}
	return rss, anon
}

// drain brings the joiner back if it ever ran (its dead-letter store is
// read from it, and it delivers what it left in its buffer), flushes every
// agent and waits until the group committed the end of every partition
// and no agent holds anything. It returns whether that happened within
// chaosDrain, and how long it took.
func (c *chaosRun) drain() (bool, time.Duration) {
	t := c.t
	began := time.Now()
	if c.slots[3].cur != nil {
		c.startSlot(3)
	}
	var live []*chaosProc
	for i := range c.slots {
		if cp := c.running(i); cp != nil {
			live = append(live, cp)
		}
	}
	for _, cp := range live {
		var res struct {
			Done  bool   `json:"done"`
			Error string `json:"error"`
		}
		cp.p.getJSON("POST", "/api/flush?wait=20s", &res)
		if !res.Done {
			t.Logf("%s flush of %s not done within 20s: %s", c.clock(), cp.slot.name, res.Error)
		}
	}
	var state string
	for time.Since(began) < chaosDrain {
		end := endOffsets(t, c.topic, chaosPartitions)
		committed := committedOffsets(t, c.topic, c.topic, chaosPartitions)
		idle := true
		var each []string
		for _, cp := range live {
			st := cp.p.stats()
			busy := st.Buffer.DiskChunks > 0 || st.Buffer.OpenRecords > 0 || st.Buffer.InFlightChunks > 0 || st.Output.Held != nil
			idle = idle && !busy
			each = append(each, fmt.Sprintf("%s: %d chunks on disk, %d open records, %d in flight, held %v",
				cp.slot.name, st.Buffer.DiskChunks, st.Buffer.OpenRecords, st.Buffer.InFlightChunks, st.Output.Held != nil))
		}
		state = fmt.Sprintf("committed %v, end %v; %s", committed, end, strings.Join(each, "; "))
		if idle && maps.Equal(committed, end) {
			t.Logf("%s drained in %s", c.clock(), time.Since(began).Round(100*time.Millisecond))
			return true, time.Since(began)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%s not drained after %s: %s", c.clock(), chaosDrain, state)
	return false, time.Since(began)
}

// stopAll stops every running agent with SIGTERM and requires clean exits.
func (c *chaosRun) stopAll() {
	for i := range c.slots {
		if cp := c.running(i); cp != nil {
			c.mu.Lock()
			cp.gone = true
			c.mu.Unlock()
			cp.p.stop(40 * time.Second)
		} else if cp := c.slots[i].cur; cp != nil {
			c.awaitLeave(cp)
		}
	}
}

// chaosReport is the verdict.
type chaosReport struct {
	committed, poison, aborted, unknown int
	indexed, deadLettered               int
	lost, duplicated, unexpected        int
	misfiled                            int // committed good records dead-lettered
	deadTwice                           int // dead letters of one record in more than one entry
	deadTwiceSame                       int // of those, in the store that had it already
	unknownIndexed                      int
	deadTypes                           map[string]int
	drained                             bool
	drainTook                           time.Duration
	// Examples of each problem, for the report.
	lostSeqs                                 []int
	dupNotes, unexpectedNotes, misfiledNotes []string
}

// counts is the verdict on one line.
func (r *chaosReport) counts() string {
	return fmt.Sprintf("committed %d, poison %d, aborted %d, indexed %d, dead-lettered %d, lost %d, duplicated %d, unexpected %d, misfiled %d",
		r.committed, r.poison, r.aborted, r.indexed, r.deadLettered, r.lost, r.duplicated, r.unexpected, r.misfiled)
}

func (r *chaosReport) note(list *[]string, format string, args ...any) {
	if len(*list) < 200 {
		*list = append(*list, fmt.Sprintf(format, args...))
	}
}

// esDoc is a document as the verification reads it.
type esDoc struct {
	ID     string `json:"_id"`
	Source struct {
		UID string `json:"uid"`
		Seq *int   `json:"seq"`
	} `json:"_source"`
	Sort []any `json:"sort"`
}

// readIndex returns every document of the index: a point in time paged
// in _shard_doc order, which reads each document once whatever its fields
// hold (duplicates included), and checks the number against _count.
func (c *chaosRun) readIndex() []esDoc {
	t := c.t
	esDo(t, "POST", "/"+c.topic+"/_refresh", nil, nil)
	var pit struct {
		ID string `json:"id"`
	}
	if code := esDo(t, "POST", "/"+c.topic+"/_pit?keep_alive=2m", nil, &pit); code != 200 {
		t.Fatalf("open a point in time on %s: HTTP %d", c.topic, code)
	}
	defer esDo(t, "DELETE", "/_pit", mustJSON(map[string]string{"id": pit.ID}), nil)
	var docs []esDoc
	var after []any
	for {
		q := map[string]any{"size": 10000, "_source": []string{"uid", "seq"}, "track_total_hits": false,
			"pit": map[string]any{"id": pit.ID, "keep_alive": "2m"}, "sort": []any{map[string]string{"_shard_doc": "asc"}}}
		if after != nil {
			q["search_after"] = after
		}
		var res struct {
			PitID string `json:"pit_id"`
			Hits  struct {
				Hits []esDoc `json:"hits"`
			} `json:"hits"`
		}
		if code := esDo(t, "POST", "/_search", mustJSON(q), &res); code != 200 {
			t.Fatalf("search %s: HTTP %d", c.topic, code)
		}
		docs = append(docs, res.Hits.Hits...)
		if len(res.Hits.Hits) < 10000 {
			break
		}
		pit.ID, after = res.PitID, res.Hits.Hits[len(res.Hits.Hits)-1].Sort
	}
	if n := esCount(t, c.topic); n != len(docs) {
		t.Fatalf("read %d documents of %s, _count says %d", len(docs), c.topic, n)
	}
	return docs
}

// verify checks every produced record against the index and every
// agent's dead-letter store.
func (c *chaosRun) verify() *chaosReport {
	t := c.t
	recs := c.ledger.snapshot()
	r := &chaosReport{deadTypes: map[string]int{}}
	for _, x := range recs {
		switch x.state {
		case recCommitted:
			r.committed++
			if x.poison {
				r.poison++
			}
		case recAborted:
			r.aborted++
		default:
			r.unknown++
		}
	}
	seqOf := func(uid string, seq *int) (int, bool) {
		if seq == nil || *seq < 0 || *seq >= len(recs) || uid != fmt.Sprintf("%s-%d", c.run, *seq) {
			return 0, false
		}
		return *seq, true
	}
	indexedAs := make([]string, len(recs))
	for _, d := range c.readIndex() {
		seq, ok := seqOf(d.Source.UID, d.Source.Seq)
		if !ok {
			r.unexpected++
			r.note(&r.unexpectedNotes, "document %s is no record of this run: uid %q", d.ID, d.Source.UID)
			continue
		}
		x := recs[seq]
		switch {
		case indexedAs[seq] != "":
			r.duplicated++
			r.note(&r.dupNotes, "record %d (%s, partition %d offset %d) indexed as %s and as %s", seq, x.kind(), x.partition, x.offset, indexedAs[seq], d.ID)
			continue
		case x.state == recAborted:
			r.unexpected++
			r.note(&r.unexpectedNotes, "document %s is record %d of an aborted transaction", d.ID, seq)
		case x.poison:
			r.unexpected++
			r.note(&r.unexpectedNotes, "document %s is poison record %d, which the mapping must refuse", d.ID, seq)
		case x.state != recCommitted:
			r.unknownIndexed++
		case d.ID != docID(t, c.topic, int(x.partition), x.offset):
			r.unexpected++
			r.note(&r.unexpectedNotes, "document %s is record %d, produced at partition %d offset %d, whose id is %s",
				d.ID, seq, x.partition, x.offset, docID(t, c.topic, int(x.partition), x.offset))
		default:
			r.indexed++
		}
		indexedAs[seq] = d.ID
	}
	deadIn := make([]string, len(recs))
	for i, s := range c.slots {
		cp := c.running(i)
		if cp == nil {
			if s.cur != nil {
				c.problem("%s is not running: its dead-letter store cannot be read", s.name)
			}
			continue
		}
		for _, d := range cp.p.deadLetters() {
			var v struct {
				UID string `json:"uid"`
				Seq *int   `json:"seq"`
			}
			json.Unmarshal([]byte(d.Value), &v)
			seq, ok := seqOf(v.UID, v.Seq)
			if !ok {
				r.unexpected++
				r.note(&r.unexpectedNotes, "dead letter %s in %s (%s, %s/%d@%d) is no record of this run", d.ID, s.name, d.Type, d.Topic, d.Partition, d.Offset)
				continue
			}
			x := recs[seq]
			where := fmt.Sprintf("%s entry %s", s.name, d.ID)
			switch {
			case d.Topic != c.topic || d.Partition != x.partition || d.Offset != x.offset:
				r.unexpected++
				r.note(&r.unexpectedNotes, "dead letter %s holds record %d but says %s/%d@%d, produced at %d@%d", where, seq, d.Topic, d.Partition, d.Offset, x.partition, x.offset)
			case x.state == recAborted:
				r.unexpected++
				r.note(&r.unexpectedNotes, "dead letter %s is record %d of an aborted transaction", where, seq)
			case len(d.Reasons) == 0:
				r.unexpected++
				r.note(&r.unexpectedNotes, "dead letter %s (record %d) has no reason", where, seq)
			case deadIn[seq] != "":
				// Delivered twice to dead letters, as a record is sent
				// twice to Elasticsearch after a kill: a replay of both
				// finds the deterministic id the first one created.
				r.deadTwice++
				if strings.HasPrefix(deadIn[seq], s.name+" ") {
					r.deadTwiceSame++
				}
			case !x.poison:
				r.misfiled++
				r.note(&r.misfiledNotes, "dead letter %s: record %d could be indexed, dead-lettered as %s: %v", where, seq, d.Type, d.Reasons)
			default:
				r.deadLettered++
				r.deadTypes[d.Type]++
			}
			if deadIn[seq] == "" {
				deadIn[seq] = where
			}
		}
	}
	for seq, x := range recs {
		if x.state == recCommitted && indexedAs[seq] == "" && deadIn[seq] == "" {
			r.lost++
			if len(r.lostSeqs) < 200 {
				r.lostSeqs = append(r.lostSeqs, seq)
			}
		}
	}
	return r
}

func (x chaosRecord) kind() string {
	k := "plain"
	if x.txn {
		k = "txn"
	}
	if x.poison {
		k += ", poison"
	}
	return k
}

// unfelt lists the kinds of fault the schedule applied that left no trace
// in the agents (or, for idle drops, in the middleboxes): a fault that
// does not reach the agent tests nothing. Slow nodes are not checked: the
// agent is right to take them in its stride.
func (c *chaosRun) unfelt(r *chaosReport) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	check := func(kind faultKind, ok bool, trace string) {
		if c.tally[kind] > 0 && !ok {
			out = append(out, fmt.Sprintf("%d × %s, yet %s", c.tally[kind], kind, trace))
		}
	}
	check(faultDown, c.counted("node deaths", nil) > 0, "no node was marked dead")
	check(faultStall, c.counted("stalls", nil)+c.counted("hedges", nil)+c.counted("node deaths", nil) > 0,
		"no stall, hedge or node death")
	check(faultReset, c.counted("node deaths", nil)+c.counted("reroutes", nil) > 0, "no node death or reroute")
	check(fault429, c.counted("429 cuts", nil) > 0, "the window was never cut for a 429")
	check(faultDisk, c.sawFSFull, "agent-1 never said its appends wait on the full filesystem")
	dropped := c.nodes[0].mb.expired.Load() + c.nodes[1].mb.expired.Load()
	check(faultIdle, dropped > 0, "the middleboxes dropped no connection")
	if r.aborted > 0 && c.counted("aborted records skipped", nil) == 0 {
		out = append(out, fmt.Sprintf("%d records aborted, yet no agent skipped one", r.aborted))
	}
	return out
}

// summary prints the run's figures in Jepsen's vocabulary.
func (c *chaosRun) summary(r *chaosReport) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var faults []string
	for _, k := range faultKinds {
		faults = append(faults, fmt.Sprintf("%s %d", k, c.tally[k]))
	}
	var counters []string
	for _, k := range chaosCounters {
		counters = append(counters, fmt.Sprintf("%s %g", k.name, c.counted(k.name, nil)))
	}
	var types []string
	for _, k := range slices.Sorted(maps.Keys(r.deadTypes)) {
		types = append(types, fmt.Sprintf("%s %d", k, r.deadTypes[k]))
	}
	drained := fmt.Sprintf("in %s", r.drainTook.Round(100*time.Millisecond))
	if !r.drained {
		drained = fmt.Sprintf("NO, still busy after %s", chaosDrain)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("chaos run: seed %d, %s of faults, %d agent processes; replay: make chaos SEED=%d CHAOS_DURATION=%s",
		c.seed, c.dur, len(c.procs), c.seed, c.dur)
	w("  faults         %s", strings.Join(faults, ", "))
	w("  produced       %d committed (%d of them poison), %d aborted, %d indeterminate (%d of those indexed); %d producer errors",
		r.committed, r.poison, r.aborted, r.unknown, r.unknownIndexed, c.prodErrors)
	w("  indexed        %d", r.indexed)
	w("  dead-lettered  %d (%s); %d more entries for records already dead-lettered (%d of them in the same store)",
		r.deadLettered, strings.Join(types, ", "), r.deadTwice, r.deadTwiceSame)
	w("  lost           %d", r.lost)
	w("  duplicated     %d", r.duplicated)
	w("  unexpected     %d", r.unexpected)
	w("  misfiled       %d (records that could be indexed, dead-lettered)", r.misfiled)
	w("  peak memory    RSS %.1f MiB (%s), anonymous %.1f MiB", float64(c.peakRSS)/(1<<20), c.peakWho, float64(c.peakAnon)/(1<<20))
	w("  stalls         %g detected, %g resurrections", c.counted("stalls", nil), c.counted("resurrections", nil))
	w("  agents saw     %s", strings.Join(counters, ", "))
	w("  no progress    longest stretch %s, from +%s", c.longestStuck.Round(100*time.Millisecond), c.longestFrom.Round(100*time.Millisecond))
	w("  drained        %s", drained)
	return strings.TrimRight(b.String(), "\n")
}

// details lists examples of every problem found.
func (r *chaosReport) details() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lost (first %d of %d, by seq): %v\n", len(r.lostSeqs), r.lost, r.lostSeqs)
	for title, notes := range map[string][]string{"duplicated": r.dupNotes, "unexpected": r.unexpectedNotes, "misfiled": r.misfiledNotes} {
		fmt.Fprintf(&b, "%s:\n", title)
		for _, n := range notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	return b.String()
}

// keepOnFailure copies every agent log, the schedule and what ran to
// keepDir when the test failed, and says where they are.
func (c *chaosRun) keepOnFailure() {
	if !c.t.Failed() {
		return
	}
	var plan strings.Builder
	for _, f := range c.plan {
		fmt.Fprintf(&plan, "+%-7s %s\n", f.At, f)
	}
	c.writeKept("schedule.txt", plan.String())
	for _, s := range c.slots {
		if s == nil {
			continue
		}
		logs, _ := filepath.Glob(filepath.Join(s.opts.DataDir, "agent-*.log"))
		for _, l := range logs {
			if err := copyFile(l, filepath.Join(c.keepDir, s.name+"-"+filepath.Base(l))); err != nil {
				c.t.Logf("keep %s: %v", l, err)
			}
		}
	}
	c.t.Logf("chaos run seed %d failed: agent logs, the schedule and the report are in %s; the index %s is left in the stack's node; "+
		"replay with: make chaos SEED=%d CHAOS_DURATION=%s", c.seed, c.keepDir, c.topic, c.seed, c.dur)
}

func (c *chaosRun) writeKept(name, content string) {
	err := os.MkdirAll(c.keepDir, 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(c.keepDir, name), []byte(content), 0o644)
	}
	if err != nil {
		c.t.Logf("keep %s: %v", name, err)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
