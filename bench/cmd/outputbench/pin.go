package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The pinned contenders split the machine's two cores as if Elasticsearch
// and its client ran on hosts of their own: every thread of the
// Elasticsearch node on CPU 0, the client (the agent, or the loader) on
// CPU 1 (Kafka and everything else unpinned). On this machine the unpinned
// runs share both cores between the node and its client, so the client's
// CPU is taken from the node's; pinned, it is not, and the ratio shows what
// is left: the agent's pipeline against the loader's.
const (
	esCPU     = 0
	clientCPU = 1
)

// command returns the command that runs name with args, on clientCPU when
// pinned (taskset sets the affinity before exec, so every thread the
// program starts inherits it).
func command(ctx context.Context, pinned bool, name string, args ...string) *exec.Cmd {
	if pinned {
		return exec.CommandContext(ctx, "taskset", append([]string{"-c", strconv.Itoa(clientCPU), name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// pinSession sets the CPU affinity of every thread of every process in the
// session sid (the Elasticsearch node: its launcher and its JVM) to cpus,
// and returns how many threads it set. Threads started later inherit it.
func pinSession(sid int, cpus ...int) (int, error) {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || sessionOf(pid) != sid {
			continue
		}
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			continue // gone meanwhile
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				if err == unix.ESRCH {
					continue // the thread ended meanwhile
				}
				return n, fmt.Errorf("sched_setaffinity %d (pid %d): %w", tid, pid, err)
			}
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("no thread in session %d", sid)
	}
	return n, nil
}

// allCPUs lists every CPU of the machine: the affinity to restore.
func allCPUs() []int {
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

// sessionOf returns the session id of a process, or -1.
func sessionOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 4 {
		return -1
	}
	sid, err := strconv.Atoi(f[3])
	if err != nil {
		return -1
	}
	return sid
}
