package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/machine"
)

type results struct {
	o     options
	info  machine.Info
	stack string
	took  time.Duration

	resurrect     []resTrial
	resurrectTook time.Duration
	stalls        []stallTrial
	stallTook     time.Duration
	s1            *s1Result
	s2            *s2Result
	scenariosTook time.Duration
	tp            *tpResult
	tpTook        time.Duration
	fleet         *fleetResult
	fleetTook     time.Duration
}

func (r *results) write(w io.Writer) {
	fmt.Fprintln(w, "# poolbench: the Elasticsearch output's connection pool: resurrection, stall detection, the issue's")
	fmt.Fprintln(w, "# scenarios, throughput with a node down, a fleet's reconnects")
	fmt.Fprintf(w, "# command: %s\n", r.command())
	r.info.Write(w)
	if r.stack != "" {
		fmt.Fprintf(w, "# stack: %s\n", r.stack)
	}
	fmt.Fprintf(w, "# took %s (resurrection %s, stalls %s, scenarios %s, throughput %s, fleet %s)\n",
		r.took.Round(time.Second), r.resurrectTook.Round(time.Second), r.stallTook.Round(time.Second),
		r.scenariosTook.Round(time.Second), r.tpTook.Round(time.Second), r.fleetTook.Round(time.Second))
	fmt.Fprintln(w, "# figures: median [min–max]; \"> X\" = not seen within the bound X")
	fmt.Fprintln(w)
	r.goals(w)
	r.writeResurrection(w)
	r.writeStalls(w)
	r.writeScenarios(w)
	r.writeThroughput(w)
	r.writeFleet(w)
}

// goals are the issue's, each met or not by the figures below.
func (r *results) goals(w io.Writer) {
	fmt.Fprintln(w, "## the issue's goals")
	if ts := r.trials("shipper", 0); len(ts) > 0 {
		med, mx := medianMax(latencies(ts))
		ok := !med.capped && !mx.capped && med.d <= time.Second && mx.d <= 2*time.Second
		fmt.Fprintf(w, "(a) a dead node back within 1 s median, 2 s max, of its return, whatever the outage: %s (shipper, %d trials, outages %s: median %s, max %s)\n",
			yesNo(ok), len(ts), outageList(ts), med, mx)
		if st := r.trials("stock", 0); len(st) > 0 {
			med, mx := medianMax(latencies(st))
			fmt.Fprintf(w, "    for comparison, go-elasticsearch's stock client in the same run: %d trials, outages %s: median %s, max %s\n",
				len(st), outageList(st), med, mx)
		}
	}
	if r.s1 != nil {
		fmt.Fprintf(w, "(b) S1, a silent stall (was 59 s), under 10 s: %s (longest stretch without indexing progress %s)\n",
			yesNo(!r.s1.gap.capped && r.s1.gap.d < 10*time.Second), r.s1.gap)
	}
	if r.s2 != nil {
		var vs []value
		for _, b := range r.s2.bursts {
			vs = append(vs, b.took)
		}
		_, mx := medianMax(vs)
		fmt.Fprintf(w, "(b) S2, a middlebox's idle timeout (was 62 s per burst after the first), under 10 s: %s (every burst: %s; max %s)\n",
			yesNo(!mx.capped && mx.d < 10*time.Second), spread(vs), mx)
	}
	var steady []stallTrial
	for _, t := range r.stalls {
		if strings.HasPrefix(t.kind, "slow") {
			steady = append(steady, t)
		}
	}
	if len(steady) > 0 {
		var stalls int64
		var hedges int64
		for _, t := range steady {
			stalls += t.stallCount()
			hedges += t.stats.Hedges
		}
		fmt.Fprintf(w, "(c) no stall declared on a slow but progressing request: %s (%d stalls in %d slow-but-steady bulks of ~%d MiB; %d hedges)\n",
			yesNo(stalls == 0), stalls, len(steady), r.o.steadySize, hedges)
	}
	fmt.Fprintln(w)
}

func (r *results) trials(pool string, outage time.Duration) []resTrial {
	var out []resTrial
	for _, t := range r.resurrect {
		if t.pool == pool && (outage == 0 || t.nominal == outage) && t.problem == "" {
			out = append(out, t)
		}
	}
	return out
}

