// Command poolbench measures the Elasticsearch output's connection pool
// against the goals of its issue ("dead nodes back within a second,
// stalled sends caught and re-routed"), with the real Elasticsearch and
// Kafka of the e2e stack (test/e2e/stacktest) behind proxies it controls:
//
//  1. resurrection: a node stopped (refused) until the client marks it
//     dead, kept down 10 s (and once 60 s, for the stock client 70 s),
//     started again: the time from its return to the first bulk request
//     reaching it, for shipper's pool and for go-elasticsearch's stock
//     client side by side in one run;
//  2. stall detection per layer (upload, response) and a slow but steady
//     bulk that must not count as a stall;
//  3. the two scenarios end to end with the agent binary at its
//     defaults: a node that goes silent under a steady stream, and a
//     middlebox that silently drops idle connections under bursts;
//  4. indexing throughput of a Kafka backlog with one of two nodes down
//     against both up, alternating in one run;
//  5. a fleet of 500 pools that lost the same node, reconnecting when it
//     comes back.
//
// Figures go to -out, the headline figures to the JSON file beside it
// (bench/internal/figures); progress to stderr.
//
// The defaults are what `make bench` runs, within a budget of about 5
// minutes on the reference machine (2 cores); the phases' times are in the
// results. Resurrection about 2¼ min: every lane at once, so the longest
// sets it, the stock client's 70 s outage waiting out the 60 s bound; beside
// it shipper's 10 trials of 10 s (about 12 s each), its 60 s outage, and the
// stock client's 10 trials of 10 s (about a minute each, 5 lanes of 2).
// Stalls about 1 min (2 trials of each kind, one slow but steady bulk per
// stall_timeout); scenarios about 1 min (S1 watched 15 s after the stall,
// S2 5 bursts); throughput about 40 s (a backlog of 300,000, 2 runs of
// each); the fleet about 7 s. (Until then: 20 + 3 shipper trials, 22 stock
// trials with a 90 s bound, 3 stall trials, 1,000,000 records: 9½ min.)
//
// BENCH_QUICK=1 (or -quick) is a smoke run of about a minute: few and
// short trials, the stall_timeout 1s only; flags given explicitly still
// win.
//
//	go run ./bench/cmd/poolbench -out bench/results/pool.txt
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/agentrun"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/quick"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "poolbench:", err)
		os.Exit(1)
	}
}

type options struct {
	out, dir, agentBin string
	phases             []string
	quick              bool

	interval      time.Duration
	shortOutage   time.Duration
	shortTrials   int
	longOutages   []time.Duration
	stockLanes    int
	stockTrials   int
	stockLong     []time.Duration
	bound         time.Duration
	stallTrials   int
	stallTimeouts []time.Duration
	steadySize    int
	steadyRate    int
	s1Rate        int
	s1StallAfter  time.Duration
	s1Window      time.Duration
	s2Bursts      int
	s2Size        int
	s2Gap, s2Idle time.Duration
	backlog, reps int
	fleet         int
	fleetWindow   time.Duration
}

var allPhases = []string{"resurrect", "stall", "scenarios", "throughput", "fleet"}

