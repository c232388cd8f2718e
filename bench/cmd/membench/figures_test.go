package main

import (
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/machine"
)

// Downsampling bounds the points and keeps the peak.
func TestDownsampleKeepsThePeak(t *testing.T) {
	var samples []sample
	for i := range 1001 {
		samples = append(samples, sample{at: time.Duration(i) * 100 * time.Millisecond, rssAnon: int64(i%7) << 20})
	}
	samples[555].rssAnon = 99 << 20
	pts := downsample(samples, func(s sample) int64 { return s.rssAnon }, 400)
	if len(pts) > 400 || len(pts) < 300 {
		t.Fatalf("%d points, want at most 400 and not far fewer", len(pts))
	}
	var peak float64
	for i, p := range pts {
		peak = max(peak, p.Y)
		if i > 0 && p.X <= pts[i-1].X {
			t.Fatalf("x not increasing at %d: %v after %v", i, p.X, pts[i-1].X)
		}
	}
	if peak != 99 {
		t.Fatalf("peak %v MiB, want 99", peak)
	}
	if got := downsample(nil, func(s sample) int64 { return s.rssAnon }, 400); len(got) != 0 {
		t.Fatalf("no samples gave %d points", len(got))
	}
}

// Each limit's figures are over its runs, the ceiling is one value, and
// the memory over time is its first run's.
func TestFiguresOverRuns(t *testing.T) {
	run := func(limit shipper.ByteSize, n int, anonMiB int64, reached time.Duration) *agentRun {
		r := &agentRun{limit: limit, run: n, ceiling: 160 << 20, reached: reached}
		for i := range 10 {
			r.samples = append(r.samples, sample{at: time.Duration(i+1) * 100 * time.Millisecond,
				rssAnon: anonMiB << 20, heapInuse: 10 << 20, consumed: int64(i) * 1000})
		}
		return r
	}
	runs := []*agentRun{
		run(64<<20, 1, 70, time.Second), run(64<<20, 2, 80, 2*time.Second), run(64<<20, 3, 75, 0),
		run(256<<20, 1, 90, time.Second),
	}
	rep := figuresOf(machine.Info{}, options{runs: 3, interval: 100 * time.Millisecond}, runs)
	got := map[string]figures.Stat{}
	for _, f := range rep.Figures {
		got[f.Group+"/"+f.Name] = f.Stat
	}
	if s := got["peak memory/64MiB RssAnon"]; s.N != 3 || s.Median != 75 || s.Min != 70 || s.Max != 80 {
		t.Errorf("64MiB RssAnon %+v, want median 75 [70–80] over 3", s)
	}
	if s := got["peak memory/64MiB ceiling"]; s.N != 1 || s.Median != 160 {
		t.Errorf("64MiB ceiling %+v, want one value, 160", s)
	}
	if s := got["time to backlog/64MiB"]; s.N != 2 || s.Median != 1.5 {
		t.Errorf("64MiB time to backlog %+v, want the 2 runs that reached it", s)
	}
	if s := got["peak memory/256MiB RssAnon"]; s.N != 1 || s.Median != 90 {
		t.Errorf("256MiB RssAnon %+v, want its one run", s)
	}
	for _, s := range rep.Series {
		if s.Name != "ceiling" && !strings.HasSuffix(s.Name, ", run 1") {
			t.Errorf("series %q of %q: want the first run's only", s.Name, s.Chart)
		}
	}
	if n := len(rep.Series); n != 8 {
		t.Errorf("%d series, want 4 per limit", n)
	}
	if got, want := samplesPath("x/memory.txt", runs[1]), "x/memory-64MiB-run2.tsv"; got != want {
		t.Errorf("samples of run 2 at %s, want %s", got, want)
	}
	if got, want := samplesPath("x/memory.txt", runs[0]), "x/memory-64MiB.tsv"; got != want {
		t.Errorf("samples of run 1 at %s, want %s", got, want)
	}
}
