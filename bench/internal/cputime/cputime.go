// Package cputime reads how much CPU a benchmark contender spent: this
// process's own time (getrusage), or a child process's while it still runs
// (/proc/<pid>/stat: the same counters getrusage reports once it has been
// waited for).
package cputime

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Mark is a moment and the CPU time a process had spent by then, all its
// threads together.
type Mark struct {
	At        time.Time
	User, Sys time.Duration
}

// CPU is the user and system time from start to m.
func (m Mark) CPU(start Mark) (user, sys time.Duration) {
	return m.User - start.User, m.Sys - start.Sys
}

// Self returns the calling process's mark.
func Self() Mark {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return Mark{At: time.Now(), User: time.Duration(ru.Utime.Nano()), Sys: time.Duration(ru.Stime.Nano())}
}

// MaxRSS is the calling process's peak resident set, in bytes.
func MaxRSS() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss << 10 // KiB on Linux
}

// userHZ is the unit of the times in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture Go supports.
const userHZ = 100

// Process returns the mark of a running process from /proc/<pid>/stat
// (resolution 10 ms).
func Process(pid int) (Mark, error) {
	at := time.Now()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Mark{}, err
	}
	// pid (comm) state ppid ... : comm may hold spaces and parentheses,
	// so the fields are counted from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Mark{}, fmt.Errorf("/proc/%d/stat: %.80q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return Mark{}, fmt.Errorf("/proc/%d/stat: %d fields after the command", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return Mark{}, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	tick := time.Second / userHZ
	return Mark{At: at, User: time.Duration(ut) * tick, Sys: time.Duration(st) * tick}, nil
}

// Session returns the CPU time of every live process in the session sid
// (a server started as a session leader, with its children: the
// Elasticsearch launcher and its JVM), read from /proc. Processes that
// exited are not counted; At is when the scan started.
func Session(sid int) (Mark, error) {
	m := Mark{At: time.Now()}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return m, err
	}
	found := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 || f[3] != strconv.Itoa(sid) {
			continue
		}
		p, err := Process(pid)
		if err != nil {
			continue
		}
		m.User += p.User
		m.Sys += p.Sys
		found = true
	}
	if !found {
		return m, fmt.Errorf("no process in session %d", sid)
	}
	return m, nil
}

// Machine returns the whole machine's CPU time, all cores, from
// /proc/stat: busy (user, nice, system, irq, softirq, steal) and total
// (busy plus idle and iowait).
func Machine() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: %.80q", line)
	}
	tick := time.Second / userHZ
	for k := 1; k <= 8 && k < len(f); k++ { // user nice system idle iowait irq softirq steal
		v, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %.80q", line)
		}
		total += time.Duration(v) * tick
		if k != 4 && k != 5 {
			busy += time.Duration(v) * tick
		}
	}
	return busy, total, nil
}

// Around measures the CPU spent beside a contender while it runs: two
// server sessions (Elasticsearch's and Kafka's processes; a session id of 0
// or one that cannot be read is left out), this process, and the whole
// machine.
type Around struct {
	esSession, kafkaSession int
	es, kafka               Mark
	esOK, kafkaOK           bool
	self                    Mark
	busy, total             time.Duration
	machineOK               bool
}

// Spent is what Around.Finish measured since Start; ES and Kafka are 0 when
// their session could not be read, MachineTotal 0 when the machine's
// counters could not.
type Spent struct {
	ES, Kafka, Self           time.Duration
	MachineBusy, MachineTotal time.Duration
}

// StartAround marks the counters now.
func StartAround(esSession, kafkaSession int) *Around {
	a := &Around{esSession: esSession, kafkaSession: kafkaSession, self: Self()}
	var err error
	if esSession > 0 {
		a.es, err = Session(esSession)
		a.esOK = err == nil
	}
	if kafkaSession > 0 {
		a.kafka, err = Session(kafkaSession)
		a.kafkaOK = err == nil
	}
	a.busy, a.total, err = Machine()
	a.machineOK = err == nil
	return a
}

// Finish returns what was spent since StartAround.
func (a *Around) Finish() Spent {
	var sp Spent
	since := func(ok bool, sid int, start Mark) time.Duration {
		if !ok {
			return 0
		}
		m, err := Session(sid)
		if err != nil {
			return 0
		}
		u, s := m.CPU(start)
		return u + s
	}
	sp.ES = since(a.esOK, a.esSession, a.es)
	sp.Kafka = since(a.kafkaOK, a.kafkaSession, a.kafka)
	u, s := Self().CPU(a.self)
	sp.Self = u + s
	if busy, total, err := Machine(); err == nil && a.machineOK && total > a.total {
		sp.MachineBusy, sp.MachineTotal = busy-a.busy, total-a.total
	}
	return sp
}
