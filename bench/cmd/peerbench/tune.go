package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
)

// variant is one setting of a peer that -tune tries.
type variant struct {
	peer string
	desc string
	set  func(*peerSettings)
}

// tuneVariants are the settings -tune tries: for Benthos, the output's
// batch size × batches in flight (its cost per document grows with the
// batch: each document's interpolations copy the batch's slice); for
// Filebeat, bulk_max_size × worker around Elastic's throughput preset.
func tuneVariants() []variant {
	var vs []variant
	for _, c := range [][2]int{{100, 16}, {250, 4}, {250, 8}, {500, 4}, {500, 8}, {1000, 4}, {1600, 4}} {
		vs = append(vs, variant{"benthos", fmt.Sprintf("batching.count %d, max_in_flight %d", c[0], c[1]), func(ps *peerSettings) {
			ps.benthosBatchCount, ps.benthosMaxInFlight = c[0], c[1]
		}})
	}
	for _, c := range [][2]int{{800, 4}, {1600, 2}, {1600, 4}, {1600, 8}, {3200, 4}} {
		vs = append(vs, variant{"filebeat", fmt.Sprintf("bulk_max_size %d, worker %d (flush.min_events %d)", c[0], c[1], c[0]),
			func(ps *peerSettings) {
				ps.filebeatBulkMaxSize, ps.filebeatWorkers, ps.filebeatFlushMin = c[0], c[1], c[0]
			}})
	}
	return vs
}

// tuneResult is one variant's run.
type tuneResult struct {
	v variant
	r runResult
}

// tune runs every variant of every peer that can run, -tune-passes times
// (the second pass in reverse order), on the same topic.
func (b *bench) tune(ctx context.Context) []tuneResult {
	var out []tuneResult
	vs := tuneVariants()
	for pass := 1; pass <= b.o.tunePasses; pass++ {
		for k := range vs {
			v := vs[k]
			if pass%2 == 0 {
				v = vs[len(vs)-1-k]
			}
			p := b.peer(v.peer)
			if p == nil || p.err != "" {
				continue
			}
			saved := b.o.peer
			v.set(&b.o.peer)
			r, err := b.runContender(ctx, p, -pass)
			r.Round = -pass
			b.o.peer = saved
			if err != nil {
				r.Err = err.Error()
				b.progress("tune pass %d, %s %s FAILED: %v", pass, v.peer, v.desc, err)
			} else {
				b.progress("tune pass %d, %s %s: %s", pass, v.peer, v.desc, r.summary())
			}
			out = append(out, tuneResult{v, r})
			if ctx.Err() != nil {
				return out
			}
		}
	}
	return out
}

func reportTune(w io.Writer, b *bench, rs []tuneResult) {
	fmt.Fprintf(w, "## -tune: each peer's settings, each variant once per pass (%d passes, the second in reverse order), %d documents\n",
		b.o.tunePasses, b.o.records)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "pass\tpeer\tsettings\tdocs/s\t10→90 % docs/s\tCPU s per M\tpeak RSS MiB\tpeak RssAnon MiB\tES CPU s per M\tdocs per request\tothers (cores)\t")
	for _, t := range rs {
		r := t.r
		if !r.ok() {
			fmt.Fprintf(tw, "%d\t%s\t%s\tFAILED: %s\t\n", -r.Round, t.v.peer, t.v.desc, oneLine(r.Err, 160))
			continue
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f\t%.0f\t%.1f\t%.0f\t%.0f\t%.1f\t%.0f\t%.2f\t\n", -r.Round, t.v.peer, t.v.desc, r.docsPerSec(),
			r.steadyPerSec(), r.cpuPerMillion(), float64(r.MaxRSS)/(1<<20), float64(r.PeakAnon)/(1<<20), r.perMillion(r.ESCPU),
			r.docsPerRequest(), r.others())
	}
	tw.Flush()
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## -tune: each variant's mean over the passes (the defaults are the best of these)")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "peer\tsettings\truns\tmean docs/s\tmean CPU s per M\tmean peak RssAnon MiB\t")
	for _, v := range tuneVariants() {
		var n int
		var rate, cpu, anon float64
		for _, t := range rs {
			if t.v.peer == v.peer && t.v.desc == v.desc && t.r.ok() {
				n++
				rate += t.r.docsPerSec()
				cpu += t.r.cpuPerMillion()
				anon += float64(t.r.PeakAnon) / (1 << 20)
			}
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.1f\t%.0f\t\n", v.peer, v.desc, n, rate/float64(n), cpu/float64(n), anon/float64(n))
	}
	tw.Flush()
	fmt.Fprintln(w)
}
