package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper/agent"
	"github.com/shipper-agent/shipper/bench/internal/esadmin"
	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/plainconsumer"
	"github.com/shipper-agent/shipper/bench/internal/quick"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

func report(w io.Writer, info machine.Info, b *bench, runs []runResult, took time.Duration) {
	o := b.o
	def := agent.DefaultConfig()
	fmt.Fprintln(w, "# outputbench: the Elasticsearch output end to end (issue 9), every contender in one run")
	cmd := quick.Command("outputbench", o.quick)
	fmt.Fprintf(w, "# command: SHIPPER_STACK_DIR=%s %s\n", stacktest.Dir(), cmd)
	info.Write(w)
	fmt.Fprintln(w, "# the machine is shared: other engineers' tests may have run meanwhile; \"others\" below is the average number")
	fmt.Fprintln(w, "#   of cores that processes other than the contender, the stack's servers and outputbench kept busy during a run")
	fmt.Fprintf(w, "# stack: %s (test/e2e/stacktest, loopback): Kafka %s, one broker; %s\n", stacktest.Dir(), stacktest.KafkaVersion, b.esInfo)
	fmt.Fprintf(w, "# topic: %s, %d partitions, %d JSON events (%s: %s) of %d bytes + key, %.0f MB of key + value, produced before the runs in %s\n",
		b.topic, o.partitions, o.records, o.values, valuesFunc(o.values), o.valueBytes, float64(b.filled.Bytes)/1e6, b.filled.Took.Round(100*time.Millisecond))
	fmt.Fprintf(w, "# documents: read back once by shipper's Kafka input (%s): ids <topic>-%s-<partition>-<offset>, sources the values\n",
		b.prep.Took.Round(100*time.Millisecond), b.prep.TopicID)
	fmt.Fprintf(w, "#   as they are (checked: compact JSON objects with their own @timestamp, which the agent sends unchanged), %.0f MB\n",
		float64(b.prep.SourceBytes)/1e6)
	if ratio, size, zipped := gzipRatio(b); ratio > 0 {
		fmt.Fprintf(w, "#   a %s bulk body of them gzips at level 1 (compress/gzip BestSpeed, the client's) to %.2f MiB: %.1f×\n",
			shipperSize(size), float64(zipped)/(1<<20), ratio)
	}
	fmt.Fprintf(w, "# agent: the binary of this commit (go build ./cmd/shipper); its config sets data_dir, api, kafka brokers/topics/group_id/\n")
	fmt.Fprintf(w, "#   start_offset, elasticsearch urls/index and the contender's settings; all else default: chunk_size %s,\n", def.Buffer.ChunkSize)
	fmt.Fprintf(w, "#   flush_interval %s, memory_limit %s, sync_writes %v (buffer under %s), max_bulk_bytes %s, max_in_flight %d,\n",
		def.Buffer.FlushInterval, def.Buffer.MemoryLimit, def.Buffer.SyncWrites, info.DataDir, def.Elasticsearch.MaxBulkBytes,
		def.Elasticsearch.MaxInFlight)
	fmt.Fprintf(w, "#   adaptive_concurrency %v, compression %s, hedge_after %s\n", def.Elasticsearch.AdaptiveConcurrency,
		def.Elasticsearch.Compression, def.Elasticsearch.HedgeAfter)
	fmt.Fprintf(w, "# index: a fresh one per run, created beforehand with %s; deleted after the run once a _refresh\n", esadmin.IndexSettings)
	fmt.Fprintln(w, "#   and _count found every document")
	fmt.Fprintln(w, "# loader: a child process of outputbench: every request body built before the clock starts (bulk create, the")
	fmt.Fprintln(w, "#   agent's action lines and sources, the agent's filter_path and include_source_on_error=false), then N workers")
	fmt.Fprintln(w, "#   POST them in turn over keep-alive connections; 429s sent again after 100 ms")
	fmt.Fprintf(w, "# plain: %s, kafka-go %s (bench/internal/plainconsumer: Reader with GroupID, FetchMessage loop,\n",
		"a child process", plainconsumer.KafkaGoVersion())
	fmt.Fprintf(w, "#   CommitMessages every %d records, the input's fetch and group timings)\n", plainconsumer.CommitEvery)
	fmt.Fprintln(w, "# time: from the contender's start (the agent's exec; the loader's first request; NewReader) to its last document:")
	fmt.Fprintln(w, "#   agent→sink: the sink's answer that made every document answered 201; agent→es: the agent's /api/status")
	fmt.Fprintf(w, "#   counting every document indexed (read every %s); loader: its last answer; plain: its last record + commit.\n", o.poll)
	fmt.Fprintln(w, "#   docs/s = documents ÷ that time. \"10→90 %\": the rate between 10 % and 90 % of the documents, without start and tail.")
	fmt.Fprintln(w, "# CPU: user + system time of the contender's process up to its last document (the agent: /proc/<pid>/stat then;")
	fmt.Fprintln(w, "#   the children: getrusage), per million documents; ES CPU: Elasticsearch's processes over the run")
	fmt.Fprintf(w, "# pinned: every thread of the Elasticsearch node on CPU %d (sched_setaffinity, given every CPU back after the run), the\n", esCPU)
	fmt.Fprintf(w, "#   client (agent or loader) started with taskset -c %d: as if they ran on hosts of their own; Kafka unpinned\n", clientCPU)
	fmt.Fprintf(w, "# rounds: %d (side variants in the first %d), each contender once per round, odd rounds in the order of the\n", o.rounds, o.sideRounds)
	fmt.Fprintln(w, "#   summary, even rounds reversed")
	fmt.Fprintf(w, "# took %s\n", took.Round(time.Second))
	fmt.Fprintln(w)

	if len(b.search) > 0 {
		fmt.Fprintf(w, "## the loader's settings search: each once, then the %d fastest again in reverse order, on the first %d documents", o.searchAgain, o.searchRecords)
		if b.warm != nil {
			fmt.Fprintf(w, ", after an untimed warm-up run (%s, %d documents: %.0f docs/s)", b.warm.Settings, b.warm.Docs, b.warm.docsPerSec())
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "pass\tsettings\tdocs/s\t10→90 % docs/s\trequests\tCPU s per M\tES CPU s per M\tothers (cores)\tload at the start\t")
		for _, r := range b.search {
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.0f\t%d\t%.2f\t%.1f\t%.2f\t%s\t\n", -r.Round, r.Settings, r.docsPerSec(), r.steadyPerSec(), r.Requests,
				r.cpuPerMillion(), r.esCPUPerMillion(), r.others(), r.Load)
		}
		tw.Flush()
		fmt.Fprintf(w, "best (highest mean docs/s of its runs: %.0f), used for loader in the rounds: %s\n\n", b.bestMean, b.best)
	}

	by := map[string][]runResult{}
	for _, r := range runs {
		by[r.Contender] = append(by[r.Contender], r)
	}
	fmt.Fprintln(w, "## summary: median [min–max] over the rounds")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "contender\tsettings\truns\tdocs/s\t10→90 % docs/s\tCPU s per M docs\tES CPU s per M\ts to first\ts to last\tpeak RSS MiB\tothers (cores)\t")
	for _, c := range contenders {
		rs := by[c.name]
		if len(rs) == 0 {
			continue
		}
		settings := c.set.String()
		if c.kind == loaderToES {
			settings = b.best.String()
		} else if c.kind == plainKafka {
			settings = "-"
		}
		if c.pinned {
			settings += fmt.Sprintf("; Elasticsearch on CPU %d, %s on CPU %d", esCPU, strings.Fields(c.name)[0], clientCPU)
		}
		if c.baseline {
			settings += "; binary " + o.baselineBin
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", c.name, settings, len(rs),
			spread(rs, "%.0f", runResult.docsPerSec), spread(rs, "%.0f", runResult.steadyPerSec),
			spread(rs, "%.2f", runResult.cpuPerMillion), spread(rs, "%.1f", runResult.esCPUPerMillion),
			spread(rs, "%.2f", func(r runResult) float64 { return r.First.Seconds() }),
			spread(rs, "%.2f", func(r runResult) float64 { return r.Last.Seconds() }),
			spread(rs, "%.0f", func(r runResult) float64 { return float64(r.MaxRSS) / (1 << 20) }),
			spread(rs, "%.2f", runResult.others))
	}
	tw.Flush()
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## ratios within a round (runs adjacent in time): median [min–max] over the rounds")
	thr, cpu := ratios(runs, "agent→sink", "plain", o.rounds)
	fmt.Fprintf(w, "(a) agent→sink ÷ plain, docs/s: %s (goal ≥ 0.8: %s); CPU s per M: %s\n", spreadOf(thr, "%.2f"), verdict(thr, 0.8), spreadOf(cpu, "%.2f"))
	thr, cpu = ratios(runs, "agent→es", "loader", o.rounds)
	steady := ratioOf(runs, "agent→es", "loader", o.rounds, runResult.steadyPerSec)
	fmt.Fprintf(w, "(b)/(c) agent→es ÷ loader, docs/s: %s (goal ≥ 0.9: %s); 10→90 %% docs/s: %s; CPU s per M: %s\n",
		spreadOf(thr, "%.2f"), verdict(thr, 0.9), spreadOf(steady, "%.2f"), spreadOf(cpu, "%.2f"))
	thr, cpu = ratios(runs, "agent→es pinned", "loader pinned", o.rounds)
	steady = ratioOf(runs, "agent→es pinned", "loader pinned", o.rounds, runResult.steadyPerSec)
	fmt.Fprintf(w, "(b)/(c) pinned (Elasticsearch on CPU %d, the agent or the loader on CPU %d), agent→es pinned ÷ loader pinned, docs/s: %s (goal ≥ 0.9: %s);\n",
		esCPU, clientCPU, spreadOf(thr, "%.2f"), verdict(thr, 0.9))
	fmt.Fprintf(w, "    10→90 %% docs/s: %s; CPU s per M: %s\n", spreadOf(steady, "%.2f"), spreadOf(cpu, "%.2f"))
	thr, cpu = ratios(runs, "agent→es gzip", "agent→es", o.rounds)
	esCPU := ratioOf(runs, "agent→es gzip", "agent→es", o.rounds, runResult.esCPUPerMillion)
	fmt.Fprintf(w, "gzip ÷ none (agent→es gzip ÷ agent→es), docs/s: %s; agent CPU s per M: %s; Elasticsearch CPU s per M: %s\n",
		spreadOf(thr, "%.2f"), spreadOf(cpu, "%.2f"), spreadOf(esCPU, "%.2f"))
	if o.baselineBin != "" {
		for _, kind := range []string{"agent→sink", "agent→es"} {
			thr, cpu := ratios(runs, kind, kind+" baseline", o.rounds)
			fmt.Fprintf(w, "%s ÷ %s baseline (%s), docs/s: %s; agent CPU s per M: %s\n", kind, kind, o.baselineBin,
				spreadOf(thr, "%.2f"), spreadOf(cpu, "%.2f"))
		}
	}
	for _, c := range contenders {
		if !c.side || len(by[c.name]) == 0 {
			continue
		}
		thr, cpu := ratios(runs, c.name, "agent→es", o.rounds)
		fmt.Fprintf(w, "%s ÷ agent→es (defaults), docs/s: %s; agent CPU s per M: %s\n", c.name, spreadOf(thr, "%.2f"), spreadOf(cpu, "%.2f"))
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## runs, in the order they ran")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "round\tcontender\tdocs\ts to first\ts to last\tdocs/s\t10→90 % docs/s\tCPU s\tuser s\tsys s\tCPU s per M\twhole life CPU s\tES CPU s per M\tKafka CPU s\toutputbench CPU s\tothers (cores)\tload at the start\tdetail\t")
	for _, r := range runs {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.2f\t%.2f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%.1f\t%.2f\t%.2f\t%.2f\t%s\t%s\t\n", r.Round, r.Contender,
			r.Docs, r.First.Seconds(), r.Last.Seconds(), r.docsPerSec(), r.steadyPerSec(), r.cpu().Seconds(), r.User.Seconds(),
			r.Sys.Seconds(), r.cpuPerMillion(), wholeCPU(r), r.esCPUPerMillion(), r.KafkaCPU.Seconds(), r.ParentCPU.Seconds(),
			r.others(), r.Load, detail(r))
	}
	tw.Flush()
	fmt.Fprintln(w, "detail: agent: window limit at the end/max_in_flight, mean in flight and mean limit while delivering (agent→es), limit cuts")
	fmt.Fprintln(w, "  by cause, growths, hedges, stalls, duplicates (409: hedge losers), document retries, dead letters; the sink: bulk")
	fmt.Fprintln(w, "  requests, bytes on the wire and uncompressed, repeated ids; loader: requests, documents sent again after a 429")
	fmt.Fprintln(w)

	if p := b.profile; p != nil {
		fmt.Fprintf(w, "## where the agent's CPU goes: agent→sink, defaults, the agent inside outputbench under the CPU profiler (%.2f s to the\n", p.took.Seconds())
		fmt.Fprintln(w, "## last document; the sink's work is in it too, under bulksink); for attribution only, the figures above are the binary's")
		if p.path != "" {
			fmt.Fprintf(w, "profile: %s (go tool pprof -top %s)\n", filepath.Base(p.path), p.path)
		}
		fmt.Fprintf(w, "by own time:\n%s\n\nthe agent's functions by cumulative time:\n%s\n\n", p.flat, p.cum)
	}

	fmt.Fprintln(w, "## the agent's warnings and errors over all its runs (count × message)")
	problems := map[string]int{}
	for _, r := range runs {
		for k, v := range r.Agent.Problems {
			problems[r.Contender+": "+k] += v
		}
	}
	if len(problems) == 0 {
		fmt.Fprintln(w, "none")
	}
	for _, k := range slices.Sorted(maps.Keys(problems)) {
		fmt.Fprintf(w, "%6d × %s\n", problems[k], k)
	}
}

