package main

import (
	"fmt"
	"strings"

	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/machine"
)

// maxPoints bounds each series: a chart needs no more.
const maxPoints = 400

const mibF = 1 << 20

// figuresOf is the run's figures.Report: per limit the peaks against the
// ceiling, the time to the backlog and the ingestion rate over its runs,
// the restarts over its first run's backlog, and the memory over time of
// its first run.
func figuresOf(info machine.Info, o options, runs []*agentRun) *figures.Report {
	rep := figures.New("membench", fmt.Sprintf("agent memory while a %s backlog builds up with Elasticsearch down, and restart to the first bulk over it", o.backlog), info, o.quick)
	for _, lr := range byLimit(runs) {
		r := lr[0] // the first run: its restarts and its memory over time
		l := r.limit.String()
		h := headlinesOf(lr)
		peaks := fmt.Sprintf("%d runs; peak of each run over its samples every %s", len(h.anon), o.interval)
		rep.Add("peak memory", l+" RssAnon", "MiB", figures.Lower, h.anon, peaks)
		rep.Add("peak memory", l+" ceiling", "MiB", figures.Either, []float64{float64(r.ceiling) / mibF},
			"memory_limit + MemoryOverhead(), the documented bound")
		rep.Add("peak Go heap in use", l, "MiB", figures.Lower, h.heap, peaks)

		note := fmt.Sprintf("%d runs", len(h.reached))
		if h.notReached > 0 {
			var why []string
			for _, x := range lr {
				if x.reached == 0 {
					why = append(why, fmt.Sprintf("run %d: %s", x.run, x.problem))
				}
			}
			note += fmt.Sprintf("; %d of %d not reached (%s)", h.notReached, len(lr), strings.Join(why, "; "))
		}
		rep.Add("time to backlog", l, "s", figures.Lower, h.reached, fmt.Sprintf("%s; agent start to buffer disk_bytes ≥ %s", note, o.backlog))
		rep.Add("ingestion into the buffer", l, "records/s", figures.Higher, h.recs,
			fmt.Sprintf("%d runs; first consumed record to the last sample", len(h.recs)))

		var first, ok, up []float64
		for _, t := range r.restarts {
			if t.firstBulk > 0 {
				first = append(first, t.firstBulk.Seconds())
			}
			if t.firstOK > 0 {
				ok = append(ok, t.firstOK.Seconds())
			}
			if t.apiUp > 0 {
				up = append(up, t.apiUp.Seconds())
			}
		}
		how := "over the first run's backlog; exec to the first bulk request at a fake bulk endpoint; Kafka reachable; first trial after SIGTERM, later ones after kill -9"
		rep.Add("restart to first delivered bulk", l+" first bulk request", "s", figures.Lower, first, how)
		rep.Add("restart to first delivered bulk", l+" first document acknowledged", "s", figures.Lower, ok,
			"exec to the sink's answer creating the first document")
		rep.Add("restart to first delivered bulk", l+" API up (buffer open)", "s", figures.Lower, up,
			"exec to the first /api/status answer; the agent opens its buffer before it listens")
		// Ready after a graceful stop and after a kill -9 are apart by the
		// group's session_timeout: two figures.
		for _, k := range []struct {
			name     string
			graceful bool
		}{{"after SIGTERM", true}, {"after kill -9", false}} {
			var rdy []float64
			tried := 0
			for _, t := range r.restarts {
				if t.graceful != k.graceful {
					continue
				}
				tried++
				if t.ready > 0 {
					rdy = append(rdy, t.ready.Seconds())
				}
			}
			if tried == 0 {
				continue
			}
			// Ready waits for the Kafka group (tens of seconds after a kill -9): a
			// group of its own, so its chart does not flatten the sub-second ones.
			rep.Add("restart to ready", l+" /api/health/ready "+k.name, "s", figures.Lower, rdy,
				fmt.Sprintf("exec to ready (joined the Kafka group, a live node); trials ready before their kill: %d of %d", len(rdy), tried))
		}

		// The first run only; its name is in the series' names, not the
		// chart's, so that the chart's file keeps its name.
		chart := fmt.Sprintf("memory while a %s backlog builds, memory_limit %s", o.backlog, l)
		for _, f := range []struct {
			name string
			v    func(sample) int64
		}{
			{"RssAnon", func(s sample) int64 { return s.rssAnon }},
			{"heap in use", func(s sample) int64 { return s.heapInuse }},
			{"buffer memory_bytes", func(s sample) int64 { return s.memoryBytes }},
		} {
			rep.AddSeries(figures.Series{Chart: chart, Name: f.name + ", run 1", XUnit: "s", YUnit: "MiB", Points: downsample(r.samples, f.v, maxPoints)})
		}
		if len(r.samples) > 0 {
			c := float64(r.ceiling) / mibF
			rep.AddSeries(figures.Series{Chart: chart, Name: "ceiling", XUnit: "s", YUnit: "MiB", Points: []figures.Point{
				{X: r.samples[0].at.Seconds(), Y: c}, {X: r.samples[len(r.samples)-1].at.Seconds(), Y: c}}})
		}
	}
	return rep
}

// downsample returns at most n points of f over samples, in MiB: the
// samples are cut into n runs of consecutive samples and each gives its
// largest value, at its time, so that no peak is lost.
func downsample(samples []sample, f func(sample) int64, n int) []figures.Point {
	per := (len(samples) + n - 1) / max(n, 1)
	per = max(per, 1)
	var pts []figures.Point
	for i := 0; i < len(samples); i += per {
		best := samples[i]
		for _, s := range samples[i:min(i+per, len(samples))] {
			if f(s) > f(best) {
				best = s
			}
		}
		pts = append(pts, figures.Point{X: best.at.Seconds(), Y: float64(f(best)) / mibF})
	}
	return pts
}
