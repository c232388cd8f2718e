//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

// agentOpts are the settings a test varies; the rest is fixed by
// agentConfig.
type agentOpts struct {
	Topic, Group, Index string
	DataDir             string
	ChunkSize           string // default "1MiB"
	MemoryLimit         string // default "64MiB"
	FlushInterval       string // default "200ms"
	Extra               string // more HCL inside the buffer block
	// BufferDir is buffer.dir; default <DataDir>/buffer.
	BufferDir string
	// SessionTimeout and HeartbeatInterval are the consumer-group timings
	// (kafka.session_timeout, kafka.heartbeat_interval); defaults "10s" and
	// the agent's default. The broker accepts sessions down to 1s
	// (stacktest sets group.min.session.timeout.ms).
	SessionTimeout, HeartbeatInterval string
	// ESURL is elasticsearch.urls, e.g. a proxy in front of the stack's
	// node; default stack.ESURL.
	ESURL string
	// RequestTimeout is elasticsearch.request_timeout; default the agent's.
	RequestTimeout string
	// ESExtra is more HCL inside the elasticsearch block, e.g.
	// `max_item_attempts = 3`.
	ESExtra string
	// TopExtra is more HCL at the top level, e.g. a dead_letter block or
	// `shutdown_timeout = "5s"` (which replaces the default 20s).
	TopExtra string
	// Env is added to the agent's environment ("ES_PASSWORD=...").
	Env []string
	// KafkaExtra is more HCL inside the kafka block, e.g.
	// `isolation_level = "read_uncommitted"` or a sasl block.
	KafkaExtra string
	// Brokers is kafka.brokers; default stack.KafkaBrokers.
	Brokers string
}

// agentProc is a shipper process under test.
type agentProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	api     string
	config  string // its configuration file
	logPath string
	done    chan error
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeConfig writes an agent configuration and returns its path and the
// API address it uses.
func writeConfig(t *testing.T, o agentOpts) (string, string) {
	t.Helper()
	if o.ChunkSize == "" {
		o.ChunkSize = "1MiB"
	}
	if o.FlushInterval == "" {
		o.FlushInterval = "200ms"
	}
	if o.MemoryLimit == "" {
		o.MemoryLimit = "64MiB"
	}
	if o.SessionTimeout == "" {
		o.SessionTimeout = "10s"
	}
	if o.ESURL == "" {
		o.ESURL = stack.ESURL
	}
	if o.Brokers == "" {
		o.Brokers = stack.KafkaBrokers
	}
	var kafkaExtra, bufferExtra, esExtra string
	if o.HeartbeatInterval != "" {
		kafkaExtra = fmt.Sprintf("heartbeat_interval = %q", o.HeartbeatInterval)
	}
	kafkaExtra += "\n  " + o.KafkaExtra
	if o.BufferDir != "" {
		bufferExtra = fmt.Sprintf("dir = %q", o.BufferDir)
	}
	if o.RequestTimeout != "" {
		esExtra = fmt.Sprintf("request_timeout = %q", o.RequestTimeout)
	}
	esExtra += "\n  " + o.ESExtra
	shutdown := `shutdown_timeout = "20s"`
	if strings.Contains(o.TopExtra, "shutdown_timeout") {
		shutdown = ""
	}
	api := freePort(t)
	cfg := fmt.Sprintf(`
data_dir = %q
%s
%s
log {
  level  = "info"
  format = "json"
}
api {
  address = %q
}
kafka {
  brokers         = [%q]
  topics          = [%q]
  group_id        = %q
  commit_interval = "500ms"
  session_timeout = %q
  %s
}
buffer {
  chunk_size     = %q
  flush_interval = %q
  memory_limit   = %q
  %s
  %s
}
elasticsearch {
  urls  = [%q]
  index = %q
  retry_initial_backoff = "200ms"
  retry_max_backoff     = "2s"
  %s
}
`, o.DataDir, shutdown, o.TopExtra, api, o.Brokers, o.Topic, o.Group, o.SessionTimeout, kafkaExtra,
		o.ChunkSize, o.FlushInterval, o.MemoryLimit, bufferExtra, o.Extra, o.ESURL, o.Index, esExtra)
	path := filepath.Join(o.DataDir, "shipper.hcl")
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, api
}

