package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/agent"
	"github.com/shipper-agent/shipper/bench/internal/agentlog"
	"github.com/shipper-agent/shipper/bench/internal/bulksink"
	"github.com/shipper-agent/shipper/bench/internal/cputime"
)

// agentConfig is the agent's whole configuration file: where things are,
// and the settings the contender changes; everything else at its default.
func agentConfig(dir, api, broker, topic, group, esURL, index string, s agentSettings) string {
	var buf, es strings.Builder
	if s.chunkSize != "" {
		fmt.Fprintf(&buf, "  chunk_size = %q\n", s.chunkSize)
	}
	if s.maxBulkBytes != "" {
		fmt.Fprintf(&es, "  max_bulk_bytes = %q\n", s.maxBulkBytes)
	}
	if s.compression != "" {
		fmt.Fprintf(&es, "  compression = %q\n", s.compression)
	}
	if s.adaptive != "" {
		fmt.Fprintf(&es, "  adaptive_concurrency = %s\n", s.adaptive)
	}
	if s.maxInFlight > 0 {
		fmt.Fprintf(&es, "  max_in_flight = %d\n", s.maxInFlight)
	}
	return fmt.Sprintf(`data_dir = %q
shutdown_timeout = "10s"
log {
  level  = "info"
  format = "json"
}
api {
  address = %q
}
kafka {
  brokers      = [%q]
  topics       = [%q]
  group_id     = %q
  start_offset = "earliest"
}
buffer {
%s}
elasticsearch {
  urls  = [%q]
  index = %q
%s}
`, dir, api, broker, topic, group, buf.String(), esURL, index, es.String())
}

// effective describes the settings the agent ran with, as it parsed them.
func effective(cfg agent.Config) string {
	e := cfg.Elasticsearch
	return fmt.Sprintf("chunk_size %s, max_bulk_bytes %s, compression %s, max_in_flight %d, adaptive_concurrency %v",
		cfg.Buffer.ChunkSize, e.MaxBulkBytes, e.Compression, e.MaxInFlight, e.AdaptiveConcurrency)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

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
		defer b.es.delete(index)
		esURL = b.stack.ESURL
	}
	port, err := freePort()
	if err != nil {
		return r, err
	}
	api := fmt.Sprintf("127.0.0.1:%d", port)
	group := fmt.Sprintf("%s-agent-%d-%d", b.topic, round, time.Now().UnixNano())
	conf := agentConfig(dir, api, b.stack.KafkaBrokers, b.topic, group, esURL, index, c.set)
	confPath := filepath.Join(dir, "shipper.hcl")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return r, err
	}
	cfg, err := agent.ParseConfig(confPath, []byte(conf))
	if err != nil {
		return r, fmt.Errorf("the agent's config: %w", err)
	}
	r.Settings = effective(cfg)

	logPath := filepath.Join(dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer logFile.Close()
	cmd := command(context.Background(), c.pinned, b.o.agentBin, "run", "-config", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The agent sets its own soft memory limit unless GOMEMLIMIT is set.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMEMLIMIT=") })
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
		r.Agent.Exit = stopAgent(cmd, exited)
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
			return r, fmt.Errorf("the agent exited before the last document: %v; log: %s", err, tail(logPath, 10))
		case <-deadline.C:
			return r, fmt.Errorf("%d of %d documents answered after %s; log: %s", sink.Stats().Created, total, b.o.runTimeout, tail(logPath, 10))
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
				return r, fmt.Errorf("the agent exited before the last document: %v; log: %s", err, tail(logPath, 10))
			case <-deadline.C:
				return r, fmt.Errorf("%d of %d documents indexed after %s; log: %s", r.Docs, total, b.o.runTimeout, tail(logPath, 10))
			case <-ctx.Done():
				return r, ctx.Err()
			case <-tick.C:
			}
			st, err := readStatus(client, statusURL)
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
	if st, err := readStatus(client, statusURL); err == nil {
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
		n, err := b.es.refreshedCount(ctx, index)
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

// status is the part of the agent's /api/status read here.
type status struct {
	Output struct {
		Indexed      int64 `json:"indexed"`
		Duplicates   int64 `json:"duplicates"`
		Retries      int64 `json:"retries"`
		DeadLettered int64 `json:"dead_lettered"`
		BulkLimit    int64 `json:"bulk_limit_bytes"`
		Window       struct {
			Limit    float64          `json:"limit"`
			Max      int              `json:"max"`
			InFlight int              `json:"in_flight"`
			Cuts     map[string]int64 `json:"cuts"`
			Growths  int64            `json:"growths"`
		} `json:"window"`
		Nodes []struct {
			Hedges int64 `json:"hedges"`
			Stalls int64 `json:"stalls"`
		} `json:"nodes"`
	} `json:"output"`
}

func readStatus(client *http.Client, url string) (status, error) {
	var st status
	res, err := client.Get(url)
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: %s", url, res.Status)
	}
	return st, json.NewDecoder(res.Body).Decode(&st)
}

// stopAgent sends SIGTERM and kills the agent if it has not stopped in
// 20 s (its shutdown_timeout is 10 s).
func stopAgent(cmd *exec.Cmd, exited chan error) string {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t0 := time.Now()
	select {
	case err := <-exited:
		if err != nil {
			return err.Error()
		}
		return "exit 0 after " + time.Since(t0).Round(time.Millisecond).String()
	case <-time.After(20 * time.Second):
	}
	_ = cmd.Process.Kill()
	<-exited
	return "killed after 20s without stopping"
}

// tail returns the last n lines of a file, joined.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
