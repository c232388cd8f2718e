// Command restartbench measures how fast a buffer holding a large backlog
// resumes delivery after a restart: buffer.Open plus the first Next that
// returns a chunk. It builds the backlog first (-bytes of stored chunks,
// sync_writes on), closes it, and then for each repetition drops the
// buffer's files from the page cache (so the restart reads from disk, as
// after a reboot), opens it, takes the first chunk, releases it and closes.
// The bytes the process read from storage (/proc/self/io read_bytes) show
// that only metadata and the first chunk are read. A warm repetition (pages
// cached, as after a process restart) follows each cold one.
//
// Results go to -out, the headline figures to the JSON file beside it
// (bench/internal/figures); progress to stderr. The defaults are what `make
// bench` runs: a 2.2 GiB backlog (the issue asks for at least 2 GiB) and 3
// repetitions, about 20 s on the reference machine (building the backlog
// is most of it). BENCH_QUICK=1 (or -quick) is a smoke run of a few
// seconds: 128 MiB, one repetition (flags given explicitly still win).
//
//	go run ./bench/cmd/restartbench -out bench/results/restart.txt
package main

import (
	"bufio"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
		fmt.Fprintln(os.Stderr, "restartbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("restartbench", flag.ContinueOnError)
	out := fs.String("out", "", "results file (default: stdout)")
	parent := fs.String("dir", os.TempDir(), "parent of the temporary buffer directory")
	size := fs.String("bytes", "2200MiB", "stored chunk bytes to build before restarting")
	chunk := fs.String("chunk-size", "4MiB", "chunk_size of the buffer")
	comp := fs.String("compression", "none", "compression of the buffer")
	records := fs.String("records", "loggen", "record set: loggen or 1KiB")
	reps := fs.Int("reps", 3, "cold and warm restarts, each")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	var smoke bool
	quick.Flag(fs, &smoke, "smoke run: 128MiB, 1 repetition, for the flags not given")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if smoke {
		if err := quick.Apply(fs, map[string]string{"bytes": "128MiB", "reps": "1"}); err != nil {
			return err
		}
	}
	target, err := shipper.ParseByteSize(*size)
	if err != nil {
		return err
	}
	cfg := buffer.DefaultConfig()
	if cfg.ChunkSize, err = shipper.ParseByteSize(*chunk); err != nil {
		return err
	}
	cfg.Compression = *comp
	cfg.SyncWrites = true
	cfg.DiskLimit = max(cfg.DiskLimit, 2*target)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	tmp, err := os.MkdirTemp(*parent, "restartbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg.Dir = filepath.Join(tmp, "buffer")
	info := machine.Describe(tmp)

	start := time.Now()
	set, err := workload.New(*records)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "restartbench: building a backlog of %s in %s\n", target, cfg.Dir)
	b, err := buffer.Open(cfg, nil)
	if err != nil {
		return err
	}
	t0 := time.Now()
	var rec shipper.Record
	var n int
	for ; ; n++ {
		if n%20000 == 0 && b.Stats().DiskBytes >= int64(target) {
			break
		}
		set.Record(n, &rec)
		if err := b.Append(ctx, &rec); err != nil {
			b.Close()
			return fmt.Errorf("append: %w", err)
		}
	}
	b.Flush(ctx)
	build := time.Since(t0)
	backlog := b.Stats()
	if err := b.Close(); err != nil {
		return err
	}
	files, usage := dirFiles(cfg.Dir)
	fmt.Fprintf(os.Stderr, "restartbench: %d chunks, %d records, %.0f MB stored in %s\n",
		backlog.DiskChunks, backlog.DiskRecords, float64(backlog.DiskBytes)/1e6, build.Round(time.Millisecond))

	t0 = time.Now()
	var rs []restart
	for rep := 1; rep <= *reps; rep++ {
		for _, cold := range []bool{true, false} {
			r, err := restartOnce(ctx, cfg, cold)
			if err != nil {
				return fmt.Errorf("restart %d: %w", rep, err)
			}
			r.rep = rep
			if r.chunks != backlog.DiskChunks || r.firstSeq != 1 {
				return fmt.Errorf("restart %d: reopened with %d chunks, first chunk %d; closed with %d chunks starting at 1",
					rep, r.chunks, r.firstSeq, backlog.DiskChunks)
			}
			rs = append(rs, r)
			fmt.Fprintf(os.Stderr, "restartbench: %s\n", r.line())
		}
	}
	restarts := time.Since(t0)

	var w io.Writer = os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	fmt.Fprintln(w, "# restartbench: time from buffer.Open to the first Next returning a chunk, with a large backlog")
	fmt.Fprintf(w, "# command: %s\n", quick.Command("restartbench", smoke))
	info.Write(w)
	fmt.Fprintf(w, "# took %s (building the backlog %s, %d cold and %d warm restarts %s)\n", time.Since(start).Round(100*time.Millisecond),
		build.Round(100*time.Millisecond), *reps, *reps, restarts.Round(100*time.Millisecond))
	fmt.Fprintf(w, "# buffer: chunk_size %s, compression %s, sync_writes true, records %s (mean value %.0f B)\n",
		cfg.ChunkSize, cfg.Compression, set.Name, set.MeanValueSize())
	fmt.Fprintf(w, "# backlog: %d chunks, %d records, %.0f MB stored (%s); directory: %d files, %.0f MB on disk\n",
		backlog.DiskChunks, backlog.DiskRecords, float64(backlog.DiskBytes)/1e6, shipper.ByteSize(backlog.DiskBytes),
		files, float64(usage)/1e6)
	fmt.Fprintf(w, "# built in %s (%.0f MB/s of stored bytes, one appending goroutine)\n",
		build.Round(time.Millisecond), float64(backlog.DiskBytes)/1e6/build.Seconds())
	fmt.Fprintln(w, "# cold: the buffer's files dropped from the page cache first (posix_fadvise DONTNEED; \"cached\" is")
	fmt.Fprintln(w, "# what stayed). warm: right after the cold restart. read MB: bytes this process read from storage")
	fmt.Fprintln(w, "# during Open and during the first Next (/proc/self/io read_bytes; page-cache hits do not count).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## summary: median [min–max]")
	for _, cold := range []bool{true, false} {
		var g []restart
		for _, r := range rs {
			if r.cold == cold {
				g = append(g, r)
			}
		}
		fmt.Fprintf(w, "%s: open + first chunk %s ms (open %s ms, first Next %s ms); read from storage %s MB\n",
			g[0].kind(), med(g, func(r restart) float64 { return ms(r.open + r.next) }),
			med(g, func(r restart) float64 { return ms(r.open) }), med(g, func(r restart) float64 { return ms(r.next) }),
			med(g, func(r restart) float64 { return float64(r.openRead+r.nextRead) / 1e6 }))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## page cache after a cold Open, by file type (before the first Next)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "rep\tfile type\tfiles\tsize MB\tcached MB\tcached per file MB\t")
	for _, r := range rs {
		if !r.cold {
			continue
		}
		exts := slices.Sorted(maps.Keys(r.afterOpen))
		for _, ext := range exts {
			c := r.afterOpen[ext]
			fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f\t%.1f\t%.2f\t\n", r.rep, ext, c.files, float64(c.size)/1e6,
				float64(c.resident)/1e6, float64(c.resident)/1e6/float64(c.files))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## runs")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "rep\tcache\tcached before\topen ms\tfirst Next ms\topen + Next ms\topen read MB\tNext read MB\tclose ms\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%s\t%.1f%%\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.1f\t\n", r.rep, r.kind(), 100*r.cachedFrac,
			ms(r.open), ms(r.next), ms(r.open+r.next), float64(r.openRead)/1e6, float64(r.nextRead)/1e6, ms(r.close))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	f := figures.New("restartbench", "buffer.Open + the first Next with a large backlog, cold and warm page cache", info, smoke)
	backlogNote := fmt.Sprintf("a backlog of %d chunks, %.0f MB stored (chunk_size %s, compression %s)",
		backlog.DiskChunks, float64(backlog.DiskBytes)/1e6, cfg.ChunkSize, cfg.Compression)
	for _, cold := range []bool{true, false} {
		var took, read []float64
		for _, r := range rs {
			if r.cold == cold {
				took = append(took, (r.open + r.next).Seconds())
				read = append(read, float64(r.openRead+r.nextRead)/1e6)
			}
		}
		name, how := "cold", "the buffer's files dropped from the page cache first, as after a reboot"
		if !cold {
			name, how = "warm", "right after the cold restart, as after a process restart"
		}
		f.Add("restart: open + first chunk", name, "s", figures.Lower, took, how+"; "+backlogNote)
		f.Add("restart: read from storage", name, "MB", figures.Lower, read,
			"bytes this process read from storage during Open and the first Next; "+backlogNote)
	}
	return f.WriteBeside(*out, start)
}

type restart struct {
	rep                int
	cold               bool
	cachedFrac         float64
	open, next, close  time.Duration
	openRead, nextRead int64
	chunks             int
	firstSeq           uint64
	afterOpen          map[string]*cached // cold only: page cache by file type
}

// cached is the page-cache residency of one type of file.
type cached struct {
	files          int
	size, resident int64
}

func (r restart) kind() string {
	if r.cold {
		return "cold"
	}
	return "warm"
}

func (r restart) line() string {
	return fmt.Sprintf("%s restart %d: open %.1f ms + first Next %.1f ms = %.1f ms; read %.2f MB from storage (%.1f%% cached before)",
		r.kind(), r.rep, ms(r.open), ms(r.next), ms(r.open+r.next), float64(r.openRead+r.nextRead)/1e6, 100*r.cachedFrac)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func med(rs []restart, f func(restart) float64) string {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return fmt.Sprintf("%.1f [%.1f–%.1f]", m, v[0], v[len(v)-1])
}

func restartOnce(ctx context.Context, cfg buffer.Config, cold bool) (restart, error) {
	r := restart{cold: cold}
	if cold {
		if err := pagecache.Evict(cfg.Dir); err != nil {
			return r, err
		}
	}
	if res, tot, err := pagecache.Resident(cfg.Dir); err == nil && tot > 0 {
		r.cachedFrac = float64(res) / float64(tot)
	}
	read0 := readBytes()
	t0 := time.Now()
	b, err := buffer.Open(cfg, nil)
	if err != nil {
		return r, err
	}
	r.open = time.Since(t0)
	read1 := readBytes()
	if cold {
		files, err := pagecache.Files(cfg.Dir)
		if err != nil {
			b.Close()
			return r, err
		}
		r.afterOpen = map[string]*cached{}
		for _, f := range files {
			ext := cmp.Or(filepath.Ext(f.Path), filepath.Base(f.Path))
			c := r.afterOpen[ext]
			if c == nil {
				c = &cached{}
				r.afterOpen[ext] = c
			}
			c.files++
			c.size += f.Size
			c.resident += f.Resident
		}
	}
	nctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	t1 := time.Now()
	c, err := b.Next(nctx)
	if err != nil {
		b.Close()
		return r, fmt.Errorf("first Next: %w", err)
	}
	r.next = time.Since(t1)
	r.openRead, r.nextRead = read1-read0, readBytes()-read1
	r.firstSeq = c.Seq
	b.Release(c)
	r.chunks = b.Stats().DiskChunks
	t2 := time.Now()
	err = b.Close()
	r.close = time.Since(t2)
	return r, err
}

// readBytes is what this process has read from storage so far.
func readBytes() int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "read_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func dirFiles(dir string) (files int, usage int64) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		files++
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				usage += st.Blocks * 512
			}
		}
		return nil
	})
	return files, usage
}
