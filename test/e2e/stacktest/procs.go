package stacktest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procInfo is what /proc/PID/stat says about a process.
type procInfo struct {
	State     byte   // R, S, D, Z, …
	Session   int    // session id
	StartTime uint64 // clock ticks after boot; with the pid it identifies the process
}

// readProc parses /proc/PID/stat. ok is false if the process does not exist.
func readProc(pid int) (procInfo, bool) {
	if pid <= 0 {
		return procInfo{}, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// The command name (field 2) is in parentheses and may contain anything;
	// the fields after the last ')' are space separated.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field N is f[N-3].
	if len(f) < 20 {
		return procInfo{}, false
	}
	sid, _ := strconv.Atoi(f[6-3])
	start, _ := strconv.ParseUint(f[22-3], 10, 64)
	return procInfo{State: f[0][0], Session: sid, StartTime: start}, true
}

// alive reports whether pid runs and is the process that was started at
// startTime (0: any). Zombies count as dead.
func alive(pid int, startTime uint64) bool {
	p, ok := readProc(pid)
	if !ok || p.State == 'Z' || p.State == 'X' {
		return false
	}
	return startTime == 0 || p.StartTime == startTime
}

// sessionMembers lists the live processes of session sid. Each server is
// started as the leader of its own session, so this finds its child JVMs too
// (Elasticsearch's launcher starts the server JVM as a child).
func sessionMembers(sid int) []int {
	if sid <= 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok && p.Session == sid && p.State != 'Z' && p.State != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// strayServers lists live java processes whose command line mentions the
// stack's dist directory: servers of this stack whose state file was lost.
// (Other processes that merely touch the directory, like `tail -f` on a log,
// are left alone.)
func strayServers(dir string) []int {
	needle := []byte(filepath.Join(dir, "dist") + "/")
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmd, needle) {
			continue
		}
		argv0, _, _ := bytes.Cut(cmd, []byte{0})
		if filepath.Base(string(argv0)) != "java" {
			continue
		}
		if alive(pid, 0) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopSession stops a server started as session leader pid: SIGTERM to its
// process group and every member of its session, then SIGKILL after grace.
// It reports whether nothing of the session is left.
func stopSession(ctx context.Context, pid int, startTime uint64, grace time.Duration) bool {
	if p, ok := readProc(pid); ok && startTime != 0 && p.StartTime != startTime {
		return true // the pid now belongs to an unrelated process
	}
	members := func() []int { return sessionMembers(pid) }
	signalAll := func(sig syscall.Signal) {
		syscall.Kill(-pid, sig)
		for _, p := range members() {
			syscall.Kill(p, sig)
		}
	}
	if len(members()) == 0 {
		return true
	}
	signalAll(syscall.SIGTERM)
	if waitGone(ctx, members, grace) {
		return true
	}
	signalAll(syscall.SIGKILL)
	return waitGone(context.Background(), members, 10*time.Second)
}

// killPids sends SIGTERM, then SIGKILL after grace, to the given processes.
func killPids(ctx context.Context, pids []int, grace time.Duration) {
	left := func() []int {
		var l []int
		for _, p := range pids {
			if alive(p, 0) {
				l = append(l, p)
			}
		}
		return l
	}
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGTERM)
	}
	if waitGone(ctx, left, grace) {
		return
	}
	for _, p := range left() {
		syscall.Kill(p, syscall.SIGKILL)
	}
	waitGone(context.Background(), left, 10*time.Second)
}

func waitGone(ctx context.Context, members func() []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if len(members()) == 0 {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
