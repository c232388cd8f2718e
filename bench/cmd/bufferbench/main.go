// Command bufferbench measures the chunk buffer's write and read throughput
// with durability on (sync_writes), next to the raw speed of the same disk
// writing the same bytes in chunk-sized blocks with an fsync after each.
//
// For every record set × compression × chunk size, and every repetition,
// it runs two measurements back to back, always in this order:
//
//	buffer  Open a fresh buffer; Append records until -bytes of record
//	        bytes (key + value) are in; Flush. Timed from the first Append
//	        to Flush's return: every chunk sealed and fsynced. Then Close,
//	        drop the directory's pages from the page cache, Open again and
//	        read everything back with Next + Ack (timed).
//	raw     Write the same number of bytes to a new plain file in blocks of
//	        chunk_size, f.Sync() after each (dd oflag=dsync bs=chunk_size).
//
// MB are 10^6 bytes. Results go to -out, the headline figures to the JSON
// file beside it (bench/internal/figures); progress to stderr.
//
// The defaults are what `make bench` runs, within a budget of about 2.5
// minutes on the reference machine (2 cores, a virtual disk): the default
// chunk_size only, 2 record sets × 2 compressions × 3 repetitions of 1 GiB,
// 12 runs of about 10 s. The chunk_size comparison runs with -chunk-sizes
// (1MiB,2MiB,4MiB,8MiB took 8 minutes). BENCH_QUICK=1 (or -quick) is a smoke
// run of a few seconds: 64 MiB, loggen, no compression, one repetition
// (flags given explicitly still win).
//
//	go run ./bench/cmd/bufferbench -out bench/results/buffer.txt
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/bench/internal/figures"
	"github.com/shipper-agent/shipper/bench/internal/machine"
	"github.com/shipper-agent/shipper/bench/internal/pagecache"
	"github.com/shipper-agent/shipper/bench/internal/quick"
	"github.com/shipper-agent/shipper/bench/internal/workload"
	"github.com/shipper-agent/shipper/buffer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bufferbench:", err)
		os.Exit(1)
	}
}

type options struct {
	out          string
	dir          string
	bytes        shipper.ByteSize
	reps         int
	sets         []string
	compressions []string
	chunkSizes   []shipper.ByteSize
	appenders    int
	timeout      time.Duration
	quick        bool
}

// quickFlags are the sizes of a -quick run, for the flags not given.
var quickFlags = map[string]string{
	"bytes": "64MiB", "reps": "1", "records": "loggen", "compression": "none", "chunk-sizes": "4MiB",
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bufferbench", flag.ContinueOnError)
	o := options{}
	fs.StringVar(&o.out, "out", "", "results file (default: stdout)")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "parent of the temporary buffer directories and raw-disk files")
	size := fs.String("bytes", "1GiB", "record bytes (key + value) appended per run")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of every configuration")
	sets := fs.String("records", strings.Join(workload.Names, ","), "record sets: loggen, 1KiB")
	comps := fs.String("compression", "none,zstd", "compressions")
	chunks := fs.String("chunk-sizes", buffer.DefaultConfig().ChunkSize.String(), "chunk sizes (the comparison: 1MiB,2MiB,4MiB,8MiB)")
	fs.IntVar(&o.appenders, "appenders", workload.Partitions,
		fmt.Sprintf("appending goroutines, one per partition like the agent's input; divides %d", workload.Partitions))
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	quick.Flag(fs, &o.quick, "smoke run: 64MiB, loggen, compression none, chunk 4MiB, 1 repetition, for the flags not given")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.quick {
		if err := quick.Apply(fs, quickFlags); err != nil {
			return err
		}
	}
	var err error
	if o.bytes, err = shipper.ParseByteSize(*size); err != nil {
		return err
	}
	o.sets = strings.Split(*sets, ",")
	o.compressions = strings.Split(*comps, ",")
	for _, s := range strings.Split(*chunks, ",") {
		cs, err := shipper.ParseByteSize(s)
		if err != nil {
			return err
		}
		o.chunkSizes = append(o.chunkSizes, cs)
	}
	if o.appenders < 1 || workload.Partitions%o.appenders != 0 {
		return fmt.Errorf("-appenders must divide %d (each partition is appended by one goroutine)", workload.Partitions)
	}
	if o.reps < 1 {
		return errors.New("-reps must be at least 1")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	tmp, err := os.MkdirTemp(o.dir, "bufferbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	info := machine.Describe(tmp)

	var results []result
	total := len(o.sets) * len(o.compressions) * len(o.chunkSizes) * o.reps
	start := time.Now()
	var phases []phase
	for _, name := range o.sets {
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "bufferbench: generating record set %s\n", name)
		set, err := workload.New(name)
		if err != nil {
			return err
		}
		block := set.Block(int(slices.Max(o.chunkSizes)))
		for rep := 1; rep <= o.reps; rep++ {
			for _, comp := range o.compressions {
				for _, cs := range o.chunkSizes {
					r := result{set: name, meanValue: set.MeanValueSize(), compression: comp, chunkSize: cs, rep: rep,
						appenders: o.appenders}
					// Always buffer then raw: every raw run follows a
					// buffer run and every buffer run a raw run. This
					// virtual disk writes much faster into space a file
					// deleted moments before had just written, so two
					// raw runs in a row would flatter the second.
					err := r.bufferRun(ctx, tmp, set, o.bytes)
					if err == nil {
						err = r.rawRun(ctx, tmp, block, o.bytes)
					}
					if err != nil {
						return fmt.Errorf("%s %s %s rep %d: %w", name, comp, cs, rep, err)
					}
					results = append(results, r)
					fmt.Fprintf(os.Stderr, "bufferbench: [%d/%d %s] %s\n", len(results), total,
						time.Since(start).Round(time.Second), r.line())
				}
			}
		}
		phases = append(phases, phase{name, time.Since(t0)})
	}

	var w io.Writer = os.Stdout
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	report(w, info, o, results, phases, time.Since(start))
	return writeFigures(info, o, results, start)
}

