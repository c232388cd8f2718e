// Command peerbench runs the same work through shipper and through two
// peers, Benthos and Filebeat, and says which delivers faster, with how
// much CPU and memory (issue 11).
//
// The work: -records JSON log events of -value-bytes (logtopic.VariedValue,
// outputbench's) in a new 6-partition topic of the e2e stack's Kafka
// (test/e2e/stacktest; set SHIPPER_STACK_DIR to use a stack of your own),
// produced before any run, each delivered into a fresh index of the stack's
// Elasticsearch node with a document id from its topic, partition and
// offset. Contenders, each a child process:
//
//	shipper    the agent binary of this commit (go build ./cmd/shipper),
//	           every setting at its default
//	benthos    Benthos v4 (bench/peers/benthos): kafka_franz input,
//	           elasticsearch output
//	filebeat   Filebeat 7.17 (bench/peers/filebeat): its Kafka input and
//	           Elasticsearch output
//
// The peers are built once by bench/peers/build into a cache outside the
// repository (~/.cache/shipper-bench/peers); the results say how long the
// first build took. Every contender sends through the same pass-through
// proxy (proxy.go), which answers GET / as a full node does (the stack's
// minimal node answers it 405, and Filebeat's connect check needs it) and
// counts the documents created from the bulk answers. A run ends when the
// proxy has seen every document created (201); then a _refresh and
// _count of the index must find exactly -records. Measured per run: the
// time from the contender's exec to that moment, the contender's CPU
// (/proc/<pid>/stat then, and rusage over its whole life), its peak RSS
// (rusage) and RssAnon (/proc/<pid>/status every 100 ms), and the node's
// CPU.
//
// Each round runs every contender once, odd rounds in the order above,
// even rounds reversed. A contender that cannot run (its build failed, or
// its first run did) keeps its row, with its own error.
//
// Figures go to -out; progress to stderr. BENCH_QUICK=1 (or -quick) is a
// smoke run: one round of 20,000 events, the peers only if bench/peers/build
// already built them (their first build takes minutes).
//
//	SHIPPER_STACK_DIR=/tmp/shipper-stack-peers nice -n 19 go run ./bench/cmd/peerbench -out bench/results/peers.txt
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/agent"
	"github.com/shipper-agent/shipper/bench/internal/agentrun"
	"github.com/shipper-agent/shipper/bench/internal/cputime"
	"github.com/shipper-agent/shipper/bench/internal/esadmin"
	"github.com/shipper-agent/shipper/bench/internal/logtopic"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/plainconsumer"
	"github.com/shipper-agent/shipper/bench/internal/quick"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "peerbench:", err)
		os.Exit(1)
	}
}