func valuesFunc(values string) string {
	if values == "varied" {
		return "logtopic.VariedValue"
	}
	return "logtopic.Value"
}

func wholeCPU(r runResult) string {
	if r.WholeCPU == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.WholeCPU.Seconds())
}

func detail(r runResult) string {
	var parts []string
	a := r.Agent
	if a.Window.Max > 0 {
		s := fmt.Sprintf("window %.1f/%d", a.Window.Limit, a.Window.Max)
		if a.MeanLimit > 0 {
			s += fmt.Sprintf(", mean in flight %.2f of limit %.2f", a.MeanInFlight, a.MeanLimit)
		}
		var cuts []string
		for _, k := range slices.Sorted(maps.Keys(a.Window.Cuts)) {
			if a.Window.Cuts[k] > 0 {
				cuts = append(cuts, fmt.Sprintf("%s %d", k, a.Window.Cuts[k]))
			}
		}
		if len(cuts) > 0 {
			s += ", cuts " + strings.Join(cuts, " ")
		}
		s += fmt.Sprintf(", growths %d", a.Window.Growths)
		parts = append(parts, s)
		for _, kv := range []struct {
			k string
			v int64
		}{{"hedges", a.Hedges}, {"stalls", a.Stalls}, {"duplicates", a.Duplicates}, {"retries", a.Retries}, {"dead letters", a.DeadLettered}} {
			if kv.v > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", kv.k, kv.v))
			}
		}
		if a.Exit != "" && !strings.HasPrefix(a.Exit, "exit 0") {
			parts = append(parts, "stop: "+a.Exit)
		}
	}
	if s := r.Sink; s.Requests > 0 {
		p := fmt.Sprintf("sink: %d requests, %.0f MB on the wire, %.0f MB bodies", s.Requests, float64(s.WireBytes)/1e6, float64(s.BodyBytes)/1e6)
		if s.Gzipped > 0 {
			p += fmt.Sprintf(", %d gzipped", s.Gzipped)
		}
		if s.Repeated > 0 {
			p += fmt.Sprintf(", %d repeated ids", s.Repeated)
		}
		parts = append(parts, p)
	}
	if r.Requests > 0 {
		parts = append(parts, fmt.Sprintf("%d requests (%s)", r.Requests, r.Settings))
		if r.Retried > 0 {
			parts = append(parts, fmt.Sprintf("%d documents sent again after a 429", r.Retried))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// ratios returns, per round where both ran, num's docs/s ÷ den's and
// num's CPU per million ÷ den's.
func ratios(runs []runResult, num, den string, rounds int) (thr, cpu []float64) {
	return ratioOf(runs, num, den, rounds, runResult.docsPerSec), ratioOf(runs, num, den, rounds, runResult.cpuPerMillion)
}

func ratioOf(runs []runResult, num, den string, rounds int, f func(runResult) float64) []float64 {
	var out []float64
	for round := 1; round <= rounds; round++ {
		var n, d *runResult
		for i := range runs {
			if runs[i].Round != round {
				continue
			}
			switch runs[i].Contender {
			case num:
				n = &runs[i]
			case den:
				d = &runs[i]
			}
		}
		if n != nil && d != nil && f(*d) > 0 && f(*n) > 0 {
			out = append(out, f(*n)/f(*d))
		}
	}
	return out
}

func spread(rs []runResult, format string, f func(runResult) float64) string {
	var vs []float64
	for _, r := range rs {
		if v := f(r); v > 0 {
			vs = append(vs, v)
		}
	}
	return spreadOf(vs, format)
}

func median(vs []float64) float64 { return figures.Of(vs).Median }

// spreadOf formats the median [min–max] of values; the median of an even
// count is the mean of the middle two.
func spreadOf(vs []float64, format string) string { return figures.Of(vs).Format(format) }

func verdict(ratios []float64, goal float64) string {
	switch {
	case len(ratios) == 0:
		return "no figure"
	case median(ratios) >= goal && slices.Min(ratios) >= goal:
		return "MET in every round"
	case median(ratios) >= goal:
		return "MET by the median, not in every round"
	default:
		return "NOT MET"
	}
}

// gzipRatio gzips a bulk body of these documents as large as a default
// chunk, with the library and level the agent's client uses
// (compress/gzip, BestSpeed), and returns the ratio.
func gzipRatio(b *bench) (ratio float64, size, zipped int) {
	n := min(b.o.records, 20_000)
	ids, sources, err := readDocuments(b.docs, n)
	if err != nil {
		return 0, 0, 0
	}
	reqs := buildRequests("outputbench", ids, sources, int64(agent.DefaultConfig().Buffer.ChunkSize))
	if len(reqs) == 0 {
		return 0, 0, 0
	}
	body := reqs[0].body
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	zw.Write(body)
	zw.Close()
	return float64(len(body)) / float64(z.Len()), len(body), z.Len()
}

func shipperSize(n int) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }
