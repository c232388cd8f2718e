package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/shipper-agent/shipper/agent"
)

// root is the repository's root, seen from this package's directory (where
// go test runs it).
const root = ".."

// reportMemLimitEnv makes the test binary, started again by
// runtimeMemoryLimit, print the soft memory limit its runtime took from
// GOMEMLIMIT and exit.
const reportMemLimitEnv = "SHIPPER_DEPLOY_TEST_REPORT_MEMLIMIT"

func TestMain(m *testing.M) {
	if os.Getenv(reportMemLimitEnv) == "1" {
		fmt.Println(debug.SetMemoryLimit(-1))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runtimeMemoryLimit returns the soft memory limit the Go runtime sets
// from GOMEMLIMIT=value. The runtime parses it, not a copy of its parser
// here, so a value it would refuse (it stops the process at start) or
// read differently fails the test.
func runtimeMemoryLimit(t *testing.T, value string) (int64, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, reportMemLimitEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GOMEMLIMIT="+value, reportMemLimitEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("the Go runtime refused GOMEMLIMIT=%q: %v: %s", value, err, strings.TrimSpace(string(out)))
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading the runtime's limit: %v (output %q)", err, out)
	}
	return n, nil
}

// envCall finds the variables a configuration file reads with env().
var envCall = regexp.MustCompile(`env\(\s*"([^"]+)"`)

// parseConfig parses a configuration as the agent does, with exactly the
// variables in env set among those the file reads: whatever the machine
// running the test has in its environment (a KAFKA_BROKERS, say) is unset,
// so the result is what a host or pod with env alone would get, and a
// variable the file requires but env lacks fails the parse.
func parseConfig(t *testing.T, name string, src []byte, env map[string]string) (agent.Config, error) {
	t.Helper()
	for _, m := range envCall.FindAllSubmatch(src, -1) {
		v := string(m[1])
		if val, ok := env[v]; ok {
			t.Setenv(v, val)
		} else {
			t.Setenv(v, "") // restores the variable after the test
			os.Unsetenv(v)
		}
	}
	return agent.ParseConfig(name, src)
}

// exampleConfig is config.example.hcl as an agent with no environment
// variables set reads it: every env() at its default.
func exampleConfig(t *testing.T) agent.Config {
	t.Helper()
	path := filepath.Join(root, "config.example.hcl")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(t, "config.example.hcl", src, nil)
	if err != nil {
		t.Fatalf("config.example.hcl: %v", err)
	}
	return cfg
}

// Margins the deployment files must keep above the agent's figures.
const (
	// memoryHeadroom is the least a hard memory limit (the container's
	// limits.memory, the unit's MemoryMax) must exceed the Go soft limit
	// by. The soft limit bounds only memory the Go runtime manages, and
	// only softly: near it the collector runs more often, but garbage not
	// yet taken still counts; the kernel also charges the cgroup the pages
	// of badger's value-log files the agent reads and writes. 64 MiB is a
	// judgement, not a measurement under a cgroup limit: docs/benchmarks.md
	// measured peak RssAnon 12–16 MiB below the soft limit with no cgroup.
	memoryHeadroom = 64 << 20
	// closeMargin is the least the time a supervisor waits after SIGTERM
	// must exceed shutdown_timeout by: at that deadline the agent still
	// stops its API (up to 1s) and closes the buffer (badger writes its
	// memtable out and syncs).
	closeMargin = 15 // seconds
)

// rel names a file relative to the repository's root in messages.
func rel(path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