type options struct {
	out         string
	dir         string
	records     int
	valueBytes  int
	partitions  int
	producers   int
	rounds      int
	runTimeout  time.Duration
	agentBin    string
	buildScript string
	only        string
	directCheck bool
	warmup      bool
	keepTopic   bool
	quick       bool
	tune        bool
	tunePasses  int
	peer        peerSettings
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("peerbench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.out, "out", "", "results file (default: stdout)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "parent of the temporary directory (the agent binary, every run's data, configs and logs)")
	fs.IntVar(&o.records, "records", 200_000, "events to produce; every run delivers all of them")
	fs.IntVar(&o.valueBytes, "value-bytes", 500, "size of each event's JSON value")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the topic")
	fs.IntVar(&o.producers, "producers", 4, "concurrent producing goroutines")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every contender once")
	fs.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "give up on one run after this long")
	fs.StringVar(&o.agentBin, "agent", "", "agent binary (default: go build ./cmd/shipper into the temporary directory)")
	fs.StringVar(&o.buildScript, "build", "bench/peers/build", "the script that builds the peers once, or finds them in its cache")
	fs.StringVar(&o.only, "only", "", "comma-separated contenders to run: shipper, benthos, filebeat (default: all)")
	fs.BoolVar(&o.directCheck, "direct-check", true, "before the rounds, start each peer against the node itself, without the proxy (Benthos with sniff and healthcheck on, as it comes), and keep its error")
	fs.BoolVar(&o.warmup, "warmup", true, "before the rounds, read the topic once in a consumer group and run shipper once, untimed (a fresh broker creates __consumer_offsets at the first group; a fresh node's JVM warms up)")
	fs.BoolVar(&o.keepTopic, "keep-topic", false, "do not delete the topic at the end")
	o.peer = defaultPeerSettings()
	fs.IntVar(&o.peer.benthosBatchCount, "benthos-batch-count", o.peer.benthosBatchCount, "Benthos: output batching.count")
	fs.StringVar(&o.peer.benthosBatchPeriod, "benthos-batch-period", o.peer.benthosBatchPeriod, "Benthos: output batching.period")
	fs.IntVar(&o.peer.benthosMaxInFlight, "benthos-max-in-flight", o.peer.benthosMaxInFlight, "Benthos: output max_in_flight")
	fs.IntVar(&o.peer.benthosCheckpoint, "benthos-checkpoint-limit", o.peer.benthosCheckpoint, "Benthos: input checkpoint_limit")
	fs.IntVar(&o.peer.benthosInputBatch, "benthos-input-batch", o.peer.benthosInputBatch, "Benthos: input batching.count per partition (0: none)")
	fs.IntVar(&o.peer.filebeatBulkMaxSize, "filebeat-bulk-max-size", o.peer.filebeatBulkMaxSize, "Filebeat: output bulk_max_size")
	fs.IntVar(&o.peer.filebeatWorkers, "filebeat-workers", o.peer.filebeatWorkers, "Filebeat: output worker")
	fs.IntVar(&o.peer.filebeatQueueEvents, "filebeat-queue-events", o.peer.filebeatQueueEvents, "Filebeat: queue.mem.events")
	fs.IntVar(&o.peer.filebeatFlushMin, "filebeat-flush-min-events", o.peer.filebeatFlushMin, "Filebeat: queue.mem.flush.min_events")
	fs.StringVar(&o.peer.filebeatFlushTimeout, "filebeat-flush-timeout", o.peer.filebeatFlushTimeout, "Filebeat: queue.mem.flush.timeout")
	quick.Flag(fs, &o.quick, "smoke run: one round of 20,000 events, no direct check or warm-up, for the flags not given; the peers only if already built")
	fs.BoolVar(&o.tune, "tune", false, "instead of the rounds, run each peer with each of a few settings (tune.go) and write their table")
	fs.IntVar(&o.tunePasses, "tune-passes", 2, "-tune: passes over the settings, every other one in reverse order")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.quick {
		// The peers' own words without the proxy and the untimed warm-up
		// are for results, not for a smoke run.
		if err := quick.Apply(fs, map[string]string{"records": "20000", "rounds": "1", "direct-check": "false", "warmup": "false"}); err != nil {
			return err
		}
	}
	names := []string{"shipper", "benthos", "filebeat"}
	if o.only != "" {
		names = nil
		for _, n := range strings.Split(o.only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains([]string{"shipper", "benthos", "filebeat"}, n) {
				return fmt.Errorf("-only: unknown contender %q", n)
			}
			names = append(names, n)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	tmp, err := os.MkdirTemp(o.dir, "peerbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	info := machine.Describe(tmp)
	b := &bench{o: o, tmp: tmp, start: time.Now(), nice: niceness()}

	// The peers first: a first build is the slowest step, and its time is
	// one of the results.
	for _, n := range names {
		if n == "shipper" {
			continue
		}
		p := b.buildPeer(ctx, n)
		b.peers = append(b.peers, p)
	}
	if slices.Contains(names, "shipper") {
		p := &peer{name: "shipper", version: shortCommit(info.Commit), bin: o.agentBin}
		if p.bin == "" {
			t0 := time.Now()
			if p.bin, err = agentrun.Build(ctx, tmp, b.progress); err != nil {
				return err
			}
			p.build = buildInfo{ThisRun: time.Since(t0), Built: true}
		}
		b.peers = append([]*peer{p}, b.peers...)
	}

	b.progress("starting or reusing the e2e stack in %s (stacktest.Up)", stacktest.Dir())
	stack, err := stacktest.Up(ctx, os.Stderr)
	if err != nil {
		return err
	}
	b.stack = stack
	b.es = esadmin.Admin{URL: stack.ESURL, Client: &http.Client{Timeout: time.Minute}}
	if st, err := stacktest.Status(ctx); err == nil {
		b.esSession, b.kafkaSession = st.Elasticsearch.PID, st.Kafka.PID
	}
	node, err := b.es.Node(ctx)
	if err != nil {
		return fmt.Errorf("the node: %w", err)
	}
	b.esInfo = b.es.Describe(ctx)
	if b.proxy, err = startProxy(stack.ESURL, node); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	defer b.proxy.Close()
	b.progress("proxy %s → %s (answers GET / as Elasticsearch %s, cluster %s)", b.proxy.URL(), stack.ESURL, node.Version, node.ClusterName)

	b.topic = fmt.Sprintf("peerbench-%d", time.Now().UnixNano())
	if !o.keepTopic {
		defer logtopic.Delete(stack.KafkaBrokers, b.topic, b.progress)
	}
	b.filled, err = logtopic.Fill(ctx, stack.KafkaBrokers, b.topic, logtopic.Spec{Records: o.records, ValueBytes: o.valueBytes,
		Partitions: o.partitions, Producers: o.producers, Varied: true})
	if err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	b.progress("produced %d events, %.0f MB (key + value), into %s in %s", o.records, float64(b.filled.Bytes)/1e6, b.topic,
		b.filled.Took.Round(100*time.Millisecond))

	if o.warmup {
		b.warmUp(ctx, names)
	}

	if o.directCheck {
		for _, p := range b.peers {
			if p.name == "shipper" || p.err != "" {
				continue
			}
			if b.directs == nil {
				b.directs = map[string]string{}
			}
			b.directs[p.name] = b.direct(ctx, p)
			b.progress("%s straight to the node, without the proxy: %s", p.name, b.directs[p.name])
		}
	}

	var runs []runResult
	var failed error
	var tuned []tuneResult
	if o.tune {
		tuned = b.tune(ctx)
		o.rounds = 0
		failed = ctx.Err()
	}
	for round := 1; round <= o.rounds && failed == nil; round++ {
		order := slices.Clone(b.peers)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, p := range order {
			if p.err != "" {
				continue
			}
			r, err := b.runContender(ctx, p, round)
			r.Round = round
			runs = append(runs, r)
			if ctx.Err() != nil {
				failed = ctx.Err()
				break
			}
			if err != nil {
				// The contender keeps its row with its own error and runs
				// no more: what fails once here fails every time.
				r.Err = err.Error()
				runs[len(runs)-1] = r
				p.err = fmt.Sprintf("round %d: %v", round, err)
				b.progress("round %d, %s FAILED: %v", round, p.name, err)
				continue
			}
			b.progress("round %d, %-8s %s", round, p.name+":", r.summary())
		}
	}

	w := io.Writer(os.Stdout)
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if o.tune {
		b.o.rounds = 0
		report(w, info, b, nil, time.Since(b.start))
		fmt.Fprintln(w)
		reportTune(w, b, tuned)
	} else {
		report(w, info, b, runs, time.Since(b.start))
	}
	if failed != nil {
		fmt.Fprintf(w, "\nFAILED: %v\n", failed)
		return failed
	}
	if !o.tune {
		if err := writeFigures(o.out, info, b, runs); err != nil {
			return err
		}
	}
	if o.out != "" {
		b.progress("figures in %s", o.out)
	}
	return nil
}

// bench is the state of one peerbench run.
type bench struct {
	o                       options
	tmp                     string
	start                   time.Time
	nice                    int
	peers                   []*peer
	stack                   *stacktest.Stack
	es                      esadmin.Admin
	esInfo                  string
	esSession, kafkaSession int
	proxy                   *proxy
	topic                   string
	filled                  logtopic.Filled
	indexes                 int
	directs                 map[string]string // each peer's own words without the proxy
	warm                    string            // what the warm-up did
	configs                 map[string]string // each contender's configuration file, from its first run
	samples                 map[string]string // a document each contender indexed, from its first run
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "peerbench: [%s] %s\n", time.Since(b.start).Round(time.Second), fmt.Sprintf(format, args...))
}

func (b *bench) peer(name string) *peer {
	for _, p := range b.peers {
		if p.name == name {
			return p
		}
	}
	return nil
}

// runContender runs one contender from the topic's start until the proxy
// has seen every document created, then checks the index's count.
func (b *bench) runContender(ctx context.Context, p *peer, round int) (runResult, error) {
	r := runResult{Contender: p.name, Load: machine.Load()}
	b.indexes++
	index := fmt.Sprintf("peerbench-%d-%d-%s", b.start.Unix(), b.indexes, p.name)
	if err := b.es.Create(ctx, index); err != nil {
		return r, err
	}
	defer b.es.Delete(index)
	dir, err := os.MkdirTemp(b.tmp, p.name+"-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	s := runSpec{dir: dir, broker: b.stack.KafkaBrokers, topic: b.topic, group: fmt.Sprintf("%s-%d-%s", b.topic, b.indexes, p.name),
		esURL: b.proxy.URL(), index: index, records: int64(b.o.records)}

	var conf, confPath string
	var args []string
	env := os.Environ()
	statusURL := ""
	switch p.name {
	case "shipper":
		port, err := agentrun.FreePort()
		if err != nil {
			return r, err
		}
		api := fmt.Sprintf("127.0.0.1:%d", port)
		statusURL = "http://" + api + "/api/status"
		conf, confPath = shipperConfig(s, api), filepath.Join(dir, "shipper.hcl")
		if _, err := agent.ParseConfig(confPath, []byte(conf)); err != nil {
			return r, fmt.Errorf("the agent's config: %w", err)
		}
		args = []string{"run", "-config", confPath}
		env = agentrun.Env()
	case "benthos":
		conf, confPath = benthosConfig(s, b.o.peer), filepath.Join(dir, "benthos.yaml")
		args = []string{"-c", confPath}
	case "filebeat":
		conf, confPath = filebeatConfig(s, b.o.peer), filepath.Join(dir, "filebeat.yml")
		args = filebeatArgs(dir, confPath)
	}
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return r, err
	}
	if b.configs == nil {
		b.configs = map[string]string{}
	}
	if _, ok := b.configs[p.name]; !ok {
		b.configs[p.name] = conf
	}
	r.Settings = settings(p.name, b.o.peer)

	m := b.around()
	pr := b.proxy.arm(s.records)
	c, err := startChild(p.bin, args, env, dir, filepath.Join(dir, "log"))
	if err != nil {
		return r, err
	}
	defer c.stop()
	deadline := time.NewTimer(b.o.runTimeout)
	defer deadline.Stop()
	var end cputime.Mark
	select {
	case <-pr.done:
		if end, err = cputime.Process(c.pid()); err != nil {
			return r, err
		}
	case err := <-c.exited:
		c.exited <- err
		r.Proxy = pr.counts()
		return r, fmt.Errorf("exited before the last document (%v, %d of %d created); its log ends:\n%s", err, r.Proxy.Created, s.records,
			agentrun.Tail(c.logPath, 15))
	case <-deadline.C:
		r.Proxy = pr.counts()
		return r, fmt.Errorf("%d of %d documents created after %s; its log ends:\n%s", r.Proxy.Created, s.records, b.o.runTimeout,
			agentrun.Tail(c.logPath, 15))
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.First, r.P10, r.P90, r.Last = at(&pr.first), at(&pr.p10), at(&pr.p90), at(&pr.last)
	r.User, r.Sys = end.User, end.Sys
	if statusURL != "" {
		if st, err := agentrun.ReadStatus(&http.Client{Timeout: 2 * time.Second}, statusURL); err == nil {
			r.Detail = fmt.Sprintf("agent: indexed %d, duplicates %d, retries %d", st.Output.Indexed, st.Output.Duplicates, st.Output.Retries)
		}
	}
	c.stop()
	m.finish(&r)
	r.Exit = c.exit
	if c.rusage != nil {
		r.WholeCPU = time.Duration(c.rusage.Utime.Nano() + c.rusage.Stime.Nano())
		r.MaxRSS = c.rusage.Maxrss << 10
	}
	r.PeakRSS, r.PeakAnon, r.Samples = c.peaks()
	r.LogLines, r.FirstError = logSummary(c.logPath)
	r.Proxy = pr.counts()
	r.Docs = r.Proxy.Created

	n, err := b.es.RefreshedCount(ctx, index)
	r.Counted = n
	if err != nil {
		return r, err
	}
	if b.samples == nil {
		b.samples = map[string]string{}
	}
	if _, ok := b.samples[p.name]; !ok {
		b.samples[p.name] = b.es.Sample(ctx, index)
	}
	if n != s.records {
		return r, fmt.Errorf("index %s holds %d documents after the proxy saw %d created; want %d", index, n, r.Docs, s.records)
	}
	return r, nil
}

// direct starts a peer against the node itself, without the proxy, for up
// to 20 s or until it logs that it cannot connect, and returns that line
// as the peer wrote it. Filebeat runs with its configuration of the
// rounds; Benthos with sniff and healthcheck at their defaults (on), as
// it comes.
func (b *bench) direct(ctx context.Context, p *peer) string {
	dir, err := os.MkdirTemp(b.tmp, p.name+"-direct-")
	if err != nil {
		return err.Error()
	}
	defer os.RemoveAll(dir)
	b.indexes++
	index := fmt.Sprintf("peerbench-%d-%d-%s-direct", b.start.Unix(), b.indexes, p.name)
	s := runSpec{dir: dir, broker: b.stack.KafkaBrokers, topic: b.topic, group: fmt.Sprintf("%s-%d-%s-direct", b.topic, b.indexes, p.name),
		esURL: b.stack.ESURL, index: index, records: int64(b.o.records)}
	var conf, confPath string
	var args []string
	switch p.name {
	case "filebeat":
		conf, confPath = filebeatConfig(s, b.o.peer), filepath.Join(dir, "filebeat.yml")
		args = filebeatArgs(dir, confPath)
	case "benthos":
		conf, confPath = benthosConfig(s, b.o.peer), filepath.Join(dir, "benthos.yaml")
		conf = strings.Replace(strings.Replace(conf, "    sniff: false\n", "", 1), "    healthcheck: false\n", "", 1)
		args = []string{"-c", confPath}
	default:
		return ""
	}
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err.Error()
	}
	c, err := startChild(p.bin, args, os.Environ(), dir, filepath.Join(dir, "log"))
	if err != nil {
		return err.Error()
	}
	defer b.es.Delete(index)
	defer c.stop()
	for t0 := time.Now(); time.Since(t0) < 20*time.Second && ctx.Err() == nil; {
		select {
		case err := <-c.exited:
			c.exited <- err
			return fmt.Sprintf("exited: %v; its log ends: %s", err, agentrun.Tail(c.logPath, 3))
		case <-time.After(250 * time.Millisecond):
		}
		if line := connectError(c.logPath); line != "" {
			return line
		}
	}
	n, _ := b.es.RefreshedCount(ctx, index)
	return fmt.Sprintf("no connection error logged in 20 s; %d documents indexed", n)
}

