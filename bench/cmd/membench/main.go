// Command membench measures the agent's memory while a backlog builds up in
// its buffer: the real binary (built from ./cmd/shipper), the real Kafka of
// the e2e stack (test/e2e/stacktest), and Elasticsearch unreachable (a
// closed port on 127.0.0.1), so everything consumed stays in the buffer.
//
// It produces -produce bytes of the e2e suite's sample logs into a new topic
// with -partitions partitions, then, for each buffer.memory_limit in
// -limits, runs the agent -runs times, one after the other, each a fresh
// agent (a new data dir and a consumer group of its own, reading the same
// topic from the earliest offset), and samples every -interval until
// /api/status shows buffer.disk_bytes ≥ -backlog:
//
//	/proc/<pid>/status   VmRSS, RssAnon, RssFile, RssShmem, VmHWM
//	/api/metrics         go_memstats_heap_inuse_bytes, _heap_alloc_bytes, _sys_bytes
//	/api/status          buffer disk_bytes, memory_bytes, consumed_records, blocked
//
// and compares the peaks with the documented ceiling, memory_limit +
// agent.Config.MemoryOverhead() (= agent.Config.SoftMemoryLimit()). The
// summary goes to -out (each run's peaks, and per limit their median, min
// and max over the runs), every sample to <out without .txt>-<limit>.tsv
// for the first run and <out without .txt>-<limit>-run<n>.tsv for run n ≥ 2.
//
// After the first run of each limit, and only that one, it restarts the
// agent -trials times over that run's backlog (restart.go):
// same data dir and configuration, Elasticsearch now a bulksink, Kafka
// still reachable; the first trial after the run's SIGTERM, the later ones
// after a kill -9 at the first delivery. Each is timed from exec to the
// first bulk request. The headline figures and the memory over time go to
// <out without .txt>.json (bench/internal/figures): the peaks, the time to
// the backlog and the ingestion rate over the runs, the memory over time
// of the first run. -quick (or BENCH_QUICK=1) is a smoke run of one small
// limit, one run. The topic is deleted at the end.
//
//	go run ./bench/cmd/membench -out bench/results/memory.txt
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/agent"
	"github.com/shipper-agent/shipper/bench/internal/agentlog"
	"github.com/shipper-agent/shipper/bench/internal/agentrun"
	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/logtopic"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/quick"
	"github.com/shipper-agent/shipper/test/e2e/loggen"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

// figure is one memory figure the report gives the peak of.
type figure struct {
	name string
	f    func(sample) int64
}

// peakFigures are the figures whose peaks the report compares with the
// ceiling and explains.
var peakFigures = []figure{
	{"RssAnon", func(s sample) int64 { return s.rssAnon }},
	{"heap in use", func(s sample) int64 { return s.heapInuse }},
	{"Go sys", func(s sample) int64 { return s.goSys }},
	{"VmRSS", func(s sample) int64 { return s.vmRSS }},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "membench:", err)
		os.Exit(1)
	}
}

