package main

import (
	"fmt"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/machine"
)

// writeFigures writes the headline figures of the rounds beside the text
// results (figures.JSONPath(out)): docs/s and CPU per contender, and the
// issue's two ratios per round with their goals.
func writeFigures(out string, info machine.Info, b *bench, runs []runResult, start time.Time) error {
	r := figures.New("outputbench", "the Elasticsearch output end to end: the agent beside its ceilings", info, b.o.quick)
	by := map[string][]runResult{}
	for _, run := range runs {
		by[run.Contender] = append(by[run.Contender], run)
	}
	of := func(name string, f func(runResult) float64) []float64 {
		var xs []float64
		for _, run := range by[name] {
			xs = append(xs, f(run))
		}
		return xs
	}
	groups := []struct {
		group string
		names []string
	}{
		{"to a bulk sink, beside a plain kafka-go consumer", []string{"agent→sink", "plain"}},
		{"into the real node, beside the project's bulk loader", []string{"agent→es", "loader", "agent→es gzip"}},
		{"into the real node, node and client pinned to a core each", []string{"agent→es pinned", "loader pinned"}},
	}
	for _, g := range groups {
		for _, n := range g.names {
			if len(by[n]) == 0 {
				continue
			}
			r.Add(g.group+": docs/s", n, "docs/s", figures.Higher, of(n, runResult.docsPerSec), "")
			r.Add(g.group+": CPU per million docs", n, "CPU s", figures.Lower, of(n, runResult.cpuPerMillion), "")
		}
	}
	goal := func(xs []float64, g float64) string {
		return fmt.Sprintf("goal ≥ %.1f: %s", g, verdict(xs, g))
	}
	rounds := b.o.rounds
	thr, _ := ratios(runs, "agent→sink", "plain", rounds)
	r.Add("ratios within a round, docs/s", "(a) agent→sink ÷ plain", "ratio", figures.Higher, thr, goal(thr, 0.8))
	thr, _ = ratios(runs, "agent→es", "loader", rounds)
	r.Add("ratios within a round, docs/s", "(b)/(c) agent→es ÷ loader", "ratio", figures.Higher, thr, goal(thr, 0.9))
	thr, _ = ratios(runs, "agent→es pinned", "loader pinned", rounds)
	r.Add("ratios within a round, docs/s", "(b)/(c) pinned", "ratio", figures.Higher, thr, goal(thr, 0.9))
	thr, _ = ratios(runs, "agent→es gzip", "agent→es", rounds)
	r.Add("ratios within a round, docs/s", "gzip ÷ none", "ratio", figures.Higher, thr, "")
	for _, c := range contenders {
		if c.side && len(by[c.name]) > 0 {
			thr, _ := ratios(runs, c.name, "agent→es", rounds)
			r.Add("settings variants ÷ defaults, docs/s", c.name, "ratio", figures.Higher, thr, c.set.String())
		}
	}
	return r.WriteBeside(out, start)
}
