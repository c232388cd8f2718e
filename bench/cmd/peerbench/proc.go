package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/agentrun"
)

// child is a contender's running process. Its memory is sampled from
// /proc/<pid>/status every sampleEvery until it is stopped.
type child struct {
	cmd     *exec.Cmd
	exited  chan error
	log     *os.File
	logPath string

	stopSampling chan struct{}
	sampling     sync.WaitGroup
	mu           sync.Mutex // guards the peaks
	peakRSS      int64      // VmRSS, bytes
	peakAnon     int64      // RssAnon, bytes
	samples      int

	stopped bool
	exit    string
	rusage  *syscall.Rusage
}

const sampleEvery = 100 * time.Millisecond

// startChild starts bin with args, its output to logPath; the child is
// killed if peerbench dies.
func startChild(bin string, args, env []string, dir, logPath string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan error, 1), log: f, logPath: logPath, stopSampling: make(chan struct{})}
	go func() { c.exited <- cmd.Wait() }()
	c.sampling.Add(1)
	go c.sample()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) sample() {
	defer c.sampling.Done()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	path := fmt.Sprintf("/proc/%d/status", c.pid())
	for {
		if rss, anon, err := readStatus(path); err == nil {
			c.mu.Lock()
			c.peakRSS, c.peakAnon = max(c.peakRSS, rss), max(c.peakAnon, anon)
			c.samples++
			c.mu.Unlock()
		}
		select {
		case <-c.stopSampling:
			return
		case <-t.C:
		}
	}
}

// readStatus reads VmRSS and RssAnon, in bytes, from a /proc/<pid>/status.
func readStatus(path string) (rss, anon int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "RssAnon") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("%s: %s:%s", path, k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			anon = n << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("%s: no VmRSS or RssAnon (a zombie?)", path)
	}
	return rss, anon, nil
}

// stop ends the child (SIGTERM, SIGKILL after 20 s), stops sampling, and
// keeps its rusage. Calling it again does nothing.
func (c *child) stop() {
	if c.stopped {
		return
	}
	c.stopped = true
	c.exit = agentrun.Stop(c.cmd, c.exited)
	close(c.stopSampling)
	c.sampling.Wait()
	c.log.Close()
	if ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		c.rusage = ru
	}
}

// peaks returns the sampled peaks of VmRSS and RssAnon and the number of
// samples.
func (c *child) peaks() (rss, anon int64, samples int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peakRSS, c.peakAnon, c.samples
}

// logSummary counts the child's log lines and returns the first one that
// reports an error, if any.
func logSummary(path string) (lines int, firstError string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err.Error()
	}
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		lines++
		if firstError == "" && isErrorLine(l) {
			firstError = l
		}
	}
	return lines, firstError
}

// isErrorLine says whether a log line of one of the contenders is at level
// error: shipper's JSON ("level":"ERROR"), Benthos's logfmt (level=error),
// Filebeat's text (a tab-separated ERROR).
func isErrorLine(l string) bool {
	return strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "level=error") || strings.Contains(l, "\tERROR\t")
}
