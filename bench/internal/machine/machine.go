// Package machine describes the run a benchmark figure comes from: when,
// which commit, which Go, which CPU and memory, and which disk a directory
// lives on. Every results file starts with it.
package machine

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Info is the description of one run.
type Info struct {
	Date      time.Time
	Commit    string // git HEAD, "+uncommitted" when the tree differs from it
	GoVersion string
	CPU       string
	Cores     int
	MemTotal  int64  // bytes
	DataDir   string // where the benchmark wrote
	Disk      string // device, filesystem and mount point of DataDir
	SameDisk  bool   // DataDir is on the same device as the repository
	Load      string // load averages when the run started
}

// Describe gathers Info for a run that writes under dataDir, from the
// repository in the current directory.
func Describe(dataDir string) Info {
	in := Info{
		Date:      time.Now().UTC(),
		Commit:    commit(),
		GoVersion: runtime.Version(),
		CPU:       cpuModel(),
		Cores:     runtime.NumCPU(),
		MemTotal:  memTotal(),
		DataDir:   dataDir,
		Disk:      disk(dataDir),
	}
	in.SameDisk = sameDevice(dataDir, ".")
	in.Load = Load()
	return in
}

// Write prints the description as "# key: value" lines.
func (in Info) Write(w io.Writer) {
	fmt.Fprintf(w, "# date: %s\n", in.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "# commit: %s\n", in.Commit)
	fmt.Fprintf(w, "# go: %s\n", in.GoVersion)
	fmt.Fprintf(w, "# cpu: %s, %d cores\n", in.CPU, in.Cores)
	fmt.Fprintf(w, "# memory: %.1f GiB\n", float64(in.MemTotal)/(1<<30))
	same := "no"
	if in.SameDisk {
		same = "yes"
	}
	fmt.Fprintf(w, "# data dir: %s on %s (same device as the repository: %s)\n", in.DataDir, in.Disk, same)
	fmt.Fprintf(w, "# load average (1, 5, 15 min): %s at the start, %s at the end\n", in.Load, Load())
}

// Load returns the 1, 5 and 15 minute load averages: how busy the shared
// machine was.
func Load() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func commit() string {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	c := strings.TrimSpace(string(out))
	// Name the changed files, so a reader can tell a benchmark's own
	// Makefile edit from changes to the code it measured. Results files
	// are left out: make bench writes them while it runs.
	st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results").Output()
	if err != nil || len(st) == 0 {
		return c
	}
	var files []string
	for _, line := range strings.Split(strings.TrimRight(string(st), "\n"), "\n") {
		if len(line) > 3 {
			files = append(files, line[3:])
		}
	}
	if len(files) > 8 {
		files = append(files[:8], fmt.Sprintf("and %d more", len(files)-8))
	}
	return c + " +uncommitted changes to " + strings.Join(files, ", ")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// disk finds the mount holding dir in /proc/self/mountinfo (the entry with
// dir's device number) and describes it.
func disk(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	want := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "device " + want
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := indexOf(fields, "-")
		if len(fields) < 5 || sep < 0 || len(fields) < sep+3 || fields[2] != want {
			continue
		}
		src, fstype := fields[sep+2], fields[sep+1]
		return fmt.Sprintf("%s (%s, mounted at %s%s)", src, fstype, fields[4], queue(src))
	}
	return "device " + want
}

// queue describes the block device's queue: the kernel's rotational flag
// (meaningless for most virtual disks) and its readahead, which decides how
// much a page fault on an mmap'd file reads.
func queue(src string) string {
	dir := "/sys/block/" + strings.TrimPrefix(src, "/dev/") + "/queue/"
	var s string
	if b, err := os.ReadFile(dir + "rotational"); err == nil {
		s += ", rotational=" + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(dir + "read_ahead_kb"); err == nil {
		s += ", read_ahead_kb=" + strings.TrimSpace(string(b))
	}
	return s
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func sameDevice(a, b string) bool {
	var sa, sb syscall.Stat_t
	return syscall.Stat(a, &sa) == nil && syscall.Stat(b, &sb) == nil && sa.Dev == sb.Dev
}

// Command is the command line that reproduces this run of the program in
// ./bench/cmd/<name>, with the arguments it was given.
func Command(name string) string {
	cmd := "go run ./bench/cmd/" + name
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"$") {
			a = strconv.Quote(a)
		}
		cmd += " " + a
	}
	return cmd
}
