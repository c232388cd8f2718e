package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/esadmin"
	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/quick"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

func report(w io.Writer, info machine.Info, b *bench, runs []runResult, took time.Duration) {
	o := b.o
	fmt.Fprintln(w, "# peerbench: shipper beside Benthos and Filebeat, the same work in one run (issue 11)")
	cmd := quick.Command("peerbench", o.quick)
	fmt.Fprintf(w, "# command: SHIPPER_STACK_DIR=%s nice -n %d %s\n", stacktest.Dir(), b.nice, cmd)
	info.Write(w)
	fmt.Fprintf(w, "# niceness: %d (the contenders inherit it; the stack's servers have the niceness of whoever started them)\n", b.nice)
	fmt.Fprintln(w, "# the machine is shared: other engineers' tests may have run meanwhile; \"others\" below is the average number")
	fmt.Fprintln(w, "#   of cores that processes other than the contender, the stack's servers and peerbench kept busy during a run")
	fmt.Fprintf(w, "# stack: %s (test/e2e/stacktest, loopback): Kafka %s, one broker; %s\n", stacktest.Dir(), stacktest.KafkaVersion, b.esInfo)
	fmt.Fprintf(w, "# topic: %s, %d partitions, %d JSON events (logtopic.VariedValue) of %d bytes + key, %.0f MB of key + value, produced\n",
		b.topic, o.partitions, o.records, o.valueBytes, float64(b.filled.Bytes)/1e6)
	fmt.Fprintf(w, "#   before the runs in %s; every contender reads it from the oldest offset in a consumer group of its own\n",
		b.filled.Took.Round(100*time.Millisecond))
	fmt.Fprintf(w, "# index: a fresh one per run, created beforehand with %s; deleted after the run,\n", esadmin.IndexSettings)
	fmt.Fprintln(w, "#   once a _refresh and _count found exactly every document; document ids from topic, partition and offset")
	fmt.Fprintln(w, "# proxy: every contender sends to a pass-through HTTP proxy inside peerbench (the same for all): it answers GET /")
	fmt.Fprintln(w, "#   as a full node does (the stack's minimal node answers 405; Filebeat's connect check needs it), forwards all else")
	fmt.Fprintln(w, "#   over keep-alive connections without Accept-Encoding, and reads the item statuses of every bulk answer")
	fmt.Fprintln(w, "# time: from the contender's exec to the bulk answer (as the proxy got it) that made every document created (201).")
	fmt.Fprintln(w, "#   docs/s = documents ÷ that time, start-up and group join included. \"10→90 %\": the rate between 10 % and 90 %")
	fmt.Fprintln(w, "#   of the documents, without start and tail")
	fmt.Fprintln(w, "# CPU: user + system time of the contender's process up to its last document (/proc/<pid>/stat then, the counters")
	fmt.Fprintln(w, "#   rusage reports), per million documents; \"whole\": rusage over its whole life, shutdown included. ES CPU:")
	fmt.Fprintln(w, "#   Elasticsearch's processes over the run")
	fmt.Fprintln(w, "# memory: peak RSS is rusage's ru_maxrss (the kernel's high-water mark of the resident set); RssAnon (anonymous")
	fmt.Fprintln(w, "#   memory: heap, stacks; not file pages such as shipper's memory-mapped buffer files) is the peak of")
	fmt.Fprintf(w, "#   /proc/<pid>/status sampled every %s\n", sampleEvery)
	if b.warm != "" {
		fmt.Fprintf(w, "# warm-up, before the rounds: %s\n", b.warm)
	}
	if o.tune {
		fmt.Fprintln(w, "# -tune: no rounds; each peer's settings variants, in the table at the end")
	} else {
		fmt.Fprintf(w, "# rounds: %d, each contender once per round, odd rounds in the order of the summary, even rounds reversed\n", o.rounds)
	}
	fmt.Fprintf(w, "# took %s\n", took.Round(time.Second))
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## contenders")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "contender\tversion\tsettings\tbuild\t")
	for _, p := range b.peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", p.name, p.version, settings(p.name, o.peer), buildSummary(p))
	}
	tw.Flush()
	fmt.Fprintln(w)

	if !o.tune {
		reportRounds(w, b, runs)
	}

	var failed []runResult
	for _, r := range runs {
		if !r.ok() {
			failed = append(failed, r)
		}
	}
	var unbuilt []*peer
	for _, p := range b.peers {
		if p.bin == "" && p.err != "" {
			unbuilt = append(unbuilt, p)
		}
	}
	if len(failed) > 0 || len(unbuilt) > 0 {
		fmt.Fprintln(w, "## what failed, in the contenders' own words")
		for _, p := range unbuilt {
			fmt.Fprintf(w, "%s: %s\n", p.name, p.err)
		}
		for _, r := range failed {
			fmt.Fprintf(w, "round %d, %s: %s\n", r.Round, r.Contender, r.Err)
		}
		fmt.Fprintln(w)
	}

	if len(b.directs) > 0 {
		fmt.Fprintln(w, "## the peers straight to the node, without the proxy, in their own words (Filebeat with the rounds' configuration;")
		fmt.Fprintln(w, "## Benthos with sniff and healthcheck at their defaults, on)")
		for _, p := range b.peers {
			if d, ok := b.directs[p.name]; ok {
				fmt.Fprintf(w, "%s: %s\n", p.name, d)
			}
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "## builds")
	for _, p := range b.peers {
		if p.name == "shipper" {
			fmt.Fprintf(w, "shipper: %s\n", buildSummary(p))
			continue
		}
		fmt.Fprintf(w, "%s: this run's build step took %s (%s)\n", p.name, p.build.ThisRun.Round(100*time.Millisecond),
			map[bool]string{true: "it built the binary", false: "the binary was in the cache"}[p.build.Built])
		if p.build.First != "" {
			fmt.Fprintf(w, "  the cached binary's build (build.txt):\n")
			fmt.Fprint(w, indent(p.build.First, "    "))
		}
		if len(p.build.History) > 0 {
			fmt.Fprintf(w, "  every build of it on this machine (builds.log):\n")
			fmt.Fprint(w, indent(strings.Join(p.build.History, "\n"), "    "))
		}
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## configuration files (each contender's first run; paths, ports, topic, group and index differ per run)")
	for _, p := range b.peers {
		if c, ok := b.configs[p.name]; ok {
			fmt.Fprintf(w, "### %s\n", p.name)
			fmt.Fprint(w, indent(c, "    "))
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## a document each contender indexed (its first run's index, _search?size=1)")
	for _, p := range b.peers {
		if s, ok := b.samples[p.name]; ok {
			fmt.Fprintf(w, "%s: %s\n", p.name, s)
		}
	}
}

func buildSummary(p *peer) string {
	if p.name == "shipper" {
		if p.build.Built {
			return fmt.Sprintf("go build ./cmd/shipper in %s by this run", p.build.ThisRun.Round(100*time.Millisecond))
		}
		return "given with -agent"
	}
	if p.bin == "" {
		return "not built: " + oneLine(p.err, 120)
	}
	this := fmt.Sprintf("cached (this run's build step %s)", p.build.ThisRun.Round(100*time.Millisecond))
	if p.build.Built {
		this = "built by this run"
		if l, _, _ := strings.Cut(p.build.First, "\n"); l != "" {
			this += ": " + strings.TrimPrefix(l, "took ")
		}
	}
	if len(p.build.History) > 0 {
		_, first, _ := strings.Cut(p.build.History[0], ": ")
		first, _, _ = strings.Cut(first, ",")
		this += "; the first build on this machine " + first
	}
	return this
}

func find(runs []runResult, name string, round int) (runResult, bool) {
	for _, r := range runs {
		if r.Contender == name && r.Round == round && r.ok() {
			return r, true
		}
	}
	return runResult{}, false
}

func stat(rs []runResult, format string, f func(runResult) float64) string {
	var v []float64
	for _, r := range rs {
		v = append(v, f(r))
	}
	return medianRange(v, format)
}

// medianRange formats "median [min–max]" (just the value for one).
func medianRange(v []float64, format string) string { return figures.Of(v).Format(format) }

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// reportRounds writes the summary, the ratios and every run.
func reportRounds(w io.Writer, b *bench, runs []runResult) {
	o := b.o
	fmt.Fprintln(w, "## summary: median [min–max] over the rounds")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "contender\truns\tdocs/s\t10→90 % docs/s\ts to first\tCPU s per M\twhole CPU s per M\tpeak RSS MiB\tpeak RssAnon MiB\tES CPU s per M\tdocs per request\tKB per request\t")
	for _, p := range b.peers {
		var rs []runResult
		for _, r := range runs {
			if r.Contender == p.name && r.ok() {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			fmt.Fprintf(tw, "%s\t0\tcannot run: %s\t\n", p.name, oneLine(p.err, 200))
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.name, len(rs),
			stat(rs, "%.0f", func(r runResult) float64 { return r.docsPerSec() }),
			stat(rs, "%.0f", func(r runResult) float64 { return r.steadyPerSec() }),
			stat(rs, "%.2f", func(r runResult) float64 { return r.First.Seconds() }),
			stat(rs, "%.2f", func(r runResult) float64 { return r.cpuPerMillion() }),
			stat(rs, "%.2f", func(r runResult) float64 { return r.perMillion(r.WholeCPU) }),
			stat(rs, "%.0f", func(r runResult) float64 { return float64(r.MaxRSS) / (1 << 20) }),
			stat(rs, "%.0f", func(r runResult) float64 { return float64(r.PeakAnon) / (1 << 20) }),
			stat(rs, "%.1f", func(r runResult) float64 { return r.perMillion(r.ESCPU) }),
			stat(rs, "%.0f", func(r runResult) float64 { return r.docsPerRequest() }),
			stat(rs, "%.0f", func(r runResult) float64 { return float64(r.Proxy.BodyBytes) / float64(max(1, r.Proxy.Bulks)) / 1e3 }))
		if p.err != "" {
			fmt.Fprintf(tw, "\t\tthen failed: %s\t\n", oneLine(p.err, 200))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## ratios within a round (runs adjacent in time), shipper ÷ peer: median [min–max] over the rounds")
	for _, p := range b.peers {
		if p.name == "shipper" {
			continue
		}
		var rate, cpu, rss, anon []float64
		for round := 1; round <= o.rounds; round++ {
			s, ok1 := find(runs, "shipper", round)
			q, ok2 := find(runs, p.name, round)
			if !ok1 || !ok2 {
				continue
			}
			rate = append(rate, s.docsPerSec()/q.docsPerSec())
			cpu = append(cpu, s.cpuPerMillion()/q.cpuPerMillion())
			rss = append(rss, float64(s.MaxRSS)/float64(q.MaxRSS))
			anon = append(anon, float64(s.PeakAnon)/float64(q.PeakAnon))
		}
		if len(rate) == 0 {
			fmt.Fprintf(w, "shipper ÷ %s: no round where both delivered\n", p.name)
			continue
		}
		fmt.Fprintf(w, "shipper ÷ %s (%d rounds): docs/s %s; CPU s per M %s; peak RSS %s; peak RssAnon %s\n", p.name, len(rate),
			medianRange(rate, "%.2f"), medianRange(cpu, "%.2f"), medianRange(rss, "%.2f"), medianRange(anon, "%.2f"))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## every run")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tcontender\tdocs\tcounted\ts to first\ts to last\tdocs/s\t10→90 % docs/s\tCPU s\tuser s\tsys s\tCPU s per M\twhole CPU s\t"+
		"peak RSS MiB\tpeak VmRSS sampled\tpeak RssAnon\tsamples\tES CPU s per M\tKafka CPU s\tpeerbench CPU s\tothers (cores)\tload at the start\t"+
		"bulk requests\tdocs per request\titems 200/409/429/other\twhole 429/503\tGET /\texit\tlog lines\t")
	for _, r := range runs {
		if !r.ok() {
			fmt.Fprintf(tw, "%d\t%s\tFAILED: %s\t\n", r.Round, r.Contender, oneLine(r.Err, 160))
			continue
		}
		pc := r.Proxy
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.2f\t%.2f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.0f\t%.0f\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%s\t%d\t%.0f\t%d/%d/%d/%d\t%d\t%d\t%s\t%d\t\n",
			r.Round, r.Contender, r.Docs, r.Counted, r.First.Seconds(), r.Last.Seconds(), r.docsPerSec(), r.steadyPerSec(),
			r.cpu().Seconds(), r.User.Seconds(), r.Sys.Seconds(), r.cpuPerMillion(), r.WholeCPU.Seconds(),
			float64(r.MaxRSS)/(1<<20), float64(r.PeakRSS)/(1<<20), float64(r.PeakAnon)/(1<<20), r.Samples,
			r.perMillion(r.ESCPU), r.KafkaCPU.Seconds(), r.ProxyCPU.Seconds(), r.others(), r.Load,
			pc.Bulks, r.docsPerRequest(), pc.Updated, pc.Conflicts, pc.Rejected, pc.Others, pc.Throttled, pc.Root, r.Exit, r.LogLines)
	}
	tw.Flush()
	for _, r := range runs {
		if r.FirstError != "" || r.Detail != "" || r.Proxy.OtherStatus != "" {
			fmt.Fprintf(w, "round %d, %s:", r.Round, r.Contender)
			if r.Detail != "" {
				fmt.Fprintf(w, " %s;", r.Detail)
			}
			if r.Proxy.OtherStatus != "" {
				fmt.Fprintf(w, " last other item status %s;", r.Proxy.OtherStatus)
			}
			if r.FirstError != "" {
				fmt.Fprintf(w, " first error in its log: %s", oneLine(r.FirstError, 400))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)

}