type options struct {
	out        string
	dir        string
	limits     []shipper.ByteSize
	backlog    shipper.ByteSize
	produce    shipper.ByteSize
	partitions int
	producers  int
	interval   time.Duration
	runTimeout time.Duration
	agentBin   string
	keepTopic  bool
	profile    bool
	trials     int
	runs       int
	quick      bool
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("membench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.out, "out", "", "summary file; samples go beside it (default: stdout, no samples)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "parent of the temporary agent binary and data directories")
	limits := fs.String("limits", "64MiB,256MiB", "buffer.memory_limit values, -runs agent runs each")
	backlog := fs.String("backlog", "2GiB", "stop a run when buffer.disk_bytes reaches this")
	produce := fs.String("produce", "2300MiB", "record bytes (key + value) to produce into the topic first")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the topic")
	fs.IntVar(&o.producers, "producers", 4, "concurrent producing goroutines")
	fs.DurationVar(&o.interval, "interval", 100*time.Millisecond, "sampling interval")
	fs.DurationVar(&o.runTimeout, "run-timeout", 6*time.Minute, "give up on an agent run after this long")
	fs.StringVar(&o.agentBin, "agent", "", "agent binary to run (default: go build ./cmd/shipper into a temp dir)")
	fs.BoolVar(&o.keepTopic, "keep-topic", false, "do not delete the topic at the end")
	fs.BoolVar(&o.profile, "profile", true, "after the binary runs, run each limit again inside this process for a heap profile at the heap's peak")
	fs.IntVar(&o.runs, "runs", 3, "agent runs per limit, one after the other, each with a fresh data dir and consumer group; the report gives the median, min and max over them")
	fs.IntVar(&o.trials, "trials", 3, "restarts over the backlog of each limit's first run, timed to the first bulk request")
	quick.Flag(fs, &o.quick, "smoke run: "+quickNote+", for the flags not given")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.quick {
		if err := quick.Apply(fs, quickFlags); err != nil {
			return err
		}
	}
	if o.runs < 1 {
		return fmt.Errorf("-runs %d: want at least 1", o.runs)
	}
	for _, s := range strings.Split(*limits, ",") {
		l, err := shipper.ParseByteSize(s)
		if err != nil {
			return err
		}
		o.limits = append(o.limits, l)
	}
	var err error
	if o.backlog, err = shipper.ParseByteSize(*backlog); err != nil {
		return err
	}
	if o.produce, err = shipper.ParseByteSize(*produce); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	tmp, err := os.MkdirTemp(o.dir, "membench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	info := machine.Describe(tmp)
	start := time.Now()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "membench: [%s] %s\n", time.Since(start).Round(time.Second), fmt.Sprintf(format, args...))
	}

	if o.agentBin == "" {
		if o.agentBin, err = agentrun.Build(ctx, tmp, progress); err != nil {
			return err
		}
	}

	progress("starting or reusing the e2e stack (stacktest.Up)")
	stack, err := stacktest.Up(ctx, os.Stderr)
	if err != nil {
		return err
	}
	topic := fmt.Sprintf("membench-%d", time.Now().UnixNano())
	prod, err := produceBacklog(ctx, stack.KafkaBrokers, topic, o, progress)
	if !o.keepTopic {
		defer logtopic.Delete(stack.KafkaBrokers, topic, progress)
	}
	if err != nil {
		return err
	}
	prod.kafkaDisk = dirSize(filepath.Join(stack.Dir, "kafka", "data"))
	progress("produced %d records, %.0f MB (key + value) in %s; Kafka's data dir holds %.0f MB",
		prod.records, float64(prod.bytes)/1e6, prod.took.Round(time.Second), float64(prod.kafkaDisk)/1e6)

	// A run that fails is reported with what it measured and why it
	// stopped, and makes the program fail after writing the results. The
	// restart trials need a backlog, so they follow the first run of a
	// limit, before its data dir goes.
	var runs []*agentRun
	var failed error
runs:
	for _, limit := range o.limits {
		for n := 1; n <= o.runs; n++ {
			dir := filepath.Join(tmp, fmt.Sprintf("agent-%s-run%d", limit, n))
			r, err := runAgent(ctx, dir, stack.KafkaBrokers, topic, limit, n, o, progress)
			if r != nil {
				runs = append(runs, r)
			}
			if err == nil && n == 1 && r.reached > 0 {
				err = restartTrials(ctx, r, o.trials, o.agentBin, progress)
			}
			os.RemoveAll(dir)
			if err != nil {
				failed = fmt.Errorf("memory_limit %s, run %d: %w", limit, n, err)
				break runs
			}
		}
	}

	var profiles []*heapProfile
	for _, limit := range o.limits {
		if !o.profile || failed != nil {
			break
		}
		keep := ""
		if o.out != "" {
			keep = strings.TrimSuffix(o.out, ".txt") + "-" + limit.String() + ".heap.pprof"
		}
		p, err := profileAgent(ctx, tmp, stack.KafkaBrokers, topic, limit, o, keep, progress)
		if err != nil {
			failed = fmt.Errorf("heap profile, memory_limit %s: %w", limit, err)
			break
		}
		profiles = append(profiles, p)
	}

	var w io.Writer = os.Stdout
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
		for _, r := range runs {
			if err := r.writeSamples(samplesPath(o.out, r)); err != nil {
				return err
			}
		}
	}
	report(w, info, o, topic, prod, runs, profiles, time.Since(start))
	if failed != nil {
		fmt.Fprintf(w, "FAILED: %v\n", failed)
	}
	if err := figuresOf(info, o, runs).WriteBeside(o.out, start); err != nil {
		return errors.Join(failed, err)
	}
	return failed
}

// quickFlags are the settings of -quick: a smoke run of well under a
// minute once the agent is built and the stack is up.
var quickFlags = map[string]string{"limits": "64MiB", "runs": "1", "backlog": "128MiB", "produce": "150MiB", "trials": "1", "profile": "false"}

