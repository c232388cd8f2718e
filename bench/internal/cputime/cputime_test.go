package cputime

import (
	"os"

	"golang.org/x/sys/unix"
	"testing"
	"time"
)

// /proc/<pid>/stat and getrusage count the same time: reading this process
// both ways after burning some CPU must agree to within a few ticks.
func TestProcessAgreesWithSelf(t *testing.T) {
	total := func(m Mark) time.Duration { return m.User + m.Sys }
	// Spin until this process has used 200 ms of CPU by getrusage's
	// count, however busy the machine is (wall time would assume a core).
	start := total(Self())
	deadline := time.Now().Add(30 * time.Second)
	for x := 0; total(Self())-start < 200*time.Millisecond; x++ {
		_ = x * x
		if time.Now().After(deadline) {
			t.Fatalf("getrusage counted %s of CPU in 30 s of spinning", total(Self())-start)
		}
	}
	self := Self()
	p, err := Process(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	after := Self()
	if total(p) < total(self)-30*time.Millisecond || total(p) > total(after)+30*time.Millisecond {
		t.Errorf("/proc says %s, getrusage %s then %s", total(p), total(self), total(after))
	}
}

func TestSessionCountsThisProcess(t *testing.T) {
	sid, err := unix.Getsid(0)
	if err != nil {
		t.Skip(err)
	}
	m, err := Session(sid)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := Process(os.Getpid()); m.User+m.Sys < p.User+p.Sys {
		t.Errorf("session %d: %s, less than this process alone (%s)", sid, m.User+m.Sys, p.User+p.Sys)
	}
}

func TestMachine(t *testing.T) {
	busy, total, err := Machine()
	if err != nil {
		t.Fatal(err)
	}
	if busy <= 0 || total < busy {
		t.Errorf("busy %s of %s", busy, total)
	}
}

// Around counts this process's CPU, and a session's (this test's own) when
// given one; a session of 0 is left out.
func TestAround(t *testing.T) {
	sid, err := unix.Getsid(0)
	if err != nil {
		t.Skip(err)
	}
	a := StartAround(sid, 0)
	start := Self()
	for x := 0; Self().User+Self().Sys-start.User-start.Sys < 50*time.Millisecond; x++ {
		_ = x * x
	}
	sp := a.Finish()
	if sp.Self < 50*time.Millisecond || sp.ES < sp.Self-30*time.Millisecond || sp.Kafka != 0 {
		t.Errorf("spent %+v after 50 ms of CPU in this process, its session given as the first", sp)
	}
	if sp.MachineTotal > 0 && sp.MachineBusy > sp.MachineTotal {
		t.Errorf("machine busy %s of %s", sp.MachineBusy, sp.MachineTotal)
	}
}