func latencies(ts []resTrial) []value {
	var vs []value
	for _, t := range ts {
		vs = append(vs, t.latency)
	}
	return vs
}

func outageList(ts []resTrial) string {
	seen := map[time.Duration]int{}
	var order []time.Duration
	for _, t := range ts {
		if seen[t.nominal] == 0 {
			order = append(order, t.nominal)
		}
		seen[t.nominal]++
	}
	slices.Sort(order)
	var s []string
	for _, d := range order {
		s = append(s, fmt.Sprintf("%d × %s", seen[d], d))
	}
	return strings.Join(s, ", ")
}

func (r *results) writeResurrection(w io.Writer) {
	if len(r.resurrect) == 0 {
		return
	}
	fmt.Fprintln(w, "## 1. resurrection: from node A's return to the first bulk request reaching it")
	fmt.Fprintf(w, "# two proxies (A, B) per lane in front of the one Elasticsearch; a one-document bulk request every %s, one at a time;\n", r.o.interval)
	fmt.Fprintln(w, "# A stopped (listener closed, connections closed: refused) until the client marks it dead, kept down for the")
	fmt.Fprintln(w, "# outage (from its stop; the nominal length plus a random 0–1 s, so that the return falls anywhere in the prober's")
	fmt.Fprintln(w, "# rhythm), started again. \"first request\": counted at A's proxy (a \"POST /_bulk\" request line);")
	fmt.Fprintln(w, "# \"in rotation\": the client itself says A is alive (shipper: Nodes(); stock: Metrics(), polled every 5 ms).")
	fmt.Fprintln(w, "# A fresh client per trial; all lanes at once, so both pools ran side by side. shipper: elasticsearch.New with")
	fmt.Fprintln(w, "# DefaultConfig(); stock: go-elasticsearch v8 NewClient with two addresses and nothing else (its default pool and")
	fmt.Fprintf(w, "# retries). A trial waits at most %s.\n", r.o.bound)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "pool\toutage\ttrials\tfirst request to A after return\tin rotation after return\tmarked dead after stop\t")
	for _, pool := range []string{"shipper", "stock"} {
		all := r.trials(pool, 0)
		if len(all) == 0 {
			continue
		}
		outs := map[time.Duration]bool{}
		for _, t := range all {
			outs[t.nominal] = true
		}
		for _, d := range slices.Sorted(maps.Keys(outs)) {
			ts := r.trials(pool, d)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t\n", pool, d, len(ts), spread(latencies(ts)), spread(rotations(ts)), spread(markedDead(ts)))
		}
		if len(outs) > 1 {
			fmt.Fprintf(tw, "%s\tall\t%d\t%s\t%s\t%s\t\n", pool, len(all), spread(latencies(all)), spread(rotations(all)), spread(markedDead(all)))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "# every trial")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "pool\tlane\ttrial\toutage\tmarked dead\tfirst request to A\tin rotation\tsends\tsend errors\tproblem\t")
	ts := slices.Clone(r.resurrect)
	slices.SortStableFunc(ts, func(a, b resTrial) int { return a.lane - b.lane })
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t\n", t.pool, t.lane, t.n, secs(t.outage), secs(t.markedDead), t.latency,
			t.inRotation, t.sends, t.sendErrors, t.problem)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func rotations(ts []resTrial) []value {
	var vs []value
	for _, t := range ts {
		vs = append(vs, t.inRotation)
	}
	return vs
}

func markedDead(ts []resTrial) []value {
	var vs []value
	for _, t := range ts {
		vs = append(vs, value{d: t.markedDead})
	}
	return vs
}

