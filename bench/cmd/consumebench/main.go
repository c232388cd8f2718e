// Command consumebench measures how fast shipper's Kafka input consumes,
// and at what CPU cost, beside a plain kafka-go consumer group reading the
// same topic in the same run. Nothing is buffered or sent: the input hands
// its records to a sink that only counts them (and reports each as
// delivered at once, so commits advance as they would in the agent).
//
// It produces -records JSON records of about -value-bytes into a new topic
// with -partitions partitions of the e2e stack's Kafka (test/e2e/stacktest),
// then runs, -rounds times, each contender once, alternating which goes
// first, each in a child process of its own (a fresh heap, CPU time its
// own) and with a consumer group of its own, reading the topic from the
// start until it has every record:
//
//   - input: inputs/kafka.New with DefaultConfig (only brokers, topic and
//     group set) and Run;
//   - plain: kafka-go's Reader with GroupID, FetchMessage in a loop,
//     CommitMessages every 1000 records, CommitInterval, MinBytes,
//     MaxBytes, MaxWait and the group timings taken from the input's
//     DefaultConfig.
//
// Figures go to -out; progress to stderr. BENCH_QUICK=1 (or -quick) is a
// smoke run: 40,000 records, one round.
//
//	go run ./bench/cmd/consumebench -out bench/results/consumebench.txt
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/logtopic"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/plainconsumer"
	"github.com/shipper-agent/shipper/inputs/kafka"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "consumebench:", err)
		os.Exit(1)
	}
}

// contenders, in the order of odd rounds; even rounds reverse it.
var contenders = []string{"input", "plain"}

type options struct {
	out        string
	records    int
	valueBytes int
	partitions int
	rounds     int
	producers  int
	quick      bool
	keepTopic  bool
	runTimeout time.Duration
	// plain consumer only
	isolation string
	maxBytes  int
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("consumebench", flag.ContinueOnError)
	var o options
	var c childArgs
	fs.StringVar(&o.out, "out", "", "results file (default: stdout)")
	fs.IntVar(&o.records, "records", 1_000_000, "records to produce and consume")
	fs.IntVar(&o.valueBytes, "value-bytes", 500, "size of each record's JSON value")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the topic")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; each runs every contender once")
	fs.IntVar(&o.producers, "producers", 4, "concurrent producing goroutines")
	fs.BoolVar(&o.quick, "quick", os.Getenv("BENCH_QUICK") == "1", "smoke run: 40,000 records, one round (default from BENCH_QUICK=1)")
	fs.BoolVar(&o.keepTopic, "keep-topic", false, "do not delete the topic at the end")
	fs.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "give up on one contender's run after this long")
	fs.StringVar(&o.isolation, "isolation", "read_committed", "plain consumer's isolation level: read_committed or read_uncommitted")
	fs.IntVar(&o.maxBytes, "plain-max-bytes", int(kafka.DefaultConfig().FetchMaxBytes),
		"plain consumer's MaxBytes (kafka-go applies it per partition; default: the input's fetch_max_bytes)")
	timeout := fs.Duration("timeout", 20*time.Minute, "give up after this long")
	// A child runs one contender and prints its result as JSON.
	fs.StringVar(&c.contender, "child", "", "internal: run this contender and print its result")
	fs.StringVar(&c.brokers, "brokers", "", "internal: the child's Kafka")
	fs.StringVar(&c.topic, "topic", "", "internal: the child's topic")
	fs.StringVar(&c.group, "group", "", "internal: the child's consumer group")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.isolation != "read_committed" && o.isolation != "read_uncommitted" {
		return fmt.Errorf("-isolation %q: want read_committed or read_uncommitted", o.isolation)
	}
	if c.contender != "" {
		c.records, c.partitions, c.isolation, c.maxBytes, c.timeout = o.records, o.partitions, o.isolation, o.maxBytes, o.runTimeout
		return runChild(ctx, c, os.Stdout)
	}
	if o.quick {
		o.records, o.rounds = 40_000, 1
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	info := machine.Describe(os.TempDir())
	start := time.Now()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "consumebench: [%s] %s\n", time.Since(start).Round(time.Second), fmt.Sprintf(format, args...))
	}
	progress("starting or reusing the e2e stack (stacktest.Up)")
	stack, err := stacktest.Up(ctx, os.Stderr)
	if err != nil {
		return err
	}
	topic := fmt.Sprintf("consumebench-%d", time.Now().UnixNano())
	if !o.keepTopic {
		defer logtopic.Delete(stack.KafkaBrokers, topic, progress)
	}
	prod, err := produce(ctx, stack.KafkaBrokers, topic, o)
	if err != nil {
		return err
	}
	progress("produced %d records, %.0f MB (key + value), into %s in %s", o.records, float64(prod.Bytes)/1e6, topic,
		prod.Took.Round(100*time.Millisecond))

	var runs []runResult
	for round := 1; round <= o.rounds; round++ {
		order := slices.Clone(contenders)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, name := range order {
			group := fmt.Sprintf("%s-%s-%d", topic, name, round)
			load := machine.Load()
			r, err := runContender(ctx, self, stack.KafkaBrokers, topic, group, name, o)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, name, err)
			}
			r.Round, r.Load = round, load
			r.Committed = committedAtEnd(ctx, stack.KafkaBrokers, topic, group, o.partitions)
			progress("round %d, %-5s: %.0f records/s, %.1f MB/s, %.2f CPU s per million records; committed to the end: %s",
				round, name, r.recordsPerSec(), r.mbPerSec(), r.cpuPerMillion(), r.Committed)
			runs = append(runs, r)
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
	report(w, info, o, stack, topic, prod, runs, time.Since(start))
	if err := writeFigures(o.out, info, o, runs, start); err != nil {
		return err
	}
	if o.out != "" {
		progress("figures in %s", o.out)
	}
	return nil
}