// connectError returns the first line of a peer's log that says its
// output could not connect (Filebeat's and Benthos's words).
func connectError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Failed to connect") || strings.Contains(l, "Non 2xx") {
			return l
		}
	}
	return ""
}

// filebeatArgs is Filebeat's command line: logs to stderr, everything
// under dir. Its home holds an empty module directory, or it logs an error
// for the missing one.
func filebeatArgs(dir, confPath string) []string {
	_ = os.MkdirAll(filepath.Join(dir, "module"), 0o755)
	return []string{"-e", "-c", confPath, "--strict.perms=false", "--path.home", dir, "--path.data", filepath.Join(dir, "data"),
		"--path.logs", filepath.Join(dir, "logs")}
}

// warmUp reads the topic once in a consumer group of its own (on a fresh
// broker the first group creates __consumer_offsets, which takes seconds;
// the topic's files come into the page cache) and runs the first
// contender once, untimed (a fresh node's JVM compiles its indexing path).
func (b *bench) warmUp(ctx context.Context, names []string) {
	t0 := time.Now()
	_, err := plainconsumer.Consume(ctx, plainconsumer.Config{Brokers: []string{b.stack.KafkaBrokers}, Topic: b.topic,
		Group: b.topic + "-warmup", Records: b.o.records})
	b.warm = fmt.Sprintf("the topic read once by a plain kafka-go consumer group in %s", time.Since(t0).Round(100*time.Millisecond))
	if err != nil {
		b.warm += fmt.Sprintf(" (failed: %v)", err)
	}
	for _, p := range b.peers {
		if p.err != "" {
			continue
		}
		r, err := b.runContender(ctx, p, 0)
		if err != nil {
			b.warm += fmt.Sprintf("; %s once, untimed: failed: %v", p.name, err)
		} else {
			b.warm += fmt.Sprintf("; %s once, untimed: %.0f docs/s", p.name, r.docsPerSec())
		}
		break
	}
	b.progress("warm-up: %s", b.warm)
}