func (r *results) writeStalls(w io.Writer) {
	if len(r.stalls) == 0 {
		return
	}
	fmt.Fprintln(w, "## 2. stall detection per layer (shipper's Output in this process, the real Elasticsearch behind proxies)")
	fmt.Fprintln(w, "# upload: node A's proxy stops reading a connection 1 MiB into a ~7 MiB bulk (SO_RCVBUF 256 KiB, so the body")
	fmt.Fprintln(w, "#   cannot all sit in socket buffers); node B healthy. answered: from A's stop to the Send answered.")
	fmt.Fprintln(w, "# response: A reads the whole ~1 MiB bulk and never answers; B healthy; on a pooled connection to A (A served")
	fmt.Fprintln(w, "#   a request before) or on A's first connection. answered: from the Send's start.")
	fmt.Fprintf(w, "# slow but steady: one node behind toxiproxy, bandwidth %d KB/s upstream, latency 50 ms ± 10 ms both ways,\n", r.o.steadyRate)
	fmt.Fprintf(w, "#   one bulk of ~%d MiB (max_bulk_bytes raised so that it is one request), after one small request.\n", r.o.steadySize)
	fmt.Fprintln(w, "# first counted: from the stall's start to the pool counting a stall or a hedge (counters polled every 5 ms).")
	fmt.Fprintln(w, "# Defaults otherwise (hedge_after 2s, hedge_budget 0.1, request_timeout 60s); a fresh Output per trial.")
	keys, by := r.stallsByKind()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tstall_timeout\ttrials\tanswered after\tfirst counted after\twhat the pool counted first\tstalls declared\thedges\tanswered by B\t")
	for _, k := range keys {
		ts := by[k]
		var ans, dec []value
		var stalls, hedges int64
		firsts := map[string]int{}
		byB := 0
		for _, t := range ts {
			ans = append(ans, value{d: t.answer})
			if t.what != "" {
				dec = append(dec, value{d: t.declared})
				firsts[t.what]++
			}
			stalls += t.stallCount()
			hedges += t.stats.Hedges
			if t.answerBy == "B" {
				byB++
			}
		}
		var fs []string
		for _, f := range slices.Sorted(maps.Keys(firsts)) {
			fs = append(fs, fmt.Sprintf("%d × %s", firsts[f], f))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d of %d\t\n", k.kind, k.stall, len(ts), spread(ans), spread(dec),
			strings.Join(fs, ", "), stalls, hedges, byB, len(ts))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "# every trial")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tstall_timeout\ttrial\trequest MB\tanswered after\tfirst counted\tpool counters\tnode A at the end\tdocuments\tproblem\t")
	for _, t := range r.stalls {
		nodeA := ""
		if len(t.nodes) > 0 {
			nodeA = t.nodes[0].State
			if t.nodes[0].Reason != "" {
				nodeA += ": " + t.nodes[0].Reason
			}
		}
		first := "nothing"
		if t.what != "" {
			first = t.what + " after " + secs(t.declared)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.kind, t.stall, t.n, float64(t.bytes)/1e6, secs(t.answer), first,
			t.counters(), nodeA, t.outcome, t.problem)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func (r *results) writeScenarios(w io.Writer) {
	if s := r.s1; s != nil {
		fmt.Fprintln(w, "## 3. S1: a silent stall (was 59 s)")
		fmt.Fprintln(w, "# the agent binary, every setting at its default but kafka brokers/topics/group_id, elasticsearch urls/index,")
		fmt.Fprintln(w, "# data_dir and api address; two node URLs, two toxiproxy proxies to the same Elasticsearch; a steady stream of")
		fmt.Fprintf(w, "# %d loggen records/s into a 4-partition topic; %s into it, proxy A gets timeout toxics with timeout 0 both ways\n", s.rate, s.stallAfter)
		fmt.Fprintln(w, "# (data dropped, connections kept open); the stream goes on; the index's _count is read every 250 ms directly")
		fmt.Fprintln(w, "# from Elasticsearch (refresh_interval 1s, so progress shows in steps of about a second).")
		fmt.Fprintf(w, "longest stretch without indexing progress in the %s after the stall: %s (from %s to %s after the stall began)\n",
			s.window, s.gap, secs(s.gapFrom), secs(s.gapTo))
		fmt.Fprintf(w, "first progress after the stall began: %s; longest stretch before the stall: %s\n", secs(s.firstAfter), secs(s.baselineGap))
		fmt.Fprintf(w, "documents: %d at the stall, %d at the window's end; produced %d (%.0f records/s); all indexed %s after the stream ended (%d indexed)\n",
			s.countAtStall, s.countAtWindowEnd, s.produced, s.produceRate, s.allIndexed, s.indexedAtEnd)
		fmt.Fprintf(w, "pool counters (/api/metrics): %s\n", counterLine(s.agent.counters))
		fmt.Fprintf(w, "nodes at the end (/api/status): %s\n", nodeLine(s.agent.nodes))
		fmt.Fprintf(w, "agent log (pool lines, warnings, errors): %s\n", s.agent.log)
		fmt.Fprintf(w, "agent stop: %s\n\n", s.agent.exit)
	}
	if s := r.s2; s != nil {
		fmt.Fprintln(w, "## 3. S2: a middlebox idle timeout that silently drops (was 62 s per burst after the first)")
		fmt.Fprintln(w, "# the agent binary at its defaults (as in S1), one node URL: a proxy that black-holes a connection once it")
		fmt.Fprintf(w, "# carried no data for %s (what the client sends is discarded, nothing comes back, the connection stays open);\n", s.idle)
		fmt.Fprintf(w, "# bursts of %d loggen records %s apart into a 1-partition topic; took: from Kafka acknowledging the burst to\n", s.size, s.gap)
		fmt.Fprintln(w, "# Elasticsearch holding every document of that burst (a _count with an ids query of its 1000 document ids,")
		fmt.Fprintln(w, "# polled every 100 ms), so a burst that a later one overtakes is still timed to its own end.")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "burst\tproduced at\ttook\t")
		var vs []value
		for _, b := range s.bursts {
			fmt.Fprintf(tw, "%d\t%s\t%s\t\n", b.i, secs(b.produced), b.took)
			vs = append(vs, b.took)
		}
		tw.Flush()
		_, mx := medianMax(vs)
		fmt.Fprintf(w, "every burst: %s; max %s\n", spread(vs), mx)
		fmt.Fprintf(w, "connections the middlebox dropped: %d\n", s.blackholed)
		fmt.Fprintf(w, "pool counters (/api/metrics): %s\n", counterLine(s.agent.counters))
		fmt.Fprintf(w, "nodes at the end (/api/status): %s\n", nodeLine(s.agent.nodes))
		fmt.Fprintf(w, "agent log (pool lines, warnings, errors): %s\n", s.agent.log)
		fmt.Fprintf(w, "agent stop: %s\n\n", s.agent.exit)
	}
}

func (r *results) writeThroughput(w io.Writer) {
	t := r.tp
	if t == nil {
		return
	}
	fmt.Fprintln(w, "## 4. throughput: a Kafka backlog indexed with both nodes up vs node A down (refused) from the start")
	fmt.Fprintf(w, "# %d loggen records in a 4-partition topic (produced in %s); the agent binary at its defaults, two node URLs\n",
		t.records, t.prodTook.Round(time.Millisecond))
	fmt.Fprintln(w, "# (two proxies to the same Elasticsearch), a new consumer group and index per run; runs alternate")
	fmt.Fprintln(w, "# healthy/down/down/healthy…; took: from the agent's start to its /api/status reporting every record indexed")
	fmt.Fprintln(w, "# (output.indexed + duplicates, polled every 100 ms); records/s = backlog ÷ took; steady = backlog ÷ (all −")
	fmt.Fprintln(w, "# first indexed); _count: the index after a _refresh, once the agent said it was done.")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tnodes\ttook\trecords/s\tsteady records/s\tfirst indexed after\t_count\tpool counters\tnode A at the end\t")
	var up, down []float64
	for _, run := range t.runs {
		nodes := "both up"
		if run.outage {
			nodes = "A down"
			down = append(down, run.rate)
		} else {
			up = append(up, run.rate)
		}
		nodeA := ""
		if len(run.agent.nodes) > 0 {
			nodeA = run.agent.nodes[0].State
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f\t%.0f\t%s\t%d\t%s\t%s\t\n", run.i, nodes, run.took, run.rate, run.steady, secs(run.first),
			run.counted, counterLine(run.agent.counters), nodeA)
	}
	tw.Flush()
	if len(up) > 0 && len(down) > 0 {
		fmt.Fprintf(w, "records/s, both up: %s; A down: %s; A down ÷ both up (medians): %.2f; per pair (run 2k ÷ 2k−1 or inverse): %s\n",
			floats(up), floats(down), median(down)/median(up), pairRatios(t.runs))
	}
	fmt.Fprintln(w)
}

func pairRatios(runs []tpRun) string {
	var s []string
	for i := 0; i+1 < len(runs); i += 2 {
		a, b := runs[i], runs[i+1]
		if a.outage {
			a, b = b, a
		}
		s = append(s, fmt.Sprintf("%.2f", b.rate/a.rate))
	}
	return strings.Join(s, ", ")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func floats(v []float64) string {
	s := slices.Clone(v)
	slices.Sort(s)
	return fmt.Sprintf("%.0f [%.0f–%.0f]", median(s), s[0], s[len(s)-1])
}

func (r *results) writeFleet(w io.Writer) {
	f := r.fleet
	if f == nil {
		return
	}
	fmt.Fprintf(w, "## 5. fleet: %d pools (Outputs) in one process lost the same node, which comes back at one instant\n", f.pools)
	fmt.Fprintln(w, "# the node: a local listener answering GET / with 200 and X-Elastic-Product; down (port closed) until every pool")
	fmt.Fprintln(w, "# marked it dead after one refused Send, 2 s more, then listening. Counted at the node per 100 ms from its")
	fmt.Fprintln(w, "# return: new TCP connections (connect probes and the full probes' GET / connections) and GET / requests.")
	fmt.Fprintf(w, "# Defaults: probe_interval 1s (jittered ±25%%). Goroutines in this process: %d before the pools, %d with every\n", f.goroutinesBefore, f.goroutinesDead)
	fmt.Fprintf(w, "# pool's node dead and probed (one watchdog and one prober per pool); marking all dead took %s.\n", f.markDead.Round(time.Millisecond))
	var conns, gets int
	for i := range f.conns {
		conns += f.conns[i]
		gets += f.gets[i]
	}
	fmt.Fprintf(w, "peak: %.0f new connections/s, %.0f GET / requests/s (busiest 100 ms × 10); totals over %s: %d connections, %d GET /\n",
		peakPerSecond(f.conns, f.bucket), peakPerSecond(f.gets, f.bucket), f.window, conns, gets)
	fmt.Fprintf(w, "node alive again in every pool after: %s (%d of %d pools; %d not within %s)\n",
		spread(values(f.alive)), len(f.alive), f.pools, f.notAlive, f.window)
	if len(f.alive) > 0 {
		s := slices.Clone(f.alive)
		slices.Sort(s)
		fmt.Fprintf(w, "pools alive by: 10%% %s, 50%% %s, 90%% %s, 100%% %s\n", secs(s[len(s)/10]), secs(s[len(s)/2]), secs(s[len(s)*9/10]), secs(s[len(s)-1]))
	}
	fmt.Fprintln(w, "# ms from return   connections   GET /   (one # per 4 connections)")
	last := 0
	for i := range f.conns {
		if f.conns[i] > 0 || f.gets[i] > 0 {
			last = i
		}
	}
	for i := 0; i <= min(last+2, len(f.conns)-1); i++ {
		fmt.Fprintf(w, "%5d–%-5d  %5d  %5d  %s\n", i*int(f.bucket.Milliseconds()), (i+1)*int(f.bucket.Milliseconds()), f.conns[i], f.gets[i],
			strings.Repeat("#", (f.conns[i]+3)/4))
	}
	fmt.Fprintln(w)
}

// stallKey is one kind of stall trial: the layer and the stall_timeout.
type stallKey struct {
	kind  string
	stall time.Duration
}

// stallsByKind groups the stall trials by kind, the kinds in the order
// they first ran.
func (r *results) stallsByKind() ([]stallKey, map[stallKey][]stallTrial) {
	var keys []stallKey
	by := map[stallKey][]stallTrial{}
	for _, t := range r.stalls {
		k := stallKey{t.kind, t.stall}
		if by[k] == nil {
			keys = append(keys, k)
		}
		by[k] = append(by[k], t)
	}
	return keys, by
}
