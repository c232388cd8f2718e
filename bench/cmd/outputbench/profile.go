package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/shipper-agent/shipper/agent"
	"github.com/shipper-agent/shipper/bench/internal/agentrun"
	"github.com/shipper-agent/shipper/bench/internal/bulksink"
)

// cpuProfile is where the agent's CPU went in an agent→sink run of the
// agent inside this process: the agent serves no pprof endpoint, so this
// is how the benchmark attributes CPU time. The figures come from the
// binary runs; this run only says what the CPU time consisted of.
type cpuProfile struct {
	path string        // the profile, if kept
	took time.Duration // from the agent's start to the sink's last answer
	flat string        // go tool pprof -top: by own time
	cum  string        // go tool pprof -top -cum: the agent's own functions
}

// profileAgent runs agent→sink with the default settings in this process
// under the CPU profiler, from the agent's start to the sink's last
// answer. The sink's own work is in the profile too, under bulksink.
func (b *bench) profileAgent(ctx context.Context, keep string) (*cpuProfile, error) {
	dir, err := os.MkdirTemp(b.tmp, "profile-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sink, err := bulksink.Start(int64(b.o.records))
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	port, err := agentrun.FreePort()
	if err != nil {
		return nil, err
	}
	group := fmt.Sprintf("%s-profile-%d", b.topic, time.Now().UnixNano())
	conf := agentrun.Config(agentrun.Where{DataDir: dir, API: fmt.Sprintf("127.0.0.1:%d", port), Broker: b.stack.KafkaBrokers,
		Topic: b.topic, Group: group, ESURL: sink.URL(), Index: "outputbench-sink"}, agentrun.Settings{})
	confPath := filepath.Join(dir, "shipper.hcl")
	cfg, err := agent.ParseConfig(confPath, []byte(conf))
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	path := keep
	if path == "" {
		path = filepath.Join(dir, "agent.cpu.pprof")
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, err
	}
	profiling := true
	stopProfile := func() {
		if profiling {
			pprof.StopCPUProfile()
			profiling = false
		}
	}
	defer stopProfile()
	started := time.Now()
	log, _ := agent.NewLogger(cfg.Log, logFile)
	a, err := agent.New(cfg, log)
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.progress("the in-process agent did not stop within 30s")
		}
	}()
	select {
	case <-sink.Done():
	case err := <-done:
		done <- err
		return nil, fmt.Errorf("the in-process agent stopped before the last document: %v", err)
	case <-time.After(b.o.runTimeout):
		return nil, fmt.Errorf("%d of %d documents answered after %s", sink.Stats().Created, b.o.records, b.o.runTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p := &cpuProfile{took: time.Since(started)}
	stopProfile()
	if err := f.Close(); err != nil {
		return nil, err
	}
	if keep != "" {
		p.path = keep
	}
	top := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), path)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go tool pprof: %v: %s", err, out)
		}
		// Drop pprof's header (file, build id, time) but its totals line.
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for len(lines) > 0 && !strings.HasPrefix(lines[0], "Duration") && !strings.HasPrefix(lines[0], "Showing") {
			lines = lines[1:]
		}
		return strings.Join(lines, "\n"), nil
	}
	if p.flat, err = top("-top", "-nodecount=25"); err != nil {
		return nil, err
	}
	// The agent's own functions (and the libraries they call first),
	// by the time spent in them and what they called.
	if p.cum, err = top("-top", "-cum", "-nodecount=40", "-focus=shipper-agent|bulksink", "-show=shipper-agent|bulksink|badger|kafka-go|compress|encoding/json|net/http|syscall"); err != nil {
		return nil, err
	}
	return p, nil
}
