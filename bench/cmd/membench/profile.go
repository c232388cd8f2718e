package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/agent"
)

// heapProfile is where the agent's heap went at its peak, from a run of
// the agent inside this process: the agent serves no pprof endpoint, so this
// is how the benchmark attributes memory. The figures in the results come
// from the binary runs; this run only says what the heap consisted of.
type heapProfile struct {
	limit     shipper.ByteSize
	heapInuse int64         // runtime.MemStats.HeapInuse when the profile was taken
	at        time.Duration // since the agent started
	backlog   int64         // buffer disk_bytes then
	path      string        // the profile, if kept
	top       string        // go tool pprof -top
}

// profileAgent runs the agent in this process, configured like the binary
// runs (same settings, the Go soft memory limit set as `shipper run` sets
// it), until the same backlog builds up, and keeps the heap profile taken at
// the highest HeapInuse it saw. The profile (inuse_space) describes the heap
// as of the garbage collection before it was taken.
func profileAgent(ctx context.Context, tmp, broker, topic string, limit shipper.ByteSize, o options, keep string,
	progress func(string, ...any)) (*heapProfile, error) {
	dir := filepath.Join(tmp, "inprocess-"+limit.String())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	_, _, cfg, err := writeConfig(dir, broker, topic, limit, 0)
	if err != nil {
		return nil, err
	}
	prev := debug.SetMemoryLimit(cfg.SoftMemoryLimit())
	defer debug.SetMemoryLimit(prev)
	logFile, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	log, _ := agent.NewLogger(cfg.Log, logFile)
	a, err := agent.New(cfg, log)
	if err != nil {
		return nil, err
	}
	progress("memory_limit %s: heap profile run (the agent in this process)", limit)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	started := time.Now()
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			progress("memory_limit %s: the in-process agent did not stop within 30s", limit)
		}
	}()

	p := &heapProfile{limit: limit}
	var best []byte
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	deadline := time.After(o.runTimeout)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-done:
			done <- err
			return nil, fmt.Errorf("the in-process agent stopped before the backlog: %v", err)
		case <-deadline:
			return nil, fmt.Errorf("the in-process agent's backlog did not reach %s within %s", o.backlog, o.runTimeout)
		case <-tick.C:
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := a.Status()
		// A new peak, by more than 1% so as not to profile every tick.
		if h := int64(ms.HeapInuse); h > p.heapInuse+p.heapInuse/100 {
			var buf bytes.Buffer
			if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
				return nil, err
			}
			best, p.heapInuse, p.at, p.backlog = buf.Bytes(), h, time.Since(started), st.Buffer.DiskBytes
		}
		if st.Buffer.DiskBytes >= int64(o.backlog) {
			break
		}
	}

	path := cmp.Or(keep, filepath.Join(tmp, "heap-"+limit.String()+".pprof"))
	if err := os.WriteFile(path, best, 0o644); err != nil {
		return nil, err
	}
	if keep != "" {
		p.path = keep
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=15", "-sample_index=inuse_space", path).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	// Drop pprof's header (file, build id, time): the table is what matters.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for len(lines) > 0 && !strings.HasPrefix(lines[0], "Showing") {
		lines = lines[1:]
	}
	p.top = strings.Join(lines, "\n")
	progress("memory_limit %s: heap profile at HeapInuse %s, %s after start", limit, mib(p.heapInuse), p.at.Round(100*time.Millisecond))
	return p, nil
}