// produce fills the topic (bench/internal/logtopic).
func produce(ctx context.Context, brokers, topic string, o options) (logtopic.Filled, error) {
	return logtopic.Fill(ctx, brokers, topic, logtopic.Spec{Records: o.records, ValueBytes: o.valueBytes,
		Partitions: o.partitions, Producers: o.producers})
}

// runContender runs one contender in a child process and returns what it
// measured.
func runContender(ctx context.Context, self, brokers, topic, group, name string, o options) (runResult, error) {
	args := []string{"-child", name, "-brokers", brokers, "-topic", topic, "-group", group,
		"-records", strconv.Itoa(o.records), "-partitions", strconv.Itoa(o.partitions),
		"-isolation", o.isolation, "-plain-max-bytes", strconv.Itoa(o.maxBytes), "-run-timeout", o.runTimeout.String()}
	cmd := exec.CommandContext(ctx, self, args...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return runResult{}, fmt.Errorf("child: %w", err)
	}
	var r runResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return runResult{}, fmt.Errorf("child's result %q: %w", stdout.String(), err)
	}
	if r.Records != int64(o.records) {
		return r, fmt.Errorf("read %d records, want %d", r.Records, o.records)
	}
	return r, nil
}

// committedAtEnd says whether the group committed the end offset of every
// partition, and if not, what it committed.
func committedAtEnd(ctx context.Context, brokers, topic, group string, partitions int) string {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers), Timeout: 10 * time.Second}
	var parts []int
	var reqs []kafkago.OffsetRequest
	for p := range partitions {
		parts = append(parts, p)
		reqs = append(reqs, kafkago.LastOffsetOf(p))
	}
	ends, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return "unknown: " + err.Error()
	}
	com, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return "unknown: " + err.Error()
	}
	end := map[int]int64{}
	for _, p := range ends.Topics[topic] {
		end[p.Partition] = p.LastOffset
	}
	var short []string
	for _, p := range com.Topics[topic] {
		if p.CommittedOffset != end[p.Partition] {
			short = append(short, fmt.Sprintf("%d: %d of %d", p.Partition, p.CommittedOffset, end[p.Partition]))
		}
	}
	if len(short) > 0 {
		return "no (" + strings.Join(short, ", ") + ")"
	}
	return "yes"
}