// quickFlags are the settings of a -quick run, for the flags not given: a
// smoke run of every phase.
var quickFlags = map[string]string{
	"outage": "2s", "trials": "3", "long-outages": "5s",
	"stock-lanes": "1", "stock-trials": "1", "stock-long": "", "bound": "5s",
	"stall-trials": "1", "stall-timeouts": "1s", "steady-mib": "4",
	"s1-stall-after": "3s", "s1-window": "6s",
	"s2-bursts": "2", "s2-gap": "5s",
	"backlog": "20000", "reps": "1",
	"fleet": "100", "fleet-window": "3s",
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("poolbench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.out, "out", "", "results file (default: stdout)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "parent of the temporary directory (agent binary, agent data)")
	fs.StringVar(&o.agentBin, "agent", "", "agent binary (default: go build ./cmd/shipper into the temp dir)")
	phases := fs.String("phases", strings.Join(allPhases, ","), "phases to run, of "+strings.Join(allPhases, ","))
	quick.Flag(fs, &o.quick, "smoke run of about a minute: few and short trials, for the flags not given")
	fs.DurationVar(&o.interval, "interval", 50*time.Millisecond, "resurrection: between the stream's bulk requests")
	fs.DurationVar(&o.shortOutage, "outage", 10*time.Second, "resurrection: the usual outage")
	fs.IntVar(&o.shortTrials, "trials", 10, "resurrection: shipper trials with the usual outage")
	longs := fs.String("long-outages", "60s", "resurrection: shipper trials with these outages, in a second lane")
	fs.IntVar(&o.stockLanes, "stock-lanes", 5, "resurrection: stock client lanes with the usual outage, run at once")
	fs.IntVar(&o.stockTrials, "stock-trials", 2, "resurrection: trials per stock lane")
	// 70 s, not 60: the stock client takes a dead node back 60 s after
	// marking it dead, without asking it; a return at 60–61 s would race
	// that.
	stockLong := fs.String("stock-long", "70s", "resurrection: stock trials with these outages, one lane each")
	// Above the stock client's usual wait (60 s from marking the node dead,
	// so about 50 s after a 10 s outage's end).
	fs.DurationVar(&o.bound, "bound", 60*time.Second, "resurrection: a trial waits at most this long for the node's first request")
	fs.IntVar(&o.stallTrials, "stall-trials", 2, "stall detection: trials of each kind (slow but steady: one fewer, at least one)")
	stallTimeouts := fs.String("stall-timeouts", "10s,1s", "stall detection: the stall_timeouts of the upload and slow-but-steady trials")
	fs.IntVar(&o.steadySize, "steady-mib", 24, "stall detection: the slow but steady bulk, MiB")
	fs.IntVar(&o.steadyRate, "steady-rate", 2048, "stall detection: the slow node's upload bandwidth, KB/s")
	fs.IntVar(&o.s1Rate, "s1-rate", 2000, "scenario 1: records/s")
	fs.DurationVar(&o.s1StallAfter, "s1-stall-after", 6*time.Second, "scenario 1: the node goes silent this long into the stream")
	fs.DurationVar(&o.s1Window, "s1-window", 15*time.Second, "scenario 1: how long after the stall the stream goes on")
	fs.IntVar(&o.s2Bursts, "s2-bursts", 5, "scenario 2: bursts")
	fs.IntVar(&o.s2Size, "s2-size", 1000, "scenario 2: records per burst")
	fs.DurationVar(&o.s2Gap, "s2-gap", 7*time.Second, "scenario 2: between bursts")
	fs.DurationVar(&o.s2Idle, "s2-idle", 4*time.Second, "scenario 2: the middlebox drops a connection idle this long")
	fs.IntVar(&o.backlog, "backlog", 300_000, "throughput: records in the backlog")
	fs.IntVar(&o.reps, "reps", 2, "throughput: runs of each (healthy, one node down)")
	fs.IntVar(&o.fleet, "fleet", 500, "fleet: pools")
	fs.DurationVar(&o.fleetWindow, "fleet-window", 5*time.Second, "fleet: how long the node's connections are counted after it returns")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.quick {
		if err := quick.Apply(fs, quickFlags); err != nil {
			return err
		}
	}
	var err error
	if o.longOutages, err = durations(*longs); err != nil {
		return err
	}
	if o.stockLong, err = durations(*stockLong); err != nil {
		return err
	}
	if o.stallTimeouts, err = durations(*stallTimeouts); err != nil {
		return err
	}
	o.phases = strings.Split(*phases, ",")
	for _, p := range o.phases {
		if !slices.Contains(allPhases, p) {
			return fmt.Errorf("unknown phase %q (want some of %s)", p, strings.Join(allPhases, ","))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	tmp, err := os.MkdirTemp(o.dir, "poolbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	info := machine.Describe(tmp)
	start := time.Now()
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "poolbench: [%s] %s\n", time.Since(start).Round(time.Second), fmt.Sprintf(format, args...))
	}

	e := &env{tmp: tmp, progress: progress}
	defer func() {
		for _, f := range e.cleanup {
			f()
		}
	}()
	needAgent := has(o.phases, "scenarios") || has(o.phases, "throughput")
	if needAgent {
		e.bin = o.agentBin
		if e.bin == "" {
			if e.bin, err = agentrun.Build(ctx, tmp, progress); err != nil {
				return err
			}
		}
	}
	res := &results{o: o, info: info}
	if has(o.phases, "resurrect") || has(o.phases, "stall") || needAgent {
		progress("starting or reusing the e2e stack (stacktest.Up)")
		stack, err := stacktest.Up(ctx, os.Stderr)
		if err != nil {
			return err
		}
		e.broker = stack.KafkaBrokers
		e.es = es{url: strings.TrimRight(stack.ESURL, "/"), client: &http.Client{Timeout: 10 * time.Second}}
		if e.esHost, err = esHostOf(stack.ESURL); err != nil {
			return err
		}
		res.stack = fmt.Sprintf("Elasticsearch %s at %s, Kafka %s at %s (test/e2e/stacktest, loopback)",
			stacktest.ESVersion, e.es.url, stacktest.KafkaVersion, e.broker)
	}

	// Each phase's failure is reported with what it measured; the run
	// goes on to the next phase and fails at the end.
	var failed []string
	fail := func(phase string, err error) {
		progress("%s: FAILED: %v", phase, err)
		failed = append(failed, fmt.Sprintf("%s: %v", phase, err))
	}
	if has(o.phases, "resurrect") {
		t0 := time.Now()
		index := fmt.Sprintf("poolbench-resurrect-%d", time.Now().UnixNano())
		e.dropIndexAtEnd(index)
		lanes := o.lanes()
		progress("resurrection: %d lanes at once (%s)", len(lanes), describeLanes(lanes))
		res.resurrect, err = runResurrection(ctx, e.esHost, index, lanes, progress)
		res.resurrectTook = time.Since(t0)
		if err != nil {
			fail("resurrection", err)
		}
	}
	if has(o.phases, "stall") && ctx.Err() == nil {
		t0 := time.Now()
		index := fmt.Sprintf("poolbench-stall-%d", time.Now().UnixNano())
		e.dropIndexAtEnd(index)
		sr := &stallRunner{esHost: e.esHost, index: index, topic: "poolbench-stall"}
		add := func(t stallTrial) {
			res.stalls = append(res.stalls, t)
			note := ""
			if t.problem != "" {
				note = " PROBLEM:" + t.problem
			}
			progress("stall %s (stall_timeout %s) trial %d: answered after %s; pool counted %q after %s; %s; %s%s",
				t.kind, t.stall, t.n, secs(t.answer), t.what, secs(t.declared), t.counters(), t.outcome, note)
		}
		for n := 1; n <= o.stallTrials; n++ {
			for _, st := range o.stallTimeouts {
				add(sr.upload(ctx, st, n))
			}
			add(sr.response(ctx, true, n))
			add(sr.response(ctx, false, n))
		}
		for n := 1; n <= max(1, o.stallTrials-1); n++ {
			for _, st := range o.stallTimeouts {
				add(sr.steady(ctx, st, o.steadySize<<20, o.steadyRate, 50*time.Millisecond, n))
			}
		}
		res.stallTook = time.Since(t0)
	}
	if has(o.phases, "scenarios") && ctx.Err() == nil {
		t0 := time.Now()
		progress("S1: a silent stall: 2 nodes, %d records/s, node A silent after %s, watched for %s", o.s1Rate, o.s1StallAfter, o.s1Window)
		if res.s1, err = runS1(ctx, e, o.s1Rate, o.s1StallAfter, o.s1Window); err != nil {
			fail("scenario 1", err)
		} else {
			progress("S1: longest stretch without indexing progress after the stall: %s", res.s1.gap)
		}
		progress("S2: a middlebox dropping connections idle %s: %d bursts of %d records, %s apart", o.s2Idle, o.s2Bursts, o.s2Size, o.s2Gap)
		s2Bound := 120 * time.Second
		if o.quick {
			s2Bound = 30 * time.Second
		}
		if res.s2, err = runS2(ctx, e, o.s2Bursts, o.s2Size, o.s2Gap, o.s2Idle, s2Bound); err != nil {
			fail("scenario 2", err)
		}
		res.scenariosTook = time.Since(t0)
	}
	if has(o.phases, "throughput") && ctx.Err() == nil {
		t0 := time.Now()
		if res.tp, err = runThroughput(ctx, e, o.backlog, o.reps); err != nil {
			fail("throughput", err)
		}
		res.tpTook = time.Since(t0)
	}
	if has(o.phases, "fleet") && ctx.Err() == nil {
		t0 := time.Now()
		if res.fleet, err = runFleet(ctx, o.fleet, o.fleetWindow, progress); err != nil {
			fail("fleet", err)
		}
		res.fleetTook = time.Since(t0)
	}
	res.took = time.Since(start)

	var w io.Writer = os.Stdout
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	res.write(w)
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nFAILED: %s\n", strings.Join(failed, "; "))
	}
	if err := res.figures(failed).WriteBeside(o.out, start); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s", strings.Join(failed, "; "))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	progress("done in %s", res.took.Round(time.Second))
	return nil
}

// lanes lays out the resurrection trials: shipper's usual outages in one
// lane and its long ones in another; the stock client's usual outages in
// stockLanes lanes (its trials last about a minute each) and its long ones
// in a lane each. Lanes start 700 ms apart.
func (o options) lanes() []resLane {
	var ls []resLane
	add := func(pool string, outages []time.Duration) {
		if len(outages) == 0 {
			return
		}
		ls = append(ls, resLane{pool: pool, id: len(ls) + 1, outages: outages, bound: o.bound, interval: o.interval,
			delay: time.Duration(len(ls)) * 700 * time.Millisecond})
	}
	add("shipper", repeat(o.shortOutage, o.shortTrials))
	add("shipper", o.longOutages)
	for range o.stockLanes {
		add("stock", repeat(o.shortOutage, o.stockTrials))
	}
	for _, d := range o.stockLong {
		add("stock", []time.Duration{d})
	}
	return ls
}

func describeLanes(ls []resLane) string {
	var s []string
	for _, l := range ls {
		var o []string
		for _, d := range l.outages {
			o = append(o, d.String())
		}
		s = append(s, fmt.Sprintf("%s lane %d: %s", l.pool, l.id, strings.Join(o, " ")))
	}
	return strings.Join(s, "; ")
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func durations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func has(list []string, s string) bool { return slices.Contains(list, s) }
