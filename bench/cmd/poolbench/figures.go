package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/quick"
)

// command is the command line that reproduces this run.
func (r *results) command() string {
	return quick.Command("poolbench", r.o.quick)
}

// poolName is how the figures name a pool.
var poolName = map[string]string{"shipper": "shipper", "stock": "go-elasticsearch stock client"}

// figures are the run's headline figures, every per-trial sample as one
// value: the report takes median, min and max.
func (r *results) figures(failed []string) *figures.Report {
	f := figures.New("poolbench", "the Elasticsearch output's connection pool: resurrection, stall detection, "+
		"the issue's scenarios, throughput with a node down, a fleet's reconnects", r.info, r.o.quick)
	r.resurrectionFigures(f)
	r.stallFigures(f)
	r.scenarioFigures(f)
	r.throughputFigures(f)
	r.fleetFigures(f)
	if len(failed) > 0 {
		// A row that says so, so that the report cannot miss it.
		f.Add("failed phases", strings.Join(failed, "; "), "phases", figures.Lower, []float64{float64(len(failed))},
			"the text results say what each phase measured before it failed")
	}
	return f
}

// seconds turns values into seconds; a capped value counts as its bound
// (the true value is larger), and capped says how many were.
func seconds(vs []value) (xs []float64, capped int) {
	for _, v := range vs {
		xs = append(xs, v.d.Seconds())
		if v.capped {
			capped++
		}
	}
	return xs, capped
}

// count is "1 trial", "2 trials".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// cappedNote says how many of n values stopped at bound.
func cappedNote(capped, n int, bound time.Duration) string {
	if capped == 0 {
		return ""
	}
	return fmt.Sprintf("; %d of %d not seen within %s, counted as %s (the true values are larger)", capped, n, bound, bound)
}

func (r *results) resurrectionFigures(f *figures.Report) {
	for _, pool := range []string{"shipper", "stock"} {
		all := r.trials(pool, 0)
		outs := map[time.Duration]bool{}
		for _, t := range all {
			outs[t.nominal] = true
		}
		for _, d := range slices.Sorted(maps.Keys(outs)) {
			ts := r.trials(pool, d)
			xs, capped := seconds(latencies(ts))
			name := fmt.Sprintf("%s, %s outage", poolName[pool], d)
			if len(ts) > 1 {
				name += "s"
			}
			note := fmt.Sprintf("from node A's return to the first bulk request reaching it; %s of a %s outage (+ 0–1 s)",
				count(len(ts), "trial"), d) + cappedNote(capped, len(ts), r.o.bound)
			if pool == "shipper" {
				med, mx := medianMax(latencies(ts))
				ok := !med.capped && !mx.capped && med.d <= time.Second && mx.d <= 2*time.Second
				note += "; goal: within 1 s median, 2 s max: " + yesNo(ok)
			}
			f.Add("resurrection after an outage", name, "s", figures.Lower, xs, note)
		}
	}
	if n := len(r.resurrect) - len(r.trials("shipper", 0)) - len(r.trials("stock", 0)); n > 0 {
		f.Add("resurrection after an outage", "trials with a problem", "trials", figures.Lower, []float64{float64(n)},
			"trials that measured nothing (see the text results' every-trial table), left out above")
	}
}

func (r *results) stallFigures(f *figures.Report) {
	keys, by := r.stallsByKind()
	for _, k := range keys {
		ts := by[k]
		name := fmt.Sprintf("%s, stall_timeout %s", k.kind, k.stall)
		if strings.HasPrefix(k.kind, "slow") {
			var xs []float64
			var hedges int64
			for _, t := range ts {
				xs = append(xs, float64(t.stallCount()))
				hedges += t.stats.Hedges
			}
			f.Add("stall detection: false alarms on a slow but steady bulk", fmt.Sprintf("stall_timeout %s", k.stall), "stalls",
				figures.Lower, xs, fmt.Sprintf("stalls the pool declared per ~%d MiB bulk at %d KB/s up, 50 ms latency; %d hedges in %s; goal: none",
					r.o.steadySize, r.o.steadyRate, hedges, count(len(ts), "trial")))
			continue
		}
		var detected, answered []float64
		firsts := map[string]int{}
		for _, t := range ts {
			answered = append(answered, t.answer.Seconds())
			if t.what != "" {
				detected = append(detected, t.declared.Seconds())
				firsts[t.what]++
			}
		}
		var what []string
		for _, w := range slices.Sorted(maps.Keys(firsts)) {
			what = append(what, fmt.Sprintf("%d × %s", firsts[w], w))
		}
		note := "from the stall's start to the pool counting a stall or a hedge; counted first: " + strings.Join(what, ", ")
		if len(detected) < len(ts) {
			note += fmt.Sprintf("; %d of %d trials counted nothing", len(ts)-len(detected), len(ts))
		}
		f.Add("stall detection", name, "s", figures.Lower, detected, note)
		f.Add("stalled bulk answered", name, "s", figures.Lower, answered,
			"from the stall's start (upload: node A's proxy stopped reading; response: the Send's start) to the Send answered")
	}
}