const quickNote = "one limit (64MiB), one run, backlog 128MiB, produce 150MiB, one restart, no heap profile"

// samplesPath is where the samples of r go beside the summary out:
// <out without .txt>-<limit>.tsv for a limit's first run, and
// <out without .txt>-<limit>-run<n>.tsv for run n ≥ 2.
func samplesPath(out string, r *agentRun) string {
	base := strings.TrimSuffix(out, ".txt") + "-" + r.limit.String()
	if r.run > 1 {
		base += fmt.Sprintf("-run%d", r.run)
	}
	return base + ".tsv"
}

// produced describes the backlog written to Kafka.
type produced struct {
	records, bytes int64
	took           time.Duration
	kafkaDisk      int64
}

// produceBacklog writes loggen records 0, 1, 2, … until o.produce bytes
// (key + value) are in the topic. Producers take ranges of records in turn;
// each range is written by loggen.Produce, which waits for Kafka's acks.
func produceBacklog(ctx context.Context, broker, topic string, o options, progress func(string, ...any)) (produced, error) {
	progress("creating topic %s with %d partitions and producing %s of loggen records", topic, o.partitions, o.produce)
	setup, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := loggen.CreateTopic(setup, broker, topic, o.partitions); err != nil {
		return produced{}, err
	}
	w := loggen.Writer(broker, topic)
	defer w.Close()
	const rangeLen = 20_000
	var next, records, sent atomic.Int64
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, o.producers)
	var wg sync.WaitGroup
	t0 := time.Now()
	lastReport := atomic.Int64{}
	for p := range o.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Load() < int64(o.produce) {
				from := int(next.Add(rangeLen) - rangeLen)
				var n int64
				for i := from; i < from+rangeLen; i++ {
					n += int64(len(loggen.Record(i)) + len(strconv.Itoa(i)))
				}
				if err := loggen.Produce(pctx, w, from, rangeLen); err != nil {
					errs[p] = err
					cancel()
					return
				}
				records.Add(rangeLen)
				total := sent.Add(n)
				if s := int64(time.Since(t0) / (10 * time.Second)); s > lastReport.Load() {
					lastReport.Store(s)
					progress("produced %.0f MB", float64(total)/1e6)
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return produced{}, fmt.Errorf("produce: %w", err)
	}
	return produced{records: records.Load(), bytes: sent.Load(), took: time.Since(t0)}, nil
}

// sample is one observation of the agent.
type sample struct {
	at                                        time.Duration // since the agent started
	vmRSS, rssAnon, rssFile, rssShmem, vmHWM  int64
	heapInuse, heapAlloc, goSys               int64
	diskBytes, memoryBytes, consumed, records int64
	blocked                                   string
}

type agentRun struct {
	limit        shipper.ByteSize
	run          int   // 1, 2, … among the runs of this limit
	ceiling      int64 // memory_limit + MemoryOverhead()
	overhead     int64
	cfg          agent.Config
	conf         agentConf
	samples      []sample
	reached      time.Duration // when disk_bytes ≥ backlog; 0 if never
	firstRecord  time.Duration // first sample with consumed records
	exit         string
	shutdownTook time.Duration
	logCounts    map[string]int // "LEVEL msg" → count, warnings and errors
	problem      string
	logTail      []string // the agent's last log lines, when something went wrong
	smaps        string   // /proc/<pid>/smaps_rollup when the backlog was reached
	maps         string   // file mappings by type then
	restarts     []restartTrial
}

// smapsRollup returns the memory summary lines of /proc/<pid>/smaps_rollup
// that tell anonymous from file-backed and clean from dirty.
func smapsRollup(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return err.Error()
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "Rss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty", "Anonymous", "Swap":
			keep = append(keep, k+" "+strings.Join(strings.Fields(v), " "))
		}
	}
	return strings.Join(keep, ", ")
}

// mappedFiles sums the process's file mappings by file extension: the
// value-log files (.vlog) and memtables (.mem) badger maps.
func mappedFiles(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return err.Error()
	}
	type agg struct {
		n    int
		size uint64
	}
	byExt := map[string]*agg{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		a, _ := strconv.ParseUint(lo, 16, 64)
		z, _ := strconv.ParseUint(hi, 16, 64)
		ext := cmp.Or(filepath.Ext(f[5]), "other")
		if byExt[ext] == nil {
			byExt[ext] = &agg{}
		}
		byExt[ext].n++
		byExt[ext].size += z - a
	}
	var parts []string
	for _, ext := range slices.Sorted(maps.Keys(byExt)) {
		parts = append(parts, fmt.Sprintf("%s: %d mappings, %s", ext, byExt[ext].n, mib(int64(byExt[ext].size))))
	}
	return strings.Join(parts, "; ")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// agentConf is what an agent run's configuration file varies: data and