// phase is the time one record set took: generating it and its runs.
type phase struct {
	set  string
	took time.Duration
}

type result struct {
	set         string
	meanValue   float64
	compression string
	chunkSize   shipper.ByteSize
	rep         int
	appenders   int

	records     int64
	bytes       int64 // record bytes appended: key + value
	stored      int64 // bytes stored in chunks
	encoded     int64 // chunk bytes before compression
	chunks      int
	write       time.Duration
	writeCPU    time.Duration
	reopen      time.Duration
	cachedFrac  float64 // of the buffer's files, in the page cache before reading
	read        time.Duration
	readCPU     time.Duration
	raw         time.Duration
	rawBytes    int64
	appendBlock float64 // seconds appends waited on a ceiling
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func (r *result) writeMBps() float64 { return mbps(r.bytes, r.write) }
func (r *result) readMBps() float64  { return mbps(r.bytes, r.read) }
func (r *result) rawMBps() float64   { return mbps(r.rawBytes, r.raw) }
func (r *result) ratio() float64     { return r.writeMBps() / r.rawMBps() }
func (r *result) writeRecs() float64 { return float64(r.records) / r.write.Seconds() }
func (r *result) readRecs() float64  { return float64(r.records) / r.read.Seconds() }

func (r *result) line() string {
	return fmt.Sprintf("%s %s %s rep %d: write %.0f MB/s (%.0f rec/s), raw disk %.0f MB/s, ratio %.2f; read %.0f MB/s",
		r.set, r.compression, r.chunkSize, r.rep, r.writeMBps(), r.writeRecs(), r.rawMBps(), r.ratio(), r.readMBps())
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r *result) bufferRun(ctx context.Context, parent string, set *workload.Set, target shipper.ByteSize) error {
	dir := filepath.Join(parent, "buffer")
	defer os.RemoveAll(dir)
	cfg := buffer.DefaultConfig()
	cfg.Dir = dir
	cfg.ChunkSize = r.chunkSize
	cfg.Compression = r.compression
	cfg.SyncWrites = true
	b, err := buffer.Open(cfg, nil)
	if err != nil {
		return err
	}
	defer b.Close()

	// Like the agent's Kafka input: one goroutine per partition, each
	// appending its partition's records in offset order.
	var appended atomic.Int64
	counts := make([]int64, r.appenders)
	errs := make([]error, r.appenders)
	var wg sync.WaitGroup
	cpu0, t0 := cpuTime(), time.Now()
	for p := range r.appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rec shipper.Record
			for i := p; appended.Load() < int64(target); i += r.appenders {
				set.Record(i, &rec)
				if err := b.Append(ctx, &rec); err != nil {
					errs[p] = fmt.Errorf("append: %w", err)
					return
				}
				counts[p]++
				appended.Add(int64(len(rec.Key) + len(rec.Value)))
			}
		}()
	}
	wg.Wait()
	b.Flush(ctx)
	r.write, r.writeCPU = time.Since(t0), cpuTime()-cpu0
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, n := range counts {
		r.records += n
	}
	r.bytes = appended.Load()
	st := b.Stats()
	if st.OpenRecords != 0 || st.DiskRecords != r.records {
		return fmt.Errorf("after Flush: %d records on disk, %d open; appended %d", st.DiskRecords, st.OpenRecords, r.records)
	}
	r.chunks, r.stored, r.appendBlock = st.DiskChunks, st.DiskBytes, st.BlockedSeconds
	if err := b.Close(); err != nil {
		return err
	}

	// Read from the disk, not from what the write left in the page cache.
	if err := pagecache.Evict(dir); err != nil {
		return err
	}
	if res, tot, err := pagecache.Resident(dir); err == nil && tot > 0 {
		r.cachedFrac = float64(res) / float64(tot)
	}
	t0 = time.Now()
	b, err = buffer.Open(cfg, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	r.reopen = time.Since(t0)
	var records, bytes int64
	cpu0, t0 = cpuTime(), time.Now()
	for range r.chunks {
		c, err := b.Next(ctx)
		if err != nil {
			return fmt.Errorf("next: %w", err)
		}
		records += int64(len(c.Records))
		for _, rec := range c.Records {
			bytes += int64(len(rec.Key) + len(rec.Value))
		}
		r.encoded += c.RawBytes
		if err := b.Ack(ctx, c, nil); err != nil {
			return err
		}
	}
	r.read, r.readCPU = time.Since(t0), cpuTime()-cpu0
	if records != r.records || bytes != r.bytes {
		return fmt.Errorf("read back %d records (%d bytes), appended %d (%d bytes)", records, bytes, r.records, r.bytes)
	}
	return b.Close()
}