func (r *results) scenarioFigures(f *figures.Report) {
	const group = "the issue's scenarios"
	if s := r.s1; s != nil {
		xs, capped := seconds([]value{s.gap})
		f.Add(group, "S1: a node goes silent, longest stretch without indexing progress", "s", figures.Lower, xs,
			fmt.Sprintf("the agent at its defaults, %d records/s, watched %s after the stall (_count every 250 ms)%s; was 59 s; goal: under 10 s: %s",
				s.rate, s.window, cappedNote(capped, 1, s.window), yesNo(!s.gap.capped && s.gap.d < 10*time.Second)))
	}
	if s := r.s2; s != nil {
		var vs []value
		for _, b := range s.bursts {
			vs = append(vs, b.took)
		}
		xs, capped := seconds(vs)
		_, mx := medianMax(vs)
		f.Add(group, "S2: a middlebox drops idle connections, each burst produced to indexed", "s", figures.Lower, xs,
			fmt.Sprintf("the agent at its defaults, %d bursts of %d records %s apart, connections dropped when idle %s%s; was 62 s; goal: under 10 s: %s",
				len(s.bursts), s.size, s.gap, s.idle, cappedNote(capped, len(vs), s.bound), yesNo(!mx.capped && mx.d < 10*time.Second)))
	}
}

func (r *results) throughputFigures(f *figures.Report) {
	t := r.tp
	if t == nil {
		return
	}
	var up, down []float64
	bad := 0
	for _, run := range t.runs {
		switch {
		case run.took.capped:
			bad++
		case run.outage:
			down = append(down, run.rate)
		default:
			up = append(up, run.rate)
		}
	}
	note := fmt.Sprintf("a backlog of %d loggen records in Kafka indexed by the agent at its defaults, two node URLs; agent start to every record indexed",
		t.records)
	if bad > 0 {
		note += fmt.Sprintf("; %d runs did not finish, left out", bad)
	}
	const group = "throughput with a node down"
	f.Add(group, "both nodes up", "docs/s", figures.Higher, up, note)
	f.Add(group, "node A down (refused)", "docs/s", figures.Higher, down, note)
	var ratios []float64
	for i := 0; i+1 < len(t.runs); i += 2 {
		a, b := t.runs[i], t.runs[i+1]
		if a.outage {
			a, b = b, a
		}
		if a.took.capped || b.took.capped || a.rate == 0 {
			continue
		}
		ratios = append(ratios, b.rate/a.rate)
	}
	f.Add("throughput: node down ÷ both up", "node A down ÷ both up", "ratio", figures.Either, ratios,
		"per pair of runs next to each other (healthy/down alternate)")
}

func (r *results) fleetFigures(f *figures.Report) {
	fl := r.fleet
	if fl == nil {
		return
	}
	group := fmt.Sprintf("fleet: %d pools lose the same node, it comes back", fl.pools)
	xs := make([]float64, len(fl.alive))
	for i, d := range fl.alive {
		xs[i] = d.Seconds()
	}
	note := "one value per pool: from the node's return to the pool having it alive; probe_interval 1s (±25%)"
	if fl.notAlive > 0 {
		note += fmt.Sprintf("; %d pools not within %s, left out", fl.notAlive, fl.window)
	}
	f.Add(group, "node alive again in a pool", "s", figures.Lower, xs, note)
	f.Add(group, "peak new connections at the node", "connections/s", figures.Lower,
		[]float64{peakPerSecond(fl.conns, fl.bucket)}, "the busiest 100 ms × 10")
	f.Add(group, "peak GET / at the node", "requests/s", figures.Lower,
		[]float64{peakPerSecond(fl.gets, fl.bucket)}, "the busiest 100 ms × 10")
	conns := figures.Series{Chart: group + ": at the node after its return", Name: "new connections",
		XUnit: "ms from the return", YUnit: "per 100 ms"}
	gets := figures.Series{Chart: conns.Chart, Name: "GET / requests", XUnit: conns.XUnit, YUnit: conns.YUnit}
	last := 0 // the series ends two buckets after the last with any
	for i := range fl.conns {
		if fl.conns[i] > 0 || fl.gets[i] > 0 {
			last = i
		}
	}
	for i := 0; i <= min(last+2, len(fl.conns)-1); i++ {
		x := float64(i * int(fl.bucket.Milliseconds()))
		conns.Points = append(conns.Points, figures.Point{X: x, Y: float64(fl.conns[i])})
		gets.Points = append(gets.Points, figures.Point{X: x, Y: float64(fl.gets[i])})
	}
	f.AddSeries(conns)
	f.AddSeries(gets)
}
