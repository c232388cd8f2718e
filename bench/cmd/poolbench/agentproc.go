package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// agentProc is the real agent binary, run with a configuration that sets
// only what a scenario needs (where Kafka and Elasticsearch are, the
// topic, group and index, the data directory and the API address):
// everything else is at its default.
type agentProc struct {
	cmd     *exec.Cmd
	api     string
	logPath string
	exited  chan error
	started time.Time
}

// agentConfig is the whole configuration file: nothing else is set.
func agentConfig(dir, api, broker, topic, group, index string, urls []string) string {
	q := make([]string, len(urls))
	for i, u := range urls {
		q[i] = strconv.Quote(u)
	}
	return fmt.Sprintf(`data_dir = %q
log {
  level  = "info"
  format = "json"
}
api {
  address = %q
}
kafka {
  brokers  = [%q]
  topics   = [%q]
  group_id = %q
}
elasticsearch {
  urls  = [%s]
  index = %q
}
`, dir, api, broker, topic, group, strings.Join(q, ", "), index)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startAgent writes the configuration into a new directory under parent,
// starts the agent and waits for its API.
func startAgent(ctx context.Context, bin, parent, name, broker, topic, group, index string, urls []string) (*agentProc, error) {
	dir, err := os.MkdirTemp(parent, name+"-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	api := fmt.Sprintf("127.0.0.1:%d", port)
	conf := filepath.Join(dir, "shipper.hcl")
	if err := os.WriteFile(conf, []byte(agentConfig(dir, api, broker, topic, group, index, urls)), 0o644); err != nil {
		return nil, err
	}
	a := &agentProc{api: "http://" + api, logPath: filepath.Join(dir, "agent.log"), exited: make(chan error, 1)}
	logFile, err := os.Create(a.logPath)
	if err != nil {
		return nil, err
	}
	a.cmd = exec.Command(bin, "run", "-config", conf)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with poolbench
	if err := a.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	a.started = time.Now()
	go func() { a.exited <- a.cmd.Wait(); logFile.Close() }()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := client.Get(a.api + "/api/status")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return a, nil
			}
		}
		select {
		case err := <-a.exited:
			a.exited <- err
			return nil, fmt.Errorf("agent exited during start: %v; log: %s", err, strings.Join(tail(a.logPath, 10), "\n"))
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, errors.New("agent API did not answer within 30s")
		}
	}
}

// stop sends SIGTERM and kills the agent if it has not stopped in 10 s
// (its shutdown_timeout is 30 s; what it has not delivered stays on disk,
// which this benchmark does not need).
func (a *agentProc) stop() string {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.exited:
		a.exited <- err
		if err != nil {
			return err.Error()
		}
		return "exit 0"
	case <-time.After(10 * time.Second):
	}
	_ = a.cmd.Process.Kill()
	err := <-a.exited
	a.exited <- err
	return "killed after 10s without stopping"
}

// running reports whether the agent process is still running.
func (a *agentProc) running() bool {
	select {
	case err := <-a.exited:
		a.exited <- err
		return false
	default:
		return true
	}
}

// poolCounters reads the pool's counters from /api/metrics.
func (a *agentProc) poolCounters() map[string]float64 {
	out := map[string]float64{}
	res, err := (&http.Client{Timeout: 2 * time.Second}).Get(a.api + "/api/metrics")
	if err != nil {
		return out
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "shipper_output_") || strings.Contains(line, "node_up") || strings.Contains(line, "in_flight") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, _ := strconv.ParseFloat(val, 64)
		if strings.Contains(name, "stalls") || strings.Contains(name, "hedges") || strings.Contains(name, "deaths") ||
			strings.Contains(name, "resurrections") || strings.Contains(name, "reroutes") {
			out[strings.TrimPrefix(name, "shipper_output_")] = f
		}
	}
	return out
}

