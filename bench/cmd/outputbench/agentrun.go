package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/agent"
	"github.com/shipper-agent/shipper/bench/internal/agentlog"
	"github.com/shipper-agent/shipper/bench/internal/agentrun"
	"github.com/shipper-agent/shipper/bench/internal/bulksink"
	"github.com/shipper-agent/shipper/bench/internal/cputime"
)

// runAgent runs the agent binary from the topic's start until every
// document is delivered: answered by a fresh bulksink (agent→sink), or
// counted indexed by the agent into a fresh index (agent→es).
func (b *bench) runAgent(ctx context.Context, c contender, round int) (runResult, error) {
	r := runResult{Contender: c.name}
	total := int64(b.o.records)
	dir, err := os.MkdirTemp(b.tmp, "agent-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	var sink *bulksink.Sink
	var esURL, index string
	if c.kind == agentToSink {
		if sink, err = bulksink.Start(total); err != nil {
			return r, err
		}
		defer sink.Close()
		esURL, index = sink.URL(), "outputbench-sink"
	} else {
		if index, err = b.newIndex(ctx, "agent"); err != nil {
			return r, err
		}
		defer b.es.Delete(index)
		esURL = b.stack.ESURL
	}
	port, err := agentrun.FreePort()
	if err != nil {
		return r, err
	}
	api := fmt.Sprintf("127.0.0.1:%d", port)
	group := fmt.Sprintf("%s-agent-%d-%d", b.topic, round, time.Now().UnixNano())
	conf := agentrun.Config(agentrun.Where{DataDir: dir, API: api, Broker: b.stack.KafkaBrokers, Topic: b.topic, Group: group,
		ESURL: esURL, Index: index}, c.set)
	confPath := filepath.Join(dir, "shipper.hcl")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return r, err
	}
	cfg, err := agent.ParseConfig(confPath, []byte(conf))
	if err != nil {
		return r, fmt.Errorf("the agent's config: %w", err)
	}
	r.Settings = agentrun.Effective(cfg)

	logPath := filepath.Join(dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer logFile.Close()
	bin := b.o.agentBin
	if c.baseline {
		bin = b.o.baselineBin
	}
	cmd := command(context.Background(), c.pinned, bin, "run", "-config", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = agentrun.Env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with outputbench
	m := b.around()
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		r.Agent.Exit = agentrun.Stop(cmd, exited)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.WholeCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			r.MaxRSS = ru.Maxrss << 10
		}
		m.finish(&r)
		logFile.Close()
		r.Agent.Problems = agentlog.Count(logPath, func(level string) bool { return level == "WARN" || level == "ERROR" })
	}
	defer stop()

	client := &http.Client{Timeout: 2 * time.Second}
	statusURL := "http://" + api + "/api/status"
	deadline := time.NewTimer(b.o.runTimeout)
	defer deadline.Stop()
	var end cputime.Mark
	if sink != nil {
		select {
		case <-sink.Done():
			if end, err = cputime.Process(cmd.Process.Pid); err != nil {
				return r, err
			}
		case err := <-exited:
			exited <- err
			return r, fmt.Errorf("the agent exited before the last document: %v; log: %s", err, agentrun.Tail(logPath, 10))
		case <-deadline.C:
			return r, fmt.Errorf("%d of %d documents answered after %s; log: %s", sink.Stats().Created, total, b.o.runTimeout, agentrun.Tail(logPath, 10))
		case <-ctx.Done():
			return r, ctx.Err()
		}
		st := sink.Stats()
		r.Docs, r.Bytes = st.Created, st.SourceBytes
		r.First, r.Last, r.P10, r.P90 = st.First.Sub(started), st.Last.Sub(started), st.P10.Sub(started), st.P90.Sub(started)
		r.Sink = sinkFigures{Requests: st.Requests, Gzipped: st.Gzipped, WireBytes: st.WireBytes, BodyBytes: st.BodyBytes,
			SourceBytes: st.SourceBytes, Repeated: st.Repeated}
	} else {
		tick := time.NewTicker(b.o.poll)
		defer tick.Stop()
		var samples int
		var inFlight, limit float64
		for done := false; !done; {
			select {
			case err := <-exited:
				exited <- err
				return r, fmt.Errorf("the agent exited before the last document: %v; log: %s", err, agentrun.Tail(logPath, 10))
			case <-deadline.C:
				return r, fmt.Errorf("%d of %d documents indexed after %s; log: %s", r.Docs, total, b.o.runTimeout, agentrun.Tail(logPath, 10))
			case <-ctx.Done():
				return r, ctx.Err()
			case <-tick.C:
			}
			st, err := agentrun.ReadStatus(client, statusURL)
			if err != nil {
				continue // not up yet
			}
			now := time.Now()
			n := st.Output.Indexed + st.Output.Duplicates
			if n > 0 && r.First == 0 {
				r.First = now.Sub(started)
			}
			if n >= total/10 && r.P10 == 0 {
				r.P10 = now.Sub(started)
			}
			if n >= total*9/10 && r.P90 == 0 {
				r.P90 = now.Sub(started)
			}
			if n > 0 && n < total {
				samples++
				inFlight += float64(st.Output.Window.InFlight)
				limit += st.Output.Window.Limit
			}
			if n >= total {
				if end, err = cputime.Process(cmd.Process.Pid); err != nil {
					return r, err
				}
				r.Docs, r.Last, done = n, now.Sub(started), true
			}
		}
		if samples > 0 {
			r.Agent.MeanInFlight, r.Agent.MeanLimit = inFlight/float64(samples), limit/float64(samples)
		}
		r.Bytes = b.prep.SourceBytes
	}
	r.User, r.Sys = end.User, end.Sys
	if st, err := agentrun.ReadStatus(client, statusURL); err == nil {
		o := st.Output
		r.Agent.Indexed, r.Agent.Duplicates, r.Agent.Retries, r.Agent.DeadLettered = o.Indexed, o.Duplicates, o.Retries, o.DeadLettered
		r.Agent.Window = windowFigures{Limit: o.Window.Limit, Max: o.Window.Max, Cuts: o.Window.Cuts, Growths: o.Window.Growths}
		r.Agent.BulkLimit = o.BulkLimit
		for _, n := range o.Nodes {
			r.Agent.Hedges += n.Hedges
			r.Agent.Stalls += n.Stalls
		}
	}
	stop()
	if sink == nil {
		n, err := b.es.RefreshedCount(ctx, index)
		r.Counted = n
		if err != nil {
			return r, err
		}
		if n != total {
			return r, fmt.Errorf("index %s holds %d documents after the agent counted %d indexed; want %d", index, n, r.Docs, total)
		}
	}
	return r, nil
}