func shortCommit(c string) string {
	h, rest, _ := strings.Cut(c, " ")
	if len(h) > 12 {
		h = h[:12]
	}
	if rest != "" {
		h += " (uncommitted changes)"
	}
	return h
}

// buildInfo is what is known of a peer's build.
type buildInfo struct {
	First   string        // the first build's record (build.txt), from the cache
	ThisRun time.Duration // how long this run's build step took (a cache hit: about a second)
	Built   bool          // this run built it
	Output  string        // the build step's stderr
	History []string      // every build of it on this machine (builds.log)
}

// buildPeer runs the build script for one peer: it builds the peer once
// into its cache, or finds it there, and prints the binary's path.
func (b *bench) buildPeer(ctx context.Context, name string) *peer {
	p := &peer{name: name}
	b.progress("%s: %s %s (builds it once into its cache, or finds it there)", name, b.o.buildScript, name)
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, b.o.buildScript, name)
	if b.o.quick {
		// A smoke run (CI's) runs the peers only if they are built: their
		// first build takes minutes.
		cmd.Env = append(os.Environ(), "SHIPPER_PEERS_CACHED_ONLY=1")
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, io.MultiWriter(&stderr, os.Stderr)
	err := cmd.Run()
	p.build.ThisRun = time.Since(t0)
	p.build.Output = stderr.String()
	p.build.Built = strings.Contains(p.build.Output, "peers: built ")
	var exit *exec.ExitError
	switch {
	case b.o.quick && errors.As(err, &exit) && exit.ExitCode() == 3:
		// The build script's answer to SHIPPER_PEERS_CACHED_ONLY=1.
		p.err = "not built: " + lastLines(p.build.Output, 1)
		return p
	case err != nil:
		p.err = fmt.Sprintf("build failed (%v): %s", err, lastLines(p.build.Output, 8))
		return p
	}
	p.bin = strings.TrimSpace(stdout.String())
	dir := filepath.Dir(p.bin)
	if rec, err := os.ReadFile(filepath.Join(dir, "build.txt")); err == nil {
		p.build.First = string(rec)
	}
	if log, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "builds.log")); err == nil {
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, " "+name+" ") {
				p.build.History = append(p.build.History, l)
			}
		}
	}
	// The cache directory is <name>-<version>.
	p.version = strings.TrimPrefix(filepath.Base(dir), name+"-")
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// around measures what else ran beside a contender (cputime.Around).
type aroundMark struct{ *cputime.Around }

func (b *bench) around() aroundMark {
	return aroundMark{cputime.StartAround(b.esSession, b.kafkaSession)}
}

// finish records, in r, the CPU the servers, this process and the whole
// machine spent since the mark.
func (m aroundMark) finish(r *runResult) {
	sp := m.Finish()
	r.ESCPU, r.KafkaCPU, r.ProxyCPU = sp.ES, sp.Kafka, sp.Self
	r.MachineBusy, r.MachineTotal = sp.MachineBusy, sp.MachineTotal
}

// niceness is this process's nice value (the contenders and a stack it
// starts inherit it).
func niceness() int {
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return 0
	}
	// The raw syscall returns 20 - nice.
	return 20 - prio
}