func (r *result) rawRun(ctx context.Context, parent string, block []byte, target shipper.ByteSize) error {
	path := filepath.Join(parent, "raw-disk")
	defer os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	bs := int64(r.chunkSize)
	t0 := time.Now()
	for r.rawBytes < int64(target) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(bs, int64(target)-r.rawBytes)
		if _, err := f.Write(block[:n]); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		r.rawBytes += n
	}
	r.raw = time.Since(t0)
	return f.Close()
}

// stat is the median and range of one figure over repetitions.
type stat struct{ med, lo, hi float64 }

func summarize(rs []result, f func(*result) float64) stat {
	v := make([]float64, len(rs))
	for i := range rs {
		v[i] = f(&rs[i])
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return stat{med, v[0], v[len(v)-1]}
}

func (s stat) format(prec int) string {
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, s.med, prec, s.lo, prec, s.hi)
}

func command(o options) string { return quick.Command("bufferbench", o.quick) }

func report(w io.Writer, info machine.Info, o options, rs []result, phases []phase, took time.Duration) {
	fmt.Fprintln(w, "# bufferbench: chunk buffer write/read throughput (sync_writes = true) vs raw disk write + fsync")
	fmt.Fprintf(w, "# command: %s\n", command(o))
	info.Write(w)
	var per []string
	for _, p := range phases {
		per = append(per, fmt.Sprintf("%s %s", p.set, p.took.Round(time.Second)))
	}
	fmt.Fprintf(w, "# per run: %s of record bytes (key + value), %d partitions appended by %d goroutines; %d repetitions; took %s (%s)\n",
		o.bytes, workload.Partitions, o.appenders, o.reps, took.Round(time.Second), strings.Join(per, ", "))
	fmt.Fprintln(w, "# MB = 10^6 bytes. write: first Append to Flush returned (all chunks fsynced). read: Next + Ack of")
	fmt.Fprintln(w, "# every chunk after Close, page-cache eviction of the buffer's files, and Open. raw: the same")
	fmt.Fprintln(w, "# bytes to a new plain file in chunk_size blocks, fsync after each, right after the buffer run (each")
	fmt.Fprintln(w, "# configuration runs buffer then raw). ratio = buffer write MB/s ÷ MB/s of the raw run beside it.")
	fmt.Fprintln(w, "# Spread: [min–max] over repetitions.")
	fmt.Fprintln(w)

	fmt.Fprintln(w, "## summary: median [min–max]")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "records\tcompression\tchunk_size\twrite MB/s\twrite rec/s (k)\traw disk MB/s\twrite ÷ raw\tread MB/s\tread rec/s (k)\tstored/raw bytes\t")
	order, groups := configurations(o, rs)
	for _, k := range order {
		g := groups[k]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.3f\t\n", k.set, k.comp, k.cs,
			summarize(g, (*result).writeMBps).format(0),
			summarize(g, func(r *result) float64 { return r.writeRecs() / 1e3 }).format(0),
			summarize(g, (*result).rawMBps).format(0),
			summarize(g, (*result).ratio).format(2),
			summarize(g, (*result).readMBps).format(0),
			summarize(g, func(r *result) float64 { return r.readRecs() / 1e3 }).format(0),
			float64(g[0].stored)/float64(g[0].encoded))
	}
	tw.Flush()
	fmt.Fprintln(w)

	if len(o.chunkSizes) > 1 {
		best(w, o, order, groups)
	}

	fmt.Fprintln(w, "## runs")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "records\tmean value B\tcompression\tchunk_size\trep\trecords\trecord MB\tchunks\tstored MB\twrite s\twrite CPU s\twrite MB/s\twrite rec/s\traw s\traw MB/s\twrite ÷ raw\treopen ms\tcached before read\tread s\tread CPU s\tread MB/s\tappend blocked s\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%d\t%d\t%.0f\t%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\t%.2f\t%.0f\t%.3f\t%.0f\t%.1f%%\t%.2f\t%.2f\t%.0f\t%.2f\t\n",
			r.set, r.meanValue, r.compression, r.chunkSize, r.rep, r.records, float64(r.bytes)/1e6, r.chunks,
			float64(r.stored)/1e6, r.write.Seconds(), r.writeCPU.Seconds(), r.writeMBps(), r.writeRecs(),
			r.raw.Seconds(), r.rawMBps(), r.ratio(), float64(r.reopen.Microseconds())/1e3, 100*r.cachedFrac,
			r.read.Seconds(), r.readCPU.Seconds(), r.readMBps(), r.appendBlock)
	}
	tw.Flush()
}

