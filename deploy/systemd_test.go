package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
)

var unitPath = filepath.Join(root, "deploy", "systemd", "shipper.service")

func readUnit(t *testing.T) (unit, string) {
	t.Helper()
	src, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(string(src))
	if err != nil {
		t.Fatalf("%s: %v", rel(unitPath), err)
	}
	return u, string(src)
}

// systemd-analyze verify accepts the unit without a word. It reports an
// unknown or misspelt setting as a warning and still exits 0, so any output
// fails this test; the second half shows it does report one.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not on PATH (Debian: apt-get install systemd): the unit was not verified")
	}
	_, src := readUnit(t)
	// verify also checks that every Exec* command exists; the unit names
	// the installed binary, which this machine need not have. The test
	// binary stands in: what is verified is the unit, not the agent.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := installedBinary(t)
	if n := strings.Count(src, bin+" "); n != 2 {
		t.Fatalf("%s: want %s in ExecStartPre and ExecStart, found %d times", rel(unitPath), bin, n)
	}
	verify := func(text string) (string, error) {
		dir := t.TempDir()
		path := filepath.Join(dir, "shipper.service") // verify names the unit after its file
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", path).CombinedOutput()
		return string(bytes.TrimSpace(out)), err
	}
	text := strings.ReplaceAll(src, bin+" ", exe+" ")
	if out, err := verify(text); err != nil || out != "" {
		t.Errorf("systemd-analyze verify %s (exit: %v):\n%s", rel(unitPath), err, out)
	}

	bad := strings.Replace(text, "ProtectSystem=strict", "ProtectSystem=strict\nProtectSytem=strict", 1)
	if bad == text {
		t.Fatal("the unit no longer has ProtectSystem=strict to misspell: update this test")
	}
	if out, err := verify(bad); err == nil && out == "" {
		t.Error("systemd-analyze verify said nothing about a misspelt setting (ProtectSytem=): this test could not catch one")
	}
}

// installedBinary is where `make install` puts the agent.
func installedBinary(t *testing.T) string {
	t.Helper()
	for _, line := range makeDryRun(t, "install") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "install" && strings.HasSuffix(f[len(f)-1], "/shipper") {
			return f[len(f)-1]
		}
	}
	t.Fatal("make -n install printed no install command for the binary")
	return ""
}

// The unit runs the binary where `make install` and the image put it,
// with the configuration the image's CMD names.
func TestBinaryPathsAgree(t *testing.T) {
	u, _ := readUnit(t)
	bin := installedBinary(t)
	img := readDockerfile(t)
	if img.binary != bin {
		t.Errorf("%s: the image's binary is %s, `make install`'s %s", rel(dockerfilePath), img.binary, bin)
	}
	if len(img.cmd) != 3 {
		t.Fatalf("%s: CMD %q, want [run -config FILE]", rel(dockerfilePath), img.cmd)
	}
	config := img.cmd[2]
	for _, c := range []struct {
		key  string
		want []string
	}{
		{"ExecStartPre", []string{bin, "validate", "-config", config}},
		{"ExecStart", []string{bin, "run", "-config", config}},
	} {
		got, _ := u.last("Service", c.key)
		if !slices.Equal(strings.Fields(got), c.want) {
			t.Errorf("%s: %s=%s, want %s", rel(unitPath), c.key, got, strings.Join(c.want, " "))
		}
	}
}

