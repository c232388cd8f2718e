// Command outputbench measures the agent's Elasticsearch output end to end
// (issue 9): documents per second and CPU seconds per million documents,
// every contender in the same run, side by side.
//
// It produces -records JSON log events of -value-bytes (by default
// logtopic.VariedValue, whose bulk bodies gzip about 4× as logs do) into a
// new topic of the e2e stack's Kafka (test/e2e/stacktest; set
// SHIPPER_STACK_DIR to use a stack of your own), reads the topic back once
// into a file of the documents the agent will send (ids and sources),
// builds the agent binary once (go build ./cmd/shipper), and runs these
// contenders, each in a process of its own so its CPU time is its own:
//
//	agent→sink     the agent from Kafka through its buffer to bulksink, a
//	               fixture that answers valid bulk responses without
//	               indexing; ends when the sink has answered every document
//	plain          a plain kafka-go consumer group reading the same topic
//	               (bench/internal/plainconsumer); ends at the last record
//	loader         the project's own bulk loader (a child process): the same
//	               documents, prebuilt in memory into bulk create bodies as
//	               the agent writes them, POSTed with several requests in
//	               flight into a fresh index of the real node; its request
//	               size and concurrency are the best of a short search
//	               before the rounds: the ceiling
//	agent→es       the agent into a fresh index of the real node, all
//	               settings at their defaults; ends when its /api/status
//	               counts every document indexed (read every -poll)
//	agent→es gzip  the same with elasticsearch.compression = "gzip"
//	agent→es pinned, loader pinned
//	               agent→es and loader with the node's threads on one
//	               core and the client on the other (pin.go): as if on
//	               hosts of their own, where unpinned they share both cores
//
// and, in the first -side-rounds rounds, agent→es with one setting changed:
// buffer.chunk_size, elasticsearch.max_bulk_bytes, adaptive_concurrency
// off, max_in_flight 1 and 2. Every index is created beforehand with the
// same settings (1 shard, 0 replicas, refresh_interval 1s) and deleted
// after its run, once its refreshed _count was checked.
//
// Each round runs every contender once, odd rounds in the order above, even
// rounds reversed, each with its own consumer group and index. Ratios are
// taken within a round, between runs adjacent in time: agent→sink ÷ plain
// (goal ≥ 0.8) and agent→es ÷ loader (goal ≥ 0.9), pinned and not. After the rounds, one
// agent→sink run of the agent inside this process under the CPU profiler
// says where the agent's CPU time goes (-profile).
//
// Figures go to -out; progress to stderr. BENCH_QUICK=1 (or -quick) is a
// smoke run of every contender once on 20,000 events, under a minute.
//
//	SHIPPER_STACK_DIR=/tmp/shipper-stack-bench go run ./bench/cmd/outputbench -out bench/results/output.txt
package main

import (
	"cmp"
	"context"
	"encoding/json"
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/bench/internal/agentrun"
	"github.com/shipper-agent/shipper/bench/internal/cputime"
	"github.com/shipper-agent/shipper/bench/internal/esadmin"
	"github.com/shipper-agent/shipper/bench/internal/logtopic"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/quick"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "outputbench:", err)
		os.Exit(1)
	}
}

// kind is how a contender runs.
type kind int

const (
	agentToSink kind = iota
	plainKafka
	loaderToES
	agentToES
)

// contender is one configuration measured.
type contender struct {
	name   string
	kind   kind
	set    agentrun.Settings // agent contenders: settings changed from the defaults
	side   bool              // runs only in the first -side-rounds rounds
	pinned bool              // Elasticsearch on one core, the client on the other (pin.go)
	// baseline runs the -baseline binary instead of the agent under test,
	// only when one is given: a change measured side by side with what it
	// changed.
	baseline bool
}