// indexed is what the agent reports delivered: documents indexed, and
// already indexed (409 on create).
func (a *agentProc) indexed() (int64, error) {
	res, err := (&http.Client{Timeout: 2 * time.Second}).Get(a.api + "/api/status")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var st struct {
		Output struct {
			Indexed    int64 `json:"indexed"`
			Duplicates int64 `json:"duplicates"`
		} `json:"output"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return 0, err
	}
	return st.Output.Indexed + st.Output.Duplicates, nil
}

// nodes reads the pool's node states from /api/status.
func (a *agentProc) nodes() []elasticsearch.NodeStatus {
	res, err := (&http.Client{Timeout: 2 * time.Second}).Get(a.api + "/api/status")
	if err != nil {
		return nil
	}
	defer res.Body.Close()
	var st struct {
		Output struct {
			Nodes []elasticsearch.NodeStatus `json:"nodes"`
		} `json:"output"`
	}
	if json.NewDecoder(res.Body).Decode(&st) != nil {
		return nil
	}
	return st.Output.Nodes
}

// poolLog keeps the counts of the pool's own log lines and of warnings
// and errors.
func poolLog(counts map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		if strings.HasPrefix(k, "WARN") || strings.HasPrefix(k, "ERROR") || strings.Contains(k, "hedging") ||
			strings.Contains(k, "back in rotation") {
			parts = append(parts, fmt.Sprintf("%d × %s", counts[k], k))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

func counterLine(c map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if c[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %g", k, c[k]))
		}
	}
	if len(parts) == 0 {
		return "all zero"
	}
	return strings.Join(parts, ", ")
}

func nodeLine(nodes []elasticsearch.NodeStatus) string {
	var parts []string
	for _, n := range nodes {
		s := fmt.Sprintf("%s %s (stalls %d, hedges %d, resurrections %d", n.URL, n.State, n.Stalls, n.Hedges, n.Resurrections)
		if n.Reason != "" {
			s += ", " + n.Reason
		}
		parts = append(parts, s+")")
	}
	return strings.Join(parts, "; ")
}

// tail returns the last n lines of a file.
func tail(path string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[max(0, len(lines)-n):]
}

// es talks to Elasticsearch directly, not through any proxy.
type es struct {
	url    string
	client *http.Client
}

// count returns the index's document count; 0 if it does not exist yet.
func (e es) count(ctx context.Context, index string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/"+index+"/_count", nil)
	if err != nil {
		return 0, err
	}
	res, err := e.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusNotFound {
		return 0, nil
	}
	var c struct {
		Count int64 `json:"count"`
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return 0, fmt.Errorf("_count %s: %s %s", index, res.Status, b)
	}
	err = json.NewDecoder(res.Body).Decode(&c)
	return c.Count, err
}

// countIDs returns how many of the documents with these ids the index
// holds (searchable, i.e. refreshed); 0 if it does not exist yet.
func (e es) countIDs(ctx context.Context, index string, ids []string) (int64, error) {
	body, err := json.Marshal(map[string]any{"query": map[string]any{"ids": map[string]any{"values": ids}}})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/"+index+"/_count", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := e.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusNotFound {
		return 0, nil
	}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return 0, fmt.Errorf("_count %s: %s %s", index, res.Status, b)
	}
	var c struct {
		Count int64 `json:"count"`
	}
	err = json.NewDecoder(res.Body).Decode(&c)
	return c.Count, err
}

// refreshedCount refreshes the index and counts it.
func (e es) refreshedCount(ctx context.Context, index string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/"+index+"/_refresh", nil)
	if err != nil {
		return 0, err
	}
	res, err := e.client.Do(req)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return e.count(ctx, index)
}

func (e es) deleteIndex(index string) {
	req, _ := http.NewRequest(http.MethodDelete, e.url+"/"+index+"?ignore_unavailable=true", nil)
	if res, err := e.client.Do(req); err == nil {
		res.Body.Close()
	}
}

// countSample is the index's document count at a moment.
type countSample struct {
	at time.Time
	n  int64
}

// pollCount samples the count every step until ctx ends.
func (e es) pollCount(ctx context.Context, index string, step time.Duration, out chan<- countSample) {
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n, err := e.count(rctx, index)
		cancel()
		if err == nil {
			select {
			case out <- countSample{time.Now(), n}:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
