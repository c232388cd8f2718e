package cputime

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// Around counts this process's CPU and a server session's: here a child of
// this test binary, started as a session leader, that burns CPU while it is
// measured. (The test's own session would do on a workstation, but under a
// PID namespace whose session leader lives outside it getsid answers 0,
// which Around takes as "no session".)
func TestAround(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestSpinChild$")
	cmd.Env = append(os.Environ(), "CPUTIME_SPIN_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { in.Close(); _ = cmd.Wait() }()

	a := StartAround(cmd.Process.Pid, 0)
	spin(50 * time.Millisecond)
	// The child says when it has burnt its share, then waits for stdin to
	// close, so it is still alive (and counted) when Finish reads it.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "spun\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	sp := a.Finish()
	// The child spins 200 ms of its own CPU; at most its start-up (a few
	// tens of ms) falls before StartAround.
	if sp.Self < 50*time.Millisecond || sp.ES < 100*time.Millisecond || sp.Kafka != 0 {
		t.Errorf("spent %+v: want Self ≥ 50ms (this process), ES ≥ 100ms (the child's session), Kafka 0 (none given)", sp)
	}
	if sp.MachineTotal > 0 && sp.MachineBusy > sp.MachineTotal {
		t.Errorf("machine busy %s of %s", sp.MachineBusy, sp.MachineTotal)
	}
}

// TestSpinChild is TestAround's child; run directly it does nothing.
func TestSpinChild(t *testing.T) {
	if os.Getenv("CPUTIME_SPIN_CHILD") != "1" {
		return
	}
	spin(200 * time.Millisecond)
	fmt.Println("spun")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// spin burns d of this process's CPU by getrusage's count, however busy the
// machine is.
func spin(d time.Duration) {
	start := Self()
	for x := 0; Self().User+Self().Sys-start.User-start.Sys < d; x++ {
		_ = x * x
	}
}