// contenders in the order of odd rounds; even rounds reverse it. loader and
// agent→es are adjacent, agent→es and agent→es gzip, and the two pinned
// ones, so that their ratios compare runs next to each other in time.
var contenders = []contender{
	{name: "agent→sink", kind: agentToSink},
	{name: "agent→sink baseline", kind: agentToSink, baseline: true},
	{name: "plain", kind: plainKafka},
	{name: "loader", kind: loaderToES},
	{name: "agent→es", kind: agentToES},
	{name: "agent→es baseline", kind: agentToES, baseline: true},
	{name: "agent→es gzip", kind: agentToES, set: agentrun.Settings{Compression: "gzip"}},
	{name: "agent→es pinned", kind: agentToES, pinned: true},
	{name: "loader pinned", kind: loaderToES, pinned: true},
	{name: "chunk 1MiB", kind: agentToES, set: agentrun.Settings{ChunkSize: "1MiB"}, side: true},
	{name: "chunk 8MiB", kind: agentToES, set: agentrun.Settings{ChunkSize: "8MiB"}, side: true},
	{name: "bulk 1MiB", kind: agentToES, set: agentrun.Settings{MaxBulkBytes: "1MiB"}, side: true},
	{name: "bulk 2MiB", kind: agentToES, set: agentrun.Settings{MaxBulkBytes: "2MiB"}, side: true},
	{name: "adaptive off", kind: agentToES, set: agentrun.Settings{Adaptive: "false"}, side: true},
	{name: "in_flight 2", kind: agentToES, set: agentrun.Settings{MaxInFlight: 2}, side: true},
	{name: "in_flight 1", kind: agentToES, set: agentrun.Settings{MaxInFlight: 1}, side: true},
}

// quickFlags are the settings of a -quick run, for the flags not given.
var quickFlags = map[string]string{
	"records": "20000", "rounds": "1", "side-rounds": "1", "search-records": "20000", "warmup": "0",
	"loader-sizes": "1MiB,4MiB", "loader-concurrency": "2", "search-again": "1", "profile": "false",
}