// the configuration file in dir, the API on apiPort, a consumer group of its
// own reading the topic from the earliest offset, and Elasticsearch at esURL.
type agentConf struct {
	dir, broker, topic string
	limit              shipper.ByteSize
	apiPort            int
	group              string
	esURL              string
}

// newAgentConf picks the ports and the group of a new run (its name holds
// the limit, the run (0: the in-process run of profile.go) and the time, so
// that no two runs share offsets): Elasticsearch
// at a port that was free a moment ago and is closed now, so connections
// are refused at once, as when Elasticsearch is down.
func newAgentConf(dir, broker, topic string, limit shipper.ByteSize, run int) (agentConf, error) {
	apiPort, err := freePort()
	if err != nil {
		return agentConf{}, err
	}
	esPort, err := freePort()
	if err != nil {
		return agentConf{}, err
	}
	which := fmt.Sprintf("run%d", run)
	if run == 0 {
		which = "inprocess"
	}
	return agentConf{dir: dir, broker: broker, topic: topic, limit: limit, apiPort: apiPort,
		group: fmt.Sprintf("membench-%s-%s-%d", limit, which, time.Now().UnixNano()), esURL: fmt.Sprintf("http://127.0.0.1:%d", esPort)}, nil
}

func (c agentConf) api() string { return fmt.Sprintf("http://127.0.0.1:%d", c.apiPort) }

// write writes the configuration file into c.dir (replacing one written
// before) and parses it as the agent will.
func (c agentConf) write() (string, agent.Config, error) {
	conf := fmt.Sprintf(`data_dir = %q
shutdown_timeout = "2s"
log {
  level  = "info"
  format = "json"
}
api {
  address = "127.0.0.1:%d"
}
kafka {
  brokers      = [%q]
  topics       = [%q]
  group_id     = %q
  start_offset = "earliest"
}
buffer {
  memory_limit = %q
  disk_limit   = "10GiB"
}
elasticsearch {
  urls  = [%q]
  index = "membench"
}
`, c.dir, c.apiPort, c.broker, c.topic, c.group, c.limit, c.esURL)
	path := filepath.Join(c.dir, "shipper.hcl")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", agent.Config{}, err
	}
	cfg, err := agent.ParseConfig(path, []byte(conf))
	return path, cfg, err
}

// writeConfig writes the configuration of a new run into dir (see
// newAgentConf).
func writeConfig(dir, broker, topic string, limit shipper.ByteSize, run int) (agentConf, string, agent.Config, error) {
	c, err := newAgentConf(dir, broker, topic, limit, run)
	if err != nil {
		return c, "", agent.Config{}, err
	}
	path, cfg, err := c.write()
	return c, path, cfg, err
}

