// Package agentrun is what the benchmarks that run the agent binary as a
// child process share: its configuration file, the settings a contender
// changes, its /api/status, and stopping it.
package agentrun

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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/agent"
)

// Settings are the agent's settings a contender changes; "" (or 0) leaves
// the default.
type Settings struct {
	ChunkSize    string // buffer.chunk_size
	MaxBulkBytes string // elasticsearch.max_bulk_bytes
	Compression  string // elasticsearch.compression
	Adaptive     string // elasticsearch.adaptive_concurrency: "true" or "false"
	MaxInFlight  int    // elasticsearch.max_in_flight
}

func (s Settings) String() string {
	var parts []string
	if s.ChunkSize != "" {
		parts = append(parts, "chunk_size "+s.ChunkSize)
	}
	if s.MaxBulkBytes != "" {
		parts = append(parts, "max_bulk_bytes "+s.MaxBulkBytes)
	}
	if s.Compression != "" {
		parts = append(parts, "compression "+s.Compression)
	}
	if s.Adaptive != "" {
		parts = append(parts, "adaptive_concurrency "+s.Adaptive)
	}
	if s.MaxInFlight > 0 {
		parts = append(parts, "max_in_flight "+strconv.Itoa(s.MaxInFlight))
	}
	if len(parts) == 0 {
		return "defaults"
	}
	return strings.Join(parts, ", ")
}

// Where is where a run's agent keeps its data and what it reads and writes.
type Where struct {
	DataDir string // data_dir
	API     string // api.address, host:port
	Broker  string // kafka.brokers
	Topic   string // kafka.topics, read from the earliest offset
	Group   string // kafka.group_id
	ESURL   string // elasticsearch.urls
	Index   string // elasticsearch.index
}

// Config is the agent's whole configuration file: where things are, and
// the settings the contender changes; everything else at its default.
func Config(w Where, s Settings) string {
	var buf, es strings.Builder
	if s.ChunkSize != "" {
		fmt.Fprintf(&buf, "  chunk_size = %q\n", s.ChunkSize)
	}
	if s.MaxBulkBytes != "" {
		fmt.Fprintf(&es, "  max_bulk_bytes = %q\n", s.MaxBulkBytes)
	}
	if s.Compression != "" {
		fmt.Fprintf(&es, "  compression = %q\n", s.Compression)
	}
	if s.Adaptive != "" {
		fmt.Fprintf(&es, "  adaptive_concurrency = %s\n", s.Adaptive)
	}
	if s.MaxInFlight > 0 {
		fmt.Fprintf(&es, "  max_in_flight = %d\n", s.MaxInFlight)
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
`, w.DataDir, w.API, w.Broker, w.Topic, w.Group, buf.String(), w.ESURL, w.Index, es.String())
}

// Effective describes the settings the agent ran with, as it parsed them.
func Effective(cfg agent.Config) string {
	e := cfg.Elasticsearch
	return fmt.Sprintf("chunk_size %s, max_bulk_bytes %s, compression %s, max_in_flight %d, adaptive_concurrency %v",
		cfg.Buffer.ChunkSize, e.MaxBulkBytes, e.Compression, e.MaxInFlight, e.AdaptiveConcurrency)
}

// Env is the environment the agent runs with: this process's without
// GOMEMLIMIT, since the agent sets its own soft memory limit unless
// GOMEMLIMIT is set.
func Env() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMEMLIMIT=") })
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Status is the part of the agent's /api/status the benchmarks read.
type Status struct {
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

// ReadStatus reads the agent's status at url (http://<api>/api/status).
func ReadStatus(client *http.Client, url string) (Status, error) {
	var st Status
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

// Stop sends SIGTERM to a started process whose Wait result arrives on
// exited, and kills it if it has not stopped in 20 s (the agent's
// shutdown_timeout is 10 s). It says how the process ended.
func Stop(cmd *exec.Cmd, exited chan error) string {
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

// Tail returns the last n lines of a file, joined.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Build compiles the agent of this checkout, static and -trimpath, into
// dir/shipper and returns that path; the go command's output goes to
// stderr, and logf says what runs. Run it from the repository's root.
func Build(ctx context.Context, dir string, logf func(format string, args ...any)) (string, error) {
	bin := filepath.Join(dir, "shipper")
	logf("building the agent: go build -trimpath -o %s ./cmd/shipper", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/shipper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build agent: %w", err)
	}
	return bin, nil
}