type options struct {
	out           string
	dir           string
	records       int
	valueBytes    int
	values        string
	partitions    int
	producers     int
	rounds        int
	sideRounds    int
	searchRecords int
	searchAgain   int
	loaderSizes   []shipper.ByteSize
	loaderConc    []int
	warmup        int
	poll          time.Duration
	runTimeout    time.Duration
	agentBin      string
	baselineBin   string
	keepTopic     bool
	profile       bool
	only          string
	quick         bool
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("outputbench", flag.ContinueOnError)
	var o options
	var c childArgs
	fs.StringVar(&o.out, "out", "", "results file (default: stdout)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "parent of the temporary directory (agent binary, data dirs, the documents file)")
	fs.IntVar(&o.records, "records", 200_000, "events to produce; every run delivers all of them")
	fs.IntVar(&o.valueBytes, "value-bytes", 500, "size of each event's JSON value")
	fs.StringVar(&o.values, "values", "varied", "events: varied (logtopic.VariedValue: bulk bodies gzip ~4×) or repetitive (logtopic.Value, consumebench's: ~40×)")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the topic")
	fs.IntVar(&o.producers, "producers", 4, "concurrent producing goroutines")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of the main contenders (agent→sink, plain, loader, agent→es, agent→es gzip)")
	fs.IntVar(&o.sideRounds, "side-rounds", 3, "rounds that also run the settings variants (chunk_size, max_bulk_bytes, concurrency)")
	fs.IntVar(&o.searchRecords, "search-records", 100_000, "documents per run of the loader's settings search")
	fs.IntVar(&o.searchAgain, "search-again", 3, "the fastest settings of the loader's search that run a second time")
	sizes := fs.String("loader-sizes", "1MiB,4MiB,8MiB", "request sizes the loader's search tries")
	conc := fs.String("loader-concurrency", "1,2,4", "requests in flight the loader's search tries")
	fs.IntVar(&o.warmup, "warmup", 50_000, "documents of an untimed loader run before the search (the JVM's warm-up); 0: none")
	fs.DurationVar(&o.poll, "poll", 50*time.Millisecond, "how often agent→es runs read the agent's /api/status")
	fs.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "give up on one run after this long")
	fs.StringVar(&o.agentBin, "agent", "", "agent binary (default: go build ./cmd/shipper into the temporary directory)")
	fs.StringVar(&o.baselineBin, "baseline", "", "another agent binary (say, an earlier commit's) run beside agent→sink and agent→es in every round, as \"… baseline\"")
	fs.BoolVar(&o.keepTopic, "keep-topic", false, "do not delete the topic at the end")
	fs.BoolVar(&o.profile, "profile", true, "after the rounds, run agent→sink once inside this process under the CPU profiler (kept beside -out)")
	fs.StringVar(&o.only, "only", "", "comma-separated contender names to run (default: all)")
	quick.Flag(fs, &o.quick, "smoke run: 20,000 events, every contender once, no profile, a short loader search, for the flags not given")
	timeout := fs.Duration("timeout", 20*time.Minute, "give up after this long")
	// A child runs one contender and prints its result as JSON.
	fs.StringVar(&c.contender, "child", "", "internal: run this contender (plain or loader) and print its result")
	fs.StringVar(&c.brokers, "brokers", "", "internal: the plain child's Kafka")
	fs.StringVar(&c.topic, "topic", "", "internal: the plain child's topic")
	fs.StringVar(&c.group, "group", "", "internal: the plain child's consumer group")
	fs.StringVar(&c.esURL, "es", "", "internal: the loader's Elasticsearch")
	fs.StringVar(&c.index, "index", "", "internal: the loader's index")
	fs.StringVar(&c.docs, "docs", "", "internal: the loader's documents file")
	fs.Int64Var(&c.bulkBytes, "bulk-bytes", 0, "internal: the loader's request size")
	fs.IntVar(&c.concurrency, "concurrency", 0, "internal: the loader's requests in flight")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.contender != "" {
		c.records, c.timeout = o.records, o.runTimeout
		return runChild(ctx, c, os.Stdout)
	}
	if o.quick {
		if err := quick.Apply(fs, quickFlags); err != nil {
			return err
		}
	}
	for _, s := range strings.Split(*sizes, ",") {
		b, err := shipper.ParseByteSize(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-loader-sizes: %w", err)
		}
		o.loaderSizes = append(o.loaderSizes, b)
	}
	for _, s := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-loader-concurrency %q: want positive integers", *conc)
		}
		o.loaderConc = append(o.loaderConc, n)
	}
	if o.values != "varied" && o.values != "repetitive" {
		return fmt.Errorf("-values %q: want varied or repetitive", o.values)
	}
	o.searchRecords = min(o.searchRecords, o.records)
	o.warmup = min(o.warmup, o.records)
	var only map[string]bool
	if o.only != "" {
		only = map[string]bool{}
		for _, n := range strings.Split(o.only, ",") {
			only[strings.TrimSpace(n)] = true
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	tmp, err := os.MkdirTemp(o.dir, "outputbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	info := machine.Describe(tmp)
	start := time.Now()
	b := &bench{o: o, self: self, tmp: tmp, start: start}

	if o.agentBin == "" {
		if o.agentBin, err = agentrun.Build(ctx, tmp, b.progress); err != nil {
			return err
		}
		b.o.agentBin = o.agentBin
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
	b.esInfo = b.es.Describe(ctx)

	b.topic = fmt.Sprintf("outputbench-%d", time.Now().UnixNano())
	if !o.keepTopic {
		defer logtopic.Delete(stack.KafkaBrokers, b.topic, b.progress)
	}
	b.filled, err = logtopic.Fill(ctx, stack.KafkaBrokers, b.topic, logtopic.Spec{Records: o.records, ValueBytes: o.valueBytes,
		Partitions: o.partitions, Producers: o.producers, Varied: o.values == "varied"})
	if err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	b.progress("produced %d events, %.0f MB (key + value), into %s in %s", o.records, float64(b.filled.Bytes)/1e6, b.topic,
		b.filled.Took.Round(100*time.Millisecond))

	b.docs = filepath.Join(tmp, "documents")
	if b.prep, err = prepareDocuments(ctx, stack.KafkaBrokers, b.topic, o.partitions, o.records, b.docs); err != nil {
		return fmt.Errorf("reading the documents back: %w", err)
	}
	b.progress("wrote the %d documents (ids and sources, %.0f MB of sources, topic id %s) to %s", b.prep.Documents,
		float64(b.prep.SourceBytes)/1e6, b.prep.TopicID, b.docs)

	var failed error
	if only == nil || only["loader"] || only["loader pinned"] {
		failed = b.searchLoader(ctx)
	}
	var runs []runResult
	for round := 1; round <= o.rounds && failed == nil; round++ {
		order := slices.Clone(contenders)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, c := range order {
			if (c.side && round > o.sideRounds) || (only != nil && !only[c.name]) || (c.baseline && o.baselineBin == "") {
				continue
			}
			r, err := b.runContender(ctx, c, round)
			r.Round = round
			if err != nil {
				failed = fmt.Errorf("round %d, %s: %w", round, c.name, err)
				if r.Contender != "" {
					runs = append(runs, r)
				}
				break
			}
			b.progress("round %d, %-13s %s", round, c.name+":", r.summary())
			runs = append(runs, r)
		}
	}

	if o.profile && failed == nil && (only == nil || only["agent→sink"]) {
		keep := ""
		if o.out != "" {
			keep = strings.TrimSuffix(o.out, ".txt") + "-agent.cpu.pprof"
		}
		b.progress("CPU profile of agent→sink, the agent in this process")
		if b.profile, err = b.profileAgent(ctx, keep); err != nil {
			failed = fmt.Errorf("CPU profile: %w", err)
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
	report(w, info, b, runs, time.Since(start))
	if failed != nil {
		fmt.Fprintf(w, "\nFAILED: %v\n", failed)
		return failed
	}
	if err := writeFigures(o.out, info, b, runs, start); err != nil {
		return err
	}
	if o.out != "" {
		b.progress("figures in %s", o.out)
	}
	return nil
}

// bench is the state of one outputbench run.
type bench struct {
	o                       options
	self, tmp               string
	start                   time.Time
	stack                   *stacktest.Stack
	es                      esadmin.Admin
	esInfo                  string
	esSession, kafkaSession int
	topic                   string
	filled                  logtopic.Filled
	docs                    string
	prep                    prepared
	search                  []runResult // the loader's settings search
	warm                    *runResult
	best                    loaderSettings
	bestMean                float64
	indexes                 int
	profile                 *cpuProfile
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "outputbench: [%s] %s\n", time.Since(b.start).Round(time.Second), fmt.Sprintf(format, args...))
}

// newIndex creates a fresh index with the settings every contender gets.
func (b *bench) newIndex(ctx context.Context, what string) (string, error) {
	b.indexes++
	name := fmt.Sprintf("outputbench-%d-%d-%s", b.start.Unix(), b.indexes, what)
	return name, b.es.Create(ctx, name)
}

// searchLoader runs the loader once per request size × concurrency on the
// first -search-records documents (after an untimed warm-up run), then the
// -search-again fastest once more in the reverse order, and keeps the one
// with the highest mean as the ceiling's settings: one run each is at the
// mercy of the shared machine's noise.
func (b *bench) searchLoader(ctx context.Context) error {
	if b.o.warmup > 0 {
		r, err := b.runLoader(ctx, "loader warm-up", loaderSettings{bulkBytes: 4 << 20, concurrency: 2}, b.o.warmup, false)
		if err != nil {
			return fmt.Errorf("loader warm-up: %w", err)
		}
		b.warm = &r
		b.progress("loader warm-up (untimed for the figures): %s", r.summary())
	}
	var settings []loaderSettings
	for _, size := range b.o.loaderSizes {
		for _, c := range b.o.loaderConc {
			settings = append(settings, loaderSettings{bulkBytes: int64(size), concurrency: c})
		}
	}
	rates := map[loaderSettings][]float64{}
	try := func(pass int, s loaderSettings) error {
		r, err := b.runLoader(ctx, "loader "+s.String(), s, b.o.searchRecords, false)
		if err != nil {
			return fmt.Errorf("loader search, %s: %w", s, err)
		}
		r.Round = -pass
		b.progress("loader search %d, %s: %s", pass, s, r.summary())
		b.search = append(b.search, r)
		rates[s] = append(rates[s], r.docsPerSec())
		return nil
	}
	for _, s := range settings {
		if err := try(1, s); err != nil {
			return err
		}
	}
	mean := func(s loaderSettings) float64 {
		var sum float64
		for _, v := range rates[s] {
			sum += v
		}
		return sum / float64(len(rates[s]))
	}
	slices.SortStableFunc(settings, func(x, y loaderSettings) int { return cmp.Compare(mean(y), mean(x)) })
	again := settings[:min(b.o.searchAgain, len(settings))]
	for k := len(again) - 1; k >= 0; k-- {
		if err := try(2, again[k]); err != nil {
			return err
		}
	}
	slices.SortStableFunc(settings, func(x, y loaderSettings) int { return cmp.Compare(mean(y), mean(x)) })
	b.best = settings[0]
	b.bestMean = mean(b.best)
	b.progress("loader settings for the rounds: %s (mean %.0f docs/s)", b.best, b.bestMean)
	return nil
}

func (b *bench) runContender(ctx context.Context, c contender, round int) (runResult, error) {
	load := machine.Load()
	var r runResult
	var err error
	switch c.kind {
	case plainKafka:
		r, err = b.runPlain(ctx, fmt.Sprintf("%s-plain-%d", b.topic, round))
	case loaderToES:
		r, err = b.pinned(c.pinned, func() (runResult, error) { return b.runLoader(ctx, c.name, b.best, b.o.records, c.pinned) })
	case agentToSink, agentToES:
		r, err = b.pinned(c.pinned, func() (runResult, error) { return b.runAgent(ctx, c, round) })
	}
	r.Contender, r.Load = c.name, load
	return r, err
}

// runChildProcess runs this program as a child with args and decodes the
// result it prints.
func (b *bench) runChildProcess(ctx context.Context, args []string) (runResult, error) {
	args = append(args, "-records", strconv.Itoa(b.o.records), "-run-timeout", b.o.runTimeout.String())
	cmd := exec.CommandContext(ctx, b.self, args...)
	var stdout strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return runResult{}, fmt.Errorf("child: %w", err)
	}
	var r runResult
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
		return runResult{}, fmt.Errorf("child's result %q: %w", stdout.String(), err)
	}
	return r, nil
}

func (b *bench) runPlain(ctx context.Context, group string) (runResult, error) {
	m := b.around()
	r, err := b.runChildProcess(ctx, []string{"-child", "plain", "-brokers", b.stack.KafkaBrokers, "-topic", b.topic, "-group", group})
	m.finish(&r)
	if err == nil && r.Docs != int64(b.o.records) {
		err = fmt.Errorf("read %d records, want %d", r.Docs, b.o.records)
	}
	return r, err
}

// pinned runs f with the Elasticsearch node on esCPU when pin is set, and
// gives the node every CPU back after.
func (b *bench) pinned(pin bool, f func() (runResult, error)) (runResult, error) {
	if !pin {
		return f()
	}
	if b.esSession <= 0 {
		return runResult{}, errors.New("pinned: the Elasticsearch node's process is unknown (stacktest.Status)")
	}
	if _, err := pinSession(b.esSession, esCPU); err != nil {
		return runResult{}, fmt.Errorf("pin Elasticsearch to CPU %d: %w", esCPU, err)
	}
	defer func() {
		if _, err := pinSession(b.esSession, allCPUs()...); err != nil {
			b.progress("giving Elasticsearch every CPU back: %v", err)
		}
	}()
	return f()
}

func (b *bench) runLoader(ctx context.Context, name string, s loaderSettings, docs int, pinned bool) (runResult, error) {
	index, err := b.newIndex(ctx, "loader")
	if err != nil {
		return runResult{}, err
	}
	defer b.es.Delete(index)
	load := machine.Load()
	m := b.around()
	args := []string{"-child", "loader", "-es", b.stack.ESURL, "-index", index, "-docs", b.docs,
		"-bulk-bytes", strconv.FormatInt(s.bulkBytes, 10), "-concurrency", strconv.Itoa(s.concurrency)}
	cmd := append(args, "-records", strconv.Itoa(docs), "-run-timeout", b.o.runTimeout.String())
	c := command(ctx, pinned, b.self, cmd...)
	var stdout strings.Builder
	c.Stdout, c.Stderr = &stdout, os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Run(); err != nil {
		return runResult{Contender: name}, fmt.Errorf("loader child: %w", err)
	}
	var r runResult
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
		return runResult{Contender: name}, fmt.Errorf("loader child's result %q: %w", stdout.String(), err)
	}
	m.finish(&r)
	r.Contender, r.Settings, r.Load = name, s.String(), load
	n, err := b.es.RefreshedCount(ctx, index)
	r.Counted = n
	if err != nil {
		return r, err
	}
	if n != int64(docs) || r.Docs != int64(docs) {
		return r, fmt.Errorf("index %s holds %d documents, the loader created %d; want %d", index, n, r.Docs, docs)
	}
	return r, nil
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
	r.ESCPU, r.KafkaCPU, r.ParentCPU = sp.ES, sp.Kafka, sp.Self
	r.MachineBusy, r.MachineTotal = sp.MachineBusy, sp.MachineTotal
}