// report writes the results file.
func report(w io.Writer, info machine.Info, o options, stack *stacktest.Stack, topic string, prod logtopic.Filled, runs []runResult, took time.Duration) {
	def := kafka.DefaultConfig()
	fmt.Fprintln(w, "# consumebench: shipper's Kafka input beside a plain kafka-go consumer group, consuming only")
	cmd := "go run ./bench/cmd/consumebench"
	for _, a := range os.Args[1:] {
		cmd += " " + a
	}
	if o.quick {
		cmd = "BENCH_QUICK=1 " + cmd
	}
	fmt.Fprintf(w, "# command: %s\n", cmd)
	info.Write(w)
	fmt.Fprintf(w, "# stack: Kafka %s at %s (test/e2e/stacktest, loopback, one broker)\n", stacktest.KafkaVersion, stack.KafkaBrokers)
	fmt.Fprintf(w, "# topic: %s, %d partitions, %d JSON records of %d bytes + key, %.0f MB of key + value, produced in %s before the runs\n",
		topic, o.partitions, o.records, o.valueBytes, float64(prod.Bytes)/1e6, prod.Took.Round(100*time.Millisecond))
	fmt.Fprintf(w, "# input: inputs/kafka.New(DefaultConfig with brokers, topic, group) + Run; fetch_max_bytes %s, fetch_max_wait %s,\n",
		def.FetchMaxBytes, def.FetchMaxWait)
	fmt.Fprintf(w, "#        commit_interval %s; its sink counts records and bytes and reports each appended record delivered\n",
		def.CommitInterval)
	fmt.Fprintf(w, "# plain: kafka-go %s Reader with GroupID, FetchMessage loop, CommitMessages every 1000 records, CommitInterval %s,\n",
		plainconsumer.KafkaGoVersion(), def.CommitInterval)
	fmt.Fprintf(w, "#        MinBytes 1, MaxBytes %d (per partition), MaxWait %s, %s, QueueCapacity kafka-go's default\n",
		o.maxBytes, def.FetchMaxWait, o.isolation)
	fmt.Fprintf(w, "# rounds: %d, each contender once per round (odd rounds input first, even rounds plain first), each run in a child\n", o.rounds)
	fmt.Fprintln(w, "# process with a new consumer group reading from the earliest offset until it has every record.")
	fmt.Fprintln(w, "# records/s and MB/s: from the first record to the last (MB = 10^6 bytes of key + value); join: from the")
	fmt.Fprintln(w, "# start (before New / NewReader) to the first record; CPU: user + system time of the child (getrusage)")
	fmt.Fprintln(w, "# from the start to the last record, per million records; peak RSS: the child's ru_maxrss;")
	fmt.Fprintln(w, "# close: from the last record until Run returned / Close returned (the final commit included).")
	fmt.Fprintf(w, "# took %s\n", took.Round(time.Second))
	fmt.Fprintln(w)

	by := map[string][]runResult{}
	for _, r := range runs {
		by[r.Contender] = append(by[r.Contender], r)
	}
	fmt.Fprintln(w, "## summary: median [min–max]")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "contender\truns\trecords/s\tMB/s\tCPU s per M records\tjoin s\tstart to last record s\tclose s\tpeak RSS MiB\tcommitted to the end\t")
	for _, name := range contenders {
		rs := by[name]
		committed := 0
		for _, r := range rs {
			if r.Committed == "yes" {
				committed++
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d of %d\t\n", name, len(rs),
			spread(rs, "%.0f", runResult.recordsPerSec), spread(rs, "%.1f", runResult.mbPerSec),
			spread(rs, "%.2f", runResult.cpuPerMillion), spread(rs, "%.2f", runResult.joinSecs),
			spread(rs, "%.2f", runResult.totalSecs), spread(rs, "%.2f", runResult.closeSecs),
			spread(rs, "%.0f", runResult.rssMiB), committed, len(rs))
	}
	tw.Flush()
	fmt.Fprintln(w)

	thr, cpu := roundRatios(runs, o.rounds)
	fmt.Fprintln(w, "## input ÷ plain, per round: median [min–max]")
	fmt.Fprintf(w, "records/s: %s (goal ≥ 0.8: %s)\n", spreadOf(thr, "%.2f"), verdict(thr))
	fmt.Fprintf(w, "CPU s per million records: %s (above 1: the input spends more CPU per record)\n", spreadOf(cpu, "%.2f"))
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## runs, in the order they ran")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tcontender\trecords\tMB\trecords/s\tMB/s\tCPU s\tuser s\tsys s\tCPU s per M records\tjoin s\tstart to last record s\tclose s\tpeak RSS MiB\tcommitted to the end\tload at the start\t")
	for _, r := range runs {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f\t%.0f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%s\t%s\t\n", r.Round, r.Contender,
			r.Records, float64(r.Bytes)/1e6, r.recordsPerSec(), r.mbPerSec(), r.CPU.Seconds(), r.User.Seconds(), r.Sys.Seconds(),
			r.cpuPerMillion(), r.joinSecs(), r.totalSecs(), r.closeSecs(), r.rssMiB(), r.Committed, r.Load)
	}
	tw.Flush()
}