// runAgent runs the agent in dir (run n of limit) until the backlog builds
// up, then stops it with SIGTERM; it leaves dir (and the backlog in it) to
// the caller.
func runAgent(ctx context.Context, dir, broker, topic string, limit shipper.ByteSize, n int, o options,
	progress func(string, ...any)) (*agentRun, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf, confPath, cfg, err := writeConfig(dir, broker, topic, limit, n)
	if err != nil {
		return nil, err
	}
	r := &agentRun{limit: limit, run: n, cfg: cfg, conf: conf, overhead: cfg.MemoryOverhead(), ceiling: cfg.SoftMemoryLimit()}
	progress("memory_limit %s: run %d of %d: starting the agent (ceiling memory_limit + MemoryOverhead() = %s)", limit, n, o.runs, mib(r.ceiling))

	logPath := filepath.Join(dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(o.agentBin, "run", "-config", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The agent sets its own soft memory limit unless GOMEMLIMIT is set.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMEMLIMIT=") })
	// Killed if this program dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	started := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		r.exit, r.shutdownTook = stopAgent(cmd, exited)
		logFile.Close()
		r.logCounts = agentlog.Count(logPath, func(level string) bool { return level == "WARN" || level == "ERROR" })
		if r.problem != "" || r.exit != "exit 0" {
			r.logTail = tail(logPath, 30)
		}
	}()

	api := conf.api()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	deadline := time.After(o.runTimeout)
	lastProgress := time.Now()
	for {
		select {
		case <-ctx.Done():
			r.problem = "interrupted: " + ctx.Err().Error()
			return r, ctx.Err()
		case err := <-exited:
			exited <- err
			r.problem = fmt.Sprintf("the agent exited before the backlog reached %s: %v", o.backlog, err)
			return r, errors.New(r.problem + "; see its log lines in the results")
		case <-deadline:
			r.problem = fmt.Sprintf("the backlog did not reach %s within %s", o.backlog, o.runTimeout)
			return r, nil
		case <-tick.C:
		}
		s, ok := take(client, api, cmd.Process.Pid)
		if !ok {
			continue // not up yet, or one request failed: try again next tick
		}
		s.at = time.Since(started)
		r.samples = append(r.samples, s)
		if r.firstRecord == 0 && s.consumed > 0 {
			r.firstRecord = s.at
		}
		if time.Since(lastProgress) >= 10*time.Second {
			lastProgress = time.Now()
			progress("memory_limit %s run %d: %s: backlog %.0f MB, %d records, RssAnon %s, heap in use %s, VmRSS %s%s",
				limit, n, s.at.Round(time.Second), float64(s.diskBytes)/1e6, s.consumed, mib(s.rssAnon), mib(s.heapInuse),
				mib(s.vmRSS), cond(s.blocked != "", ", appends blocked: "+s.blocked))
		}
		if s.diskBytes >= int64(o.backlog) {
			r.reached = s.at
			r.smaps, r.maps = smapsRollup(cmd.Process.Pid), mappedFiles(cmd.Process.Pid)
			progress("memory_limit %s run %d: backlog %.0f MB reached after %s", limit, n, float64(s.diskBytes)/1e6, s.at.Round(time.Millisecond))
			return r, nil
		}
	}
}

func cond(ok bool, s string) string {
	if ok {
		return s
	}
	return ""
}

// stopAgent sends SIGTERM, waits for a graceful stop, then kills.
func stopAgent(cmd *exec.Cmd, exited chan error) (string, time.Duration) {
	t0 := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		return exitString(err), time.Since(t0)
	case <-time.After(30 * time.Second):
	}
	_ = cmd.Process.Kill()
	err := <-exited
	return "killed after 30s without stopping: " + exitString(err), time.Since(t0)
}

func exitString(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// take reads one sample; ok is false if any source did not answer.
func take(client *http.Client, api string, pid int) (s sample, ok bool) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, false
	}
	for _, line := range strings.Split(string(st), "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.vmRSS = kb << 10
		case "RssAnon":
			s.rssAnon = kb << 10
		case "RssFile":
			s.rssFile = kb << 10
		case "RssShmem":
			s.rssShmem = kb << 10
		case "VmHWM":
			s.vmHWM = kb << 10
		}
	}
	metrics, err := get(client, api+"/api/metrics")
	if err != nil {
		return s, false
	}
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	for sc.Scan() {
		name, val, found := strings.Cut(sc.Text(), " ")
		if !found {
			continue
		}
		f, _ := strconv.ParseFloat(val, 64)
		switch name {
		case "go_memstats_heap_inuse_bytes":
			s.heapInuse = int64(f)
		case "go_memstats_heap_alloc_bytes":
			s.heapAlloc = int64(f)
		case "go_memstats_sys_bytes":
			s.goSys = int64(f)
		}
	}
	body, err := get(client, api+"/api/status")
	if err != nil {
		return s, false
	}
	var status struct {
		Consumed int64 `json:"consumed_records"`
		Buffer   struct {
			DiskBytes   int64  `json:"disk_bytes"`
			DiskRecords int64  `json:"disk_records"`
			MemoryBytes int64  `json:"memory_bytes"`
			Blocked     string `json:"blocked"`
		} `json:"buffer"`
	}
	if err := json.Unmarshal(body, &status); err != nil {
		return s, false
	}
	s.consumed, s.records = status.Consumed, status.Buffer.DiskRecords
	s.diskBytes, s.memoryBytes, s.blocked = status.Buffer.DiskBytes, status.Buffer.MemoryBytes, status.Buffer.Blocked
	return s, true
}