// startAgent runs the binary and waits until its API answers.
func startAgent(t *testing.T, o agentOpts) *agentProc {
	t.Helper()
	path, api := writeConfig(t, o)
	logPath := filepath.Join(o.DataDir, fmt.Sprintf("agent-%d.log", time.Now().UnixNano()))
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "-config", path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), o.Env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{t: t, cmd: cmd, api: "http://" + api, config: path, logPath: logPath, done: make(chan error, 1)}
	go func() { a.done <- cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-a.done
		}
		a.requireNoSecretLogged(o)
		if t.Failed() {
			a.dumpLog()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Status, not health: an agent that is up but held answers 503
		// on /api/health.
		res, err := http.Get(a.api + "/api/status")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return a
			}
		}
		select {
		case err := <-a.done:
			a.done <- err
			a.dumpLog()
			t.Fatalf("agent exited during start: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.dumpLog()
			t.Fatal("agent API did not answer within 30s")
		}
	}
}

// requireNoSecretLogged fails the test if any line the agent logged holds
// a secret: the stack's passwords and tokens, and every value the test
// gave the agent in a variable named like a secret. Every e2e test that
// starts an agent runs it.
func (a *agentProc) requireNoSecretLogged(o agentOpts) {
	secrets := []string{stacktest.SASLPassword, stacktest.SecureESPassword, stacktest.SecureServiceToken()}
	for _, kv := range o.Env {
		name, value, _ := strings.Cut(kv, "=")
		if len(value) >= 6 && regexp.MustCompile(`(?i)password|token|secret|key`).MatchString(name) {
			secrets = append(secrets, value)
		}
	}
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		a.t.Errorf("read the agent's log to check it for secrets: %v", err)
		return
	}
	for i, line := range strings.Split(string(b), "\n") {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				a.t.Errorf("the agent logged a secret (%s…) on line %d of %s", s[:3], i+1, a.logPath)
			}
		}
	}
}

func (a *agentProc) dumpLog() {
	b, _ := os.ReadFile(a.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	a.t.Logf("agent log %s (last %d lines):\n%s", a.logPath, len(lines), strings.Join(lines, "\n"))
}

// kill ends the agent with SIGKILL: no shutdown code runs.
func (a *agentProc) kill() {
	a.t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		a.t.Fatal(err)
	}
	<-a.done
}

// exited reports whether the agent process has ended, and how.
func (a *agentProc) exited() (bool, error) {
	select {
	case err := <-a.done:
		a.done <- err
		return true, err
	default:
		return false, nil
	}
}

// requireRunning fails the test if the agent process has ended: a fault
// must never make it exit, and a supervisor restarting it would hide a
// crash loop.
func (a *agentProc) requireRunning(when string) {
	a.t.Helper()
	if ended, err := a.exited(); ended {
		a.dumpLog()
		a.t.Fatalf("agent (pid %d) exited %s: %v", a.cmd.Process.Pid, when, err)
	}
}

// lastLogLine returns the agent's latest log line that contains substr.
func (a *agentProc) lastLogLine(substr string) string {
	b, _ := os.ReadFile(a.logPath)
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], substr) {
			return lines[i]
		}
	}
	return ""
}