// roundRatios are input ÷ plain per round, records/s and CPU per record:
// the two runs of a round were adjacent in time.
func roundRatios(runs []runResult, rounds int) (thr, cpu []float64) {
	for round := 1; round <= rounds; round++ {
		var in, pl *runResult
		for i := range runs {
			if runs[i].Round == round {
				if runs[i].Contender == "input" {
					in = &runs[i]
				} else {
					pl = &runs[i]
				}
			}
		}
		if in != nil && pl != nil {
			thr = append(thr, in.recordsPerSec()/pl.recordsPerSec())
			cpu = append(cpu, in.cpuPerMillion()/pl.cpuPerMillion())
		}
	}
	return thr, cpu
}

// writeFigures writes the headline figures beside the text results
// (figures.JSONPath(out)).
func writeFigures(out string, info machine.Info, o options, runs []runResult, start time.Time) error {
	r := figures.New("consumebench", "the Kafka input alone beside a plain kafka-go consumer group", info, o.quick)
	for _, name := range contenders {
		var thr, cpu []float64
		for _, run := range runs {
			if run.Contender == name {
				thr = append(thr, run.recordsPerSec())
				cpu = append(cpu, run.cpuPerMillion())
			}
		}
		r.Add("records/s, consuming only", name, "records/s", figures.Higher, thr, "")
		r.Add("CPU per million records", name, "CPU s", figures.Lower, cpu, "")
	}
	thr, cpu := roundRatios(runs, o.rounds)
	r.Add("input ÷ plain, within a round", "records/s", "ratio", figures.Higher, thr, "goal ≥ 0.8: "+verdict(thr))
	r.Add("input ÷ plain, within a round", "CPU per record", "ratio", figures.Lower, cpu, "")
	return r.WriteBeside(out, start)
}

func spread(rs []runResult, format string, f func(runResult) float64) string {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	return spreadOf(vs, format)
}

// spreadOf formats the median [min–max] of values; the median of an even
// count is the mean of the middle two.
func spreadOf(vs []float64, format string) string { return figures.Of(vs).Format(format) }

func verdict(ratios []float64) string {
	if len(ratios) == 0 {
		return "no figure"
	}
	s := slices.Clone(ratios)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	if med >= 0.8 {
		return "MET by the median"
	}
	return "NOT MET by the median"
}