// The unit's stop timeout, memory ceiling and state directory fit the
// agent run with config.example.hcl (what the install notes start from).
func TestSystemdUnitFitsConfig(t *testing.T) {
	u, _ := readUnit(t)
	cfg := exampleConfig(t)
	f := rel(unitPath)

	stop, ok := u.last("Service", "TimeoutStopSec")
	if !ok {
		t.Errorf("%s: TimeoutStopSec unset (the manager's default is 90s, but say it)", f)
	} else if d, err := parseTimespan(stop); err != nil {
		t.Errorf("%s: TimeoutStopSec: %v", f, err)
	} else if want := cfg.ShutdownTimeout + closeMargin*time.Second; d < want {
		t.Errorf("%s: TimeoutStopSec=%s, want at least %s: config.example.hcl's shutdown_timeout %s + %ds",
			f, stop, want, cfg.ShutdownTimeout, closeMargin)
	}

	soft := cfg.SoftMemoryLimit()
	if mm, ok := u.last("Service", "MemoryMax"); !ok {
		t.Errorf("%s: MemoryMax unset", f)
	} else if n, err := parseSystemdBytes(mm); err != nil {
		t.Errorf("%s: MemoryMax: %v", f, err)
	} else if n < soft+memoryHeadroom {
		t.Errorf("%s: MemoryMax=%s (%s), want at least %s: config.example.hcl's soft memory limit %s (the agent sets it) + %s",
			f, mm, mib(n), mib(soft+memoryHeadroom), shipper.ByteSize(soft), mib(memoryHeadroom))
	}
	for _, e := range u["Service"]["Environment"] {
		if strings.HasPrefix(e, "GOMEMLIMIT=") {
			t.Errorf("%s: Environment=%s: leave the soft limit to the agent, which derives it from the configuration MemoryMax is sized for", f, e)
		}
		if suspectName.MatchString(e) {
			t.Errorf("%s: Environment=%s: credentials go in the EnvironmentFile (0600), not in the unit anyone can read", f, e)
		}
	}

	// ProtectSystem=strict leaves only the state directory writable: the
	// buffer must be in it.
	state, _ := u.last("Service", "StateDirectory")
	if want := "/var/lib/" + state; state == "" || cfg.DataDir != want {
		t.Errorf("%s: StateDirectory=%s, but config.example.hcl's data_dir is %q: under ProtectSystem=strict the agent could not write its buffer",
			f, state, cfg.DataDir)
	}

	// What issue 10 asks of the unit, and what makes it safe to run.
	for key, want := range map[string]string{
		"Restart":                 "on-failure",
		"KillSignal":              "SIGTERM",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"DynamicUser":             "yes",
		"CapabilityBoundingSet":   "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"EnvironmentFile":         "-/etc/shipper/shipper.env",
	} {
		if got, ok := u.last("Service", key); !ok || got != want {
			t.Errorf("%s: %s=%s (set: %v), want %s=%s", f, key, got, ok, key, want)
		}
	}
	// A Go panic exits with 2: preventing a restart on 2 would leave a
	// crashed agent down.
	if v, ok := u.last("Service", "RestartPreventExitStatus"); ok && strings.Contains(" "+v+" ", " 2 ") {
		t.Errorf("%s: RestartPreventExitStatus=%s keeps a panicked agent (exit 2) down", f, v)
	}
	if _, ok := u.last("Service", "User"); ok {
		t.Errorf("%s: User= with DynamicUser=yes: pick one", f)
	}
}

func TestParseTimespan(t *testing.T) {
	for in, want := range map[string]time.Duration{"45": 45 * time.Second, "45s": 45 * time.Second, "1min 30s": 90 * time.Second, "2m": 2 * time.Minute} {
		if got, err := parseTimespan(in); err != nil || got != want {
			t.Errorf("parseTimespan(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "infinity", "1.5s", "45 s x"} {
		if _, err := parseTimespan(in); err == nil {
			t.Errorf("parseTimespan(%q): no error", in)
		}
	}
	if _, err := parseSystemdBytes("20%"); err == nil {
		t.Error("parseSystemdBytes(20%): no error")
	}
	if n, err := parseSystemdBytes("256M"); err != nil || n != 256<<20 {
		t.Errorf("parseSystemdBytes(256M) = %d, %v", n, err)
	}
	if _, err := parseUnit("Key=value\n"); err == nil {
		t.Error("parseUnit: a key outside any section must be an error")
	}
}

// unit is a systemd unit file: section → key → values in order (a key may
// repeat).
type unit map[string]map[string][]string

func parseUnit(src string) (unit, error) {
	u := unit{}
	section := ""
	var pending string
	for i, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if pending != "" {
			line, pending = pending+" "+line, ""
		}
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			pending = strings.TrimSuffix(line, "\\")
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: want key=value in a section: %q", i+1, line)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	return u, nil
}

// last is a setting's effective value: the last assignment wins.
func (u unit) last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

var timespanPart = regexp.MustCompile(`^(\d+)\s*(ms|s|sec|m|min|h)?$`)

// parseTimespan reads the systemd time spans this unit may use: "45",
// "45s", "1min 30s"; seconds when no unit is given.
func parseTimespan(s string) (time.Duration, error) {
	var total time.Duration
	units := map[string]time.Duration{"": time.Second, "ms": time.Millisecond, "s": time.Second, "sec": time.Second,
		"m": time.Minute, "min": time.Minute, "h": time.Hour}
	for _, part := range strings.Fields(s) {
		m := timespanPart.FindStringSubmatch(part)
		if m == nil {
			return 0, fmt.Errorf("time span %q: this test reads only whole numbers with ms, s, min or h", s)
		}
		n, _ := strconv.Atoi(m[1])
		total += time.Duration(n) * units[m[2]]
	}
	if total == 0 {
		return 0, fmt.Errorf("time span %q: empty or zero (systemd: wait for ever, or the default)", s)
	}
	return total, nil
}

// parseSystemdBytes reads a size as systemd does for MemoryMax: a number
// of bytes with an optional K, M, G or T suffix, powers of 1024.
func parseSystemdBytes(s string) (int64, error) {
	mult := map[byte]int64{'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
	m, num := int64(1), s
	if s != "" {
		if f, ok := mult[s[len(s)-1]]; ok {
			m, num = f, s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want bytes with an optional K, M, G or T (not a percentage or infinity: the agent needs a fixed ceiling)", s)
	}
	return n * m, nil
}
