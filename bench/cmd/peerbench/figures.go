package main

import (
	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/machine"
)

// writeFigures writes the headline figures of the rounds beside the text
// results (figures.JSONPath(out)): per contender, each round's value; a peer
// that never ran keeps its rows with its reason as the note.
func writeFigures(out string, info machine.Info, b *bench, runs []runResult) error {
	r := figures.New("peerbench", "shipper beside Benthos and Filebeat: Kafka → Elasticsearch, the same events through one proxy", info, b.o.quick)
	per := func(name string, f func(runResult) float64) []float64 {
		var xs []float64
		for _, run := range runs {
			if run.Contender == name && run.ok() {
				xs = append(xs, f(run))
			}
		}
		return xs
	}
	mibOf := func(n int64) float64 { return float64(n) / (1 << 20) }
	for _, p := range b.peers {
		note := ""
		if p.err != "" {
			note = p.err
		}
		r.Add("events/s to a fully indexed count", p.name, "events/s", figures.Higher, per(p.name, runResult.docsPerSec), note)
		r.Add("CPU per million events", p.name, "CPU s", figures.Lower, per(p.name, runResult.cpuPerMillion), note)
		r.Add("peak RSS", p.name, "MiB", figures.Lower, per(p.name, func(x runResult) float64 { return mibOf(x.MaxRSS) }), note)
		r.Add("peak RssAnon", p.name, "MiB", figures.Lower, per(p.name, func(x runResult) float64 { return mibOf(x.PeakAnon) }), note)
	}
	// Ratios within a round: the two ran side by side, minutes apart.
	for _, p := range b.peers {
		if p.name == "shipper" {
			continue
		}
		var docs, cpu []float64
		for round := 1; round <= b.o.rounds; round++ {
			s, ok1 := find(runs, "shipper", round)
			o, ok2 := find(runs, p.name, round)
			if ok1 && ok2 {
				docs = append(docs, s.docsPerSec()/o.docsPerSec())
				cpu = append(cpu, s.cpuPerMillion()/o.cpuPerMillion())
			}
		}
		r.Add("shipper ÷ peer, events/s (same round)", "shipper ÷ "+p.name, "ratio", figures.Higher, docs, "")
		r.Add("shipper ÷ peer, CPU per event (same round)", "shipper ÷ "+p.name, "ratio", figures.Lower, cpu, "")
	}
	return r.WriteBeside(out, b.start)
}