func get(client *http.Client, url string) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// tail returns the last n lines of a file.
func tail(path string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[max(0, len(lines)-n):]
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// peak returns the sample with the largest f and that value.
func (r *agentRun) peak(f func(sample) int64) (int64, time.Duration) {
	var best int64
	var at time.Duration
	for _, s := range r.samples {
		if v := f(s); v > best {
			best, at = v, s.at
		}
	}
	return best, at
}

// rate is the ingestion rate into the buffer, from the first consumed
// record to the last sample: records/s and stored MB/s.
func (r *agentRun) rate() (recs, mbps float64, d time.Duration) {
	if len(r.samples) == 0 {
		return 0, 0, 0
	}
	var first sample
	for _, s := range r.samples {
		if s.consumed > 0 {
			first = s
			break
		}
	}
	last := r.samples[len(r.samples)-1]
	d = last.at - first.at
	if d <= 0 {
		return 0, 0, 0
	}
	return float64(last.consumed-first.consumed) / d.Seconds(), float64(last.diskBytes-first.diskBytes) / 1e6 / d.Seconds(), d
}

func (r *agentRun) blockedShare() (memory, other int) {
	for _, s := range r.samples {
		switch {
		case strings.HasPrefix(s.blocked, "memory_limit"):
			memory++
		case s.blocked != "":
			other++
		}
	}
	return memory, other
}

func (r *agentRun) writeSamples(path string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# membench samples, buffer.memory_limit %s, run %d, ceiling %d B; times in seconds since the agent started, sizes in bytes\n", r.limit, r.run, r.ceiling)
	fmt.Fprintln(&b, "t\tVmRSS\tRssAnon\tRssFile\tRssShmem\tVmHWM\theap_inuse\theap_alloc\tgo_sys\tbuffer_disk_bytes\tbuffer_memory_bytes\tconsumed_records\tblocked")
	for _, s := range r.samples {
		fmt.Fprintf(&b, "%.3f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", s.at.Seconds(), s.vmRSS, s.rssAnon, s.rssFile,
			s.rssShmem, s.vmHWM, s.heapInuse, s.heapAlloc, s.goSys, s.diskBytes, s.memoryBytes, s.consumed, s.blocked)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func report(w io.Writer, info machine.Info, o options, topic string, prod produced, runs []*agentRun, profiles []*heapProfile, took time.Duration) {
	fmt.Fprintln(w, "# membench: agent memory while a backlog builds up (Kafka real, Elasticsearch unreachable)")
	fmt.Fprintf(w, "# command: %s\n", quick.Command("membench", o.quick))
	info.Write(w)
	fmt.Fprintf(w, "# kafka: topic %s, %d partitions, %d loggen records, %.0f MB of key + value, produced in %s (%.0f MB/s);\n",
		topic, o.partitions, prod.records, float64(prod.bytes)/1e6, prod.took.Round(time.Second), float64(prod.bytes)/1e6/prod.took.Seconds())
	fmt.Fprintf(w, "#        the broker's data dir held %.0f MB after producing; the topic is deleted at the end\n", float64(prod.kafkaDisk)/1e6)
	fmt.Fprintf(w, "# agent: sampled every %s until buffer.disk_bytes >= %s; everything else at its default\n", o.interval, o.backlog)
	fmt.Fprintln(w, "#        (chunk_size 4MiB, disk_limit 10GiB, 4 workers (max_in_flight), sync_writes true); GOMEMLIMIT unset, so the")
	fmt.Fprintln(w, "#        agent sets the Go soft memory limit to SoftMemoryLimit() = the ceiling below.")
	fmt.Fprintf(w, "# runs: %d per limit, one after the other, each a fresh agent (a new data dir and consumer group, the same topic);\n", o.runs)
	fmt.Fprintln(w, "#        every table and section below gives each run, and the peaks section per limit the median [min–max] over")
	fmt.Fprintln(w, "#        the runs; the restart trials follow the first run only (they need its backlog)")
	if o.out != "" {
		base := filepath.Base(strings.TrimSuffix(o.out, ".txt"))
		fmt.Fprintf(w, "# samples: %s-<limit>.tsv for run 1, %s-<limit>-run<n>.tsv for run n ≥ 2\n", base, base)
	}
	fmt.Fprintf(w, "# took %s\n", took.Round(time.Second))
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## peaks vs the ceiling (memory_limit + MemoryOverhead()); MiB = 2^20 bytes")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "memory_limit\trun\tceiling\tpeak RssAnon\tpeak heap in use\tpeak heap alloc\tpeak Go sys\tpeak VmRSS\tVmHWM\tpeak RssFile\tRssAnon ≤ ceiling\ttime to backlog\tsamples\t")
	for _, r := range runs {
		anon, _ := r.peak(func(s sample) int64 { return s.rssAnon })
		inuse, _ := r.peak(func(s sample) int64 { return s.heapInuse })
		alloc, _ := r.peak(func(s sample) int64 { return s.heapAlloc })
		sys, _ := r.peak(func(s sample) int64 { return s.goSys })
		rss, _ := r.peak(func(s sample) int64 { return s.vmRSS })
		hwm, _ := r.peak(func(s sample) int64 { return s.vmHWM })
		file, _ := r.peak(func(s sample) int64 { return s.rssFile })
		verdict := "yes"
		if anon > r.ceiling {
			verdict = fmt.Sprintf("NO: exceeds by %s", mib(anon-r.ceiling))
		}
		reached := "not reached"
		if r.reached > 0 {
			reached = r.reached.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", r.limit, r.run, mib(r.ceiling), mib(anon), mib(inuse),
			mib(alloc), mib(sys), mib(rss), mib(hwm), mib(file), verdict, reached, len(r.samples))
	}
	tw.Flush()
	for _, r := range runs {
		var over []string
		for _, p := range append(peakFigures, figure{"VmHWM", func(s sample) int64 { return s.vmHWM }}) {
			if v, _ := r.peak(p.f); v > r.ceiling {
				over = append(over, fmt.Sprintf("%s by %s", p.name, mib(v-r.ceiling)))
			}
		}
		verdict := "none"
		if len(over) > 0 {
			verdict = strings.Join(over, ", ")
		}
		fmt.Fprintf(w, "memory_limit %s run %d: peaks over the ceiling of %s: %s\n", r.limit, r.run, mib(r.ceiling), verdict)
	}
	for _, lr := range byLimit(runs) {
		h := headlinesOf(lr)
		fmt.Fprintf(w, "memory_limit %s, median [min–max] over %d runs: peak RssAnon %s, peak heap in use %s, time to backlog %s, records/s %s\n",
			lr[0].limit, len(lr), spread(h.anon, "%.1f MiB", "%.1f"), spread(h.heap, "%.1f MiB", "%.1f"),
			spread(h.reached, "%.1fs", "%.1f")+cond(h.notReached > 0, fmt.Sprintf(" (%d not reached)", h.notReached)), spread(h.recs, "%.0f", "%.0f"))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## memory beyond the buffer's own chunks vs MemoryOverhead(): peaks of a figure minus buffer memory_bytes")
	fmt.Fprintln(w, "## in the same sample (buffer memory_bytes: chunk bytes the buffer accounts against memory_limit)")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "memory_limit	run	peak buffer memory_bytes	MemoryOverhead()	peak RssAnon − memory_bytes	peak heap in use − memory_bytes	")
	for _, r := range runs {
		buf, _ := r.peak(func(s sample) int64 { return s.memoryBytes })
		anon, _ := r.peak(func(s sample) int64 { return s.rssAnon - s.memoryBytes })
		heap, _ := r.peak(func(s sample) int64 { return s.heapInuse - s.memoryBytes })
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t\n", r.limit, r.run, mib(buf), mib(r.overhead), mib(anon), mib(heap))
	}
	tw.Flush()
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## ingestion into the buffer (first consumed record to the last sample)")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "memory_limit\trun\trecords/s\tstored MB/s\tover\tfirst record after\tsamples with appends blocked on memory_limit\ton something else\t")
	for _, r := range runs {
		recs, mbps, d := r.rate()
		mem, other := r.blockedShare()
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.1f\t%s\t%s\t%d of %d\t%d\t\n", r.limit, r.run, recs, mbps, d.Round(100*time.Millisecond),
			r.firstRecord.Round(100*time.Millisecond), mem, len(r.samples), other)
	}
	tw.Flush()
	fmt.Fprintln(w)

	writeRestarts(w, runs)

	for _, r := range runs {
		fmt.Fprintf(w, "## memory_limit %s, run %d\n", r.limit, r.run)
		fmt.Fprintf(w, "ceiling: %s = memory_limit %s + MemoryOverhead() %s (48 MiB + badger memtables %s + %d workers × 2 × chunk_size %s)\n",
			mib(r.ceiling), r.limit, mib(r.overhead), mib(r.cfg.Buffer.StoreMemory()), r.cfg.Elasticsearch.MaxInFlight, r.cfg.Buffer.ChunkSize)
		for _, p := range peakFigures {
			v, at := r.peak(p.f)
			s := r.sampleAt(at)
			fmt.Fprintf(w, "peak %s %s at %s (then: RssAnon %s, heap in use %s, Go sys %s, VmRSS %s, RssFile %s, buffer memory_bytes %s, backlog %.0f MB)\n",
				p.name, mib(v), at.Round(100*time.Millisecond), mib(s.rssAnon), mib(s.heapInuse), mib(s.goSys), mib(s.vmRSS),
				mib(s.rssFile), mib(s.memoryBytes), float64(s.diskBytes)/1e6)
		}
		if r.smaps != "" {
			fmt.Fprintf(w, "at the backlog, /proc/<pid>/smaps_rollup: %s\n", r.smaps)
			fmt.Fprintf(w, "at the backlog, mapped files (virtual sizes): %s\n", r.maps)
		}
		if r.problem != "" {
			fmt.Fprintf(w, "PROBLEM: %s\n", r.problem)
		}
		fmt.Fprintf(w, "stop: %s after %s (SIGTERM; shutdown_timeout 2s)\n", r.exit, r.shutdownTook.Round(time.Millisecond))
		keys := slices.Sorted(maps.Keys(r.logCounts))
		if len(r.logTail) > 0 {
			fmt.Fprintln(w, "the agent's last log lines:")
			for _, l := range r.logTail {
				fmt.Fprintf(w, "  %s\n", truncate(l, 400))
			}
		}
		fmt.Fprintln(w, "agent warnings and errors (count × message):")
		for _, k := range keys {
			fmt.Fprintf(w, "  %6d × %s\n", r.logCounts[k], k)
		}
		fmt.Fprintln(w)
	}
	for _, p := range profiles {
		fmt.Fprintf(w, "## heap profile, memory_limit %s (the agent run inside membench, for attribution only)\n", p.limit)
		fmt.Fprintf(w, "taken at HeapInuse %s, %s after start, backlog %.0f MB", mib(p.heapInuse), p.at.Round(100*time.Millisecond), float64(p.backlog)/1e6)
		if p.path != "" {
			fmt.Fprintf(w, "; profile: %s (go tool pprof -top -sample_index=inuse_space %s)", filepath.Base(p.path), p.path)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "(inuse_space: objects live at the garbage collection before the profile, sampled; HeapInuse also")
		fmt.Fprintln(w, "counts garbage not yet collected and free space in in-use spans)")
		fmt.Fprintf(w, "%s\n\n", p.top)
	}
}

// headlines are a limit's headline figures over its runs, one value per
// run that has it: peak RssAnon and heap in use (MiB), time to the backlog
// (s), ingestion (records/s).
type headlines struct {
	anon, heap, reached, recs []float64
	notReached                int // runs that did not reach the backlog
}

func headlinesOf(runs []*agentRun) headlines {
	var h headlines
	for _, r := range runs {
		if len(r.samples) > 0 {
			anon, _ := r.peak(func(s sample) int64 { return s.rssAnon })
			heap, _ := r.peak(func(s sample) int64 { return s.heapInuse })
			h.anon = append(h.anon, float64(anon)/mibF)
			h.heap = append(h.heap, float64(heap)/mibF)
		}
		if r.reached > 0 {
			h.reached = append(h.reached, r.reached.Seconds())
		} else {
			h.notReached++
		}
		if recs, _, d := r.rate(); d > 0 {
			h.recs = append(h.recs, recs)
		}
	}
	return h
}

// spread formats the median of xs with format, then [min–max] with bound;
// "-" for none.
func spread(xs []float64, format, bound string) string {
	if len(xs) == 0 {
		return "-"
	}
	st := figures.Of(xs)
	return fmt.Sprintf(format+" ["+bound+"–"+bound+"]", st.Median, st.Min, st.Max)
}

// byLimit splits runs (in the order they ran) into the runs of each limit.
func byLimit(runs []*agentRun) [][]*agentRun {
	var out [][]*agentRun
	for _, r := range runs {
		if n := len(out); n > 0 && out[n-1][0].limit == r.limit {
			out[n-1] = append(out[n-1], r)
		} else {
			out = append(out, []*agentRun{r})
		}
	}
	return out
}

func (r *agentRun) sampleAt(at time.Duration) sample {
	for _, s := range r.samples {
		if s.at == at {
			return s
		}
	}
	return sample{}
}