// key is one configuration: record set × compression × chunk size.
type key struct {
	set, comp string
	cs        shipper.ByteSize
}

func (k key) String() string { return fmt.Sprintf("%s %s %s", k.set, k.comp, k.cs) }

// configurations groups the runs by configuration, in the order of the
// options.
func configurations(o options, rs []result) ([]key, map[key][]result) {
	groups := map[key][]result{}
	var order []key
	for _, r := range rs {
		k := key{r.set, r.compression, r.chunkSize}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortStableFunc(order, func(a, b key) int {
		return cmp.Or(cmp.Compare(slices.Index(o.sets, a.set), slices.Index(o.sets, b.set)),
			cmp.Compare(slices.Index(o.compressions, a.comp), slices.Index(o.compressions, b.comp)), cmp.Compare(a.cs, b.cs))
	})
	return order, groups
}

// writeFigures writes the headline figures beside -out: per configuration,
// each repetition's buffer write, raw disk and buffer read MB/s and their
// ratio.
func writeFigures(info machine.Info, o options, rs []result, start time.Time) error {
	f := figures.New("bufferbench", "chunk buffer write and read throughput (sync_writes = true) beside the raw disk", info, o.quick)
	order, groups := configurations(o, rs)
	per := func(g []result, v func(*result) float64) []float64 {
		xs := make([]float64, len(g))
		for i := range g {
			xs[i] = v(&g[i])
		}
		return xs
	}
	for _, k := range order {
		g := groups[k]
		note := fmt.Sprintf("%s of record bytes per run", o.bytes)
		f.Add("write vs raw disk", k.String()+" buffer", "MB/s", figures.Higher, per(g, (*result).writeMBps),
			note+"; first Append to Flush returned, every chunk fsynced")
		f.Add("write vs raw disk", k.String()+" raw disk", "MB/s", figures.Higher, per(g, (*result).rawMBps),
			note+"; the same bytes in chunk_size blocks, fsync after each, right after the buffer run")
		f.Add("buffer write ÷ raw disk", k.String(), "ratio", figures.Either, per(g, (*result).ratio),
			"each run's buffer write MB/s ÷ the raw disk run beside it")
		f.Add("buffer read, page cache dropped", k.String(), "MB/s", figures.Higher, per(g, (*result).readMBps),
			note+"; Next + Ack of every chunk after Close, page-cache eviction and Open")
	}
	return f.WriteBeside(o.out, start)
}

// best prints the chunk_size with the best median ratio and write MB/s,
// per record set and compression.
func best(w io.Writer, o options, order []key, groups map[key][]result) {
	fmt.Fprintln(w, "## best chunk_size by median write ÷ raw, and by median write MB/s")
	for _, set := range o.sets {
		for _, comp := range o.compressions {
			var byRatio, byMBps key
			var bestRatio, bestMBps float64
			for _, k := range order {
				if k.set != set || k.comp != comp {
					continue
				}
				if s := summarize(groups[k], (*result).ratio); s.med > bestRatio {
					bestRatio, byRatio = s.med, k
				}
				if s := summarize(groups[k], (*result).writeMBps); s.med > bestMBps {
					bestMBps, byMBps = s.med, k
				}
			}
			fmt.Fprintf(w, "%s %s: ratio %s (%.2f), write MB/s %s (%.0f)\n", set, comp, byRatio.cs, bestRatio, byMBps.cs, bestMBps)
		}
	}
	fmt.Fprintln(w)
}