// cli runs `shipper args...` against this agent's configuration (so the
// command finds its API) and returns its stdout; it fails the test unless
// the command exits 0.
func (a *agentProc) cli(args ...string) string {
	a.t.Helper()
	args = append(args, "-config", a.config)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		a.t.Fatalf("shipper %s: %v\nstdout: %.2000s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// stop sends SIGTERM and requires a clean exit within the timeout.
func (a *agentProc) stop(timeout time.Duration) {
	a.t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		a.t.Fatal(err)
	}
	select {
	case err := <-a.done:
		if err != nil {
			a.dumpLog()
			a.t.Fatalf("agent exited with %v after SIGTERM", err)
		}
	case <-time.After(timeout):
		a.dumpLog()
		a.t.Fatalf("agent still running %s after SIGTERM", timeout)
	}
}

// status returns the agent's /api/status document.
func (a *agentProc) status() map[string]any {
	a.t.Helper()
	var st map[string]any
	a.getJSON("GET", "/api/status", &st)
	return st
}

// agentStatus is the part of /api/status the fault tests read.
type agentStatus struct {
	Consumed int64             `json:"consumed_records"`
	Assigned []json.RawMessage `json:"assigned_partitions"`
	Buffer   struct {
		OpenRecords    int     `json:"open_records"`
		DiskChunks     int     `json:"disk_chunks"`
		DiskRecords    int64   `json:"disk_records"`
		InFlightChunks int     `json:"in_flight_chunks"`
		DiskBytes      int64   `json:"disk_bytes"`
		DiskUsage      int64   `json:"disk_usage"`
		FilesystemFree int64   `json:"filesystem_free"`
		Blocked        string  `json:"blocked"`
		BlockedSeconds float64 `json:"blocked_seconds"`
		GCRuns         int64   `json:"gc_runs"`
		GCReclaimed    int64   `json:"gc_reclaimed_bytes"`
		DeadLetters    int64   `json:"dead_letters"`
		Quarantined    int     `json:"quarantined"`
		SealedRecords  int     `json:"sealed_records"`
	} `json:"buffer"`
	Output struct {
		Indexed      int64 `json:"indexed"`
		Duplicates   int64 `json:"duplicates"`
		Skipped      int64 `json:"skipped"`
		DeadLettered int64 `json:"dead_lettered"`
		Retries      int64 `json:"retries"`
		Held         *struct {
			Reason    string `json:"reason"`
			Documents int    `json:"documents"`
		} `json:"held"`
		BulkLimit int64 `json:"bulk_limit_bytes"`
	} `json:"output"`
}

// stats returns the agent's /api/status document, typed.
func (a *agentProc) stats() agentStatus {
	a.t.Helper()
	var st agentStatus
	a.getJSON("GET", "/api/status", &st)
	return st
}

func (a *agentProc) getJSON(method, path string, v any) int {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.api+path, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, v); err != nil {
		a.t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
	return res.StatusCode
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func mustJSON(v any) *bytes.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// deadLetterLine is one line of `shipper dlq list -json`.
type deadLetterLine struct {
	ID        string   `json:"id"`
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Type      string   `json:"type"`
	Reasons   []string `json:"reasons"`
	Attempts  int      `json:"attempts"`
	Size      int      `json:"size"`
	Value     string   `json:"value"`
}

func (a *agentProc) deadLetters() []deadLetterLine {
	a.t.Helper()
	var out []deadLetterLine
	sc := bufio.NewScanner(strings.NewReader(a.cli("dlq", "list", "-json")))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var d deadLetterLine
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			a.t.Fatalf("dlq list -json: %v: %.300s", err, sc.Text())
		}
		out = append(out, d)
	}
	return out
}

// health returns the status code and body of GET /api/health.
func (a *agentProc) health() (int, string) {
	a.t.Helper()
	var body map[string]any
	code := a.getJSON("GET", "/api/health", &body)
	b, _ := json.Marshal(body)
	return code, string(b)
}

// heldHealth reads GET /api/health: its status code, whether it says
// delivery is held, and why.
func heldHealth(a *agentProc) (code int, held bool, reason, body string) {
	a.t.Helper()
	code, body = a.health()
	var h struct {
		Status string `json:"status"`
		Held   *struct {
			Reason string `json:"reason"`
		} `json:"held"`
	}
	json.Unmarshal([]byte(body), &h)
	if h.Held != nil {
		reason = h.Held.Reason
	}
	return code, h.Status == "held", reason, body
}
