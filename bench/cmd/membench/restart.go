package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/agentrun"
	"github.com/shipper-agent/shipper/bench/internal/bulksink"
	"github.com/shipper-agent/shipper/bench/internal/figures"
)

// restartTrial is one restart of the agent over the backlog its run built:
// the same data dir and configuration, but Elasticsearch at a bulksink, and
// Kafka still reachable (the agent resumes consuming too, as a real restart
// would). Times are since just before the process was started (fork and
// exec included); 0 means it did not happen before the trial ended.
type restartTrial struct {
	after       string // how the agent before this one was stopped
	graceful    bool   // it was stopped with SIGTERM (and exited in time)
	dirBytes    int64  // the buffer directory's size on disk before the start
	diskBytes   int64  // buffer disk_bytes at the first /api/status answer
	apiUp       time.Duration
	firstBulk   time.Duration // the first bulk request arrived at the sink
	firstOK     time.Duration // the sink answered the first created document
	ready       time.Duration // /api/health/ready answered 200
	ended       time.Duration // when the agent was killed
	sent        bulksink.Stats
	problem     string
	logTail     []string
	readyReason string // the last 503's reason, when not ready at the end
}

// restartTimeout bounds one trial: opening the buffer and sending a bulk.
const restartTimeout = 3 * time.Minute

// readyGrace is how long the last trial of a limit goes on after the first
// delivery for /api/health/ready, when it was not ready yet: the earlier
// trials are killed at once to keep the backlog for the next. After a kill
// -9 the group keeps the dead member until kafka.session_timeout (30s by
// default) and the input's join waits for that; after two kills in a row,
// for both (about 60s measured).
const readyGrace = 90 * time.Second

// restartAgent runs one trial: it starts the agent with Elasticsearch at a
// new bulksink, polls its API every poll, and kills it (SIGKILL) once the
// sink answered its first bulk request, or (last trial only) once it is
// ready or readyGrace later. The agent is killed on every path.
func restartAgent(ctx context.Context, r *agentRun, n int, last bool, after string, graceful bool, agentBin string,
	progress func(string, ...any)) (t restartTrial, err error) {
	t.after, t.graceful = after, graceful
	t.dirBytes = dirSize(r.cfg.Buffer.Dir)
	sink, err := bulksink.Start(1) // Done: the first document was answered 201
	if err != nil {
		return t, err
	}
	defer sink.Close()
	conf := r.conf
	conf.esURL = sink.URL()
	confPath, _, err := conf.write()
	if err != nil {
		return t, err
	}
	logPath := filepath.Join(conf.dir, fmt.Sprintf("restart-%d.log", n))
	logFile, err := os.Create(logPath)
	if err != nil {
		return t, err
	}
	defer logFile.Close()
	progress("memory_limit %s: restart %d (after %s) over a buffer of %s on disk", r.limit, n, after, mib(t.dirBytes))

	cmd := exec.Command(agentBin, "run", "-config", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = agentrun.Env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return t, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
		t.ended = time.Since(t0)
		t.sent = sink.Stats()
		if !t.sent.Arrived.IsZero() {
			t.firstBulk = t.sent.Arrived.Sub(t0)
		}
		if !t.sent.First.IsZero() {
			t.firstOK = t.sent.First.Sub(t0)
		}
		if t.problem != "" {
			t.logTail = tail(logPath, 20)
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, restartTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	api := conf.api()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var delivered <-chan struct{} = sink.Done()
	var grace <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			t.problem = fmt.Sprintf("no bulk request answered within %s: %v", restartTimeout, ctx.Err())
			return t, errors.New(t.problem)
		case err := <-exited:
			exited <- err
			t.problem = "the agent exited: " + exitString(err)
			return t, errors.New(t.problem)
		case <-delivered:
			if !last || t.ready > 0 {
				return t, nil
			}
			delivered, grace = nil, time.After(readyGrace)
			progress("memory_limit %s: restart %d delivered; waiting up to %s for /api/health/ready", r.limit, n, readyGrace)
		case <-grace:
			return t, nil
		case <-tick.C:
		}
		if t.apiUp == 0 {
			if body, err := get(client, api+"/api/status"); err == nil {
				t.apiUp = time.Since(t0)
				var st struct {
					Buffer struct {
						DiskBytes int64 `json:"disk_bytes"`
					} `json:"buffer"`
				}
				if json.Unmarshal(body, &st) == nil {
					t.diskBytes = st.Buffer.DiskBytes
				}
			}
			continue
		}
		if t.ready == 0 {
			ok, reason := ready(client, api)
			if ok {
				t.ready, t.readyReason = time.Since(t0), ""
				if grace != nil {
					return t, nil
				}
			} else {
				t.readyReason = reason
			}
		}
	}
}

// ready asks /api/health/ready; reason is the 503's reason.
func ready(client *http.Client, api string) (bool, string) {
	res, err := client.Get(api + "/api/health/ready")
	if err != nil {
		return false, err.Error()
	}
	defer res.Body.Close()
	var h struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	_ = json.NewDecoder(res.Body).Decode(&h)
	if res.StatusCode == http.StatusOK {
		return true, ""
	}
	return false, h.Status + ": " + h.Reason
}

// restartTrials runs trials restarts over the backlog r built: the first
// after the run's graceful stop (SIGTERM), each later one after the kill -9
// that ended the one before.
func restartTrials(ctx context.Context, r *agentRun, trials int, agentBin string, progress func(string, ...any)) error {
	after, graceful := "SIGTERM: "+r.exit, r.exit == "exit 0"
	for n := 1; n <= trials; n++ {
		t, err := restartAgent(ctx, r, n, n == trials, after, graceful, agentBin, progress)
		r.restarts = append(r.restarts, t)
		if err != nil {
			return fmt.Errorf("restart %d: %w", n, err)
		}
		progress("memory_limit %s: restart %d: API after %s, first bulk after %s, first delivery after %s, ready after %s; %d bulk requests, %d documents delivered before the kill",
			r.limit, n, dur(t.apiUp), dur(t.firstBulk), dur(t.firstOK), dur(t.ready), t.sent.Requests, t.sent.Created)
		after, graceful = fmt.Sprintf("kill -9 of trial %d", n), false
	}
	return nil
}

// dur formats a trial's time; 0 is "-".
func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Millisecond).String()
}

// writeRestarts is the text report's section on the restart trials.
func writeRestarts(w io.Writer, runs []*agentRun) {
	fmt.Fprintln(w, "## restart to the first delivered bulk, over the backlog the first run of each limit built")
	fmt.Fprintln(w, "## (same data dir and configuration, Elasticsearch now a fake bulk endpoint (bench/internal/bulksink) that answers")
	fmt.Fprintln(w, "## at once, Kafka still reachable so the agent also resumes consuming; the first trial follows the run's graceful")
	fmt.Fprintln(w, "## stop (SIGTERM), each later one the kill -9 that ended the trial before, once the sink had answered its first")
	fmt.Fprintln(w, "## document, so the buffer still holds nearly the whole backlog. Times from just before fork/exec; ready is")
	fmt.Fprintf(w, "## polled every 25 ms, and only the last trial waits for it (up to %s) after its first delivery: after a kill -9\n", readyGrace)
	fmt.Fprintln(w, "## the consumer group keeps the dead member until kafka.session_timeout (30s), and ready waits for the input's join;")
	fmt.Fprintln(w, "## delivery from the buffer does not.)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "memory_limit\ttrial\tafter\tbuffer dir on disk\tbuffer disk_bytes\tAPI up\tfirst bulk\tfirst doc acknowledged\tready\tkilled at\tbulks / docs before kill\t")
	for _, r := range runs {
		for i, t := range r.restarts {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d / %d\t\n", r.limit, i+1, t.after, mib(t.dirBytes), mib(t.diskBytes),
				dur(t.apiUp), dur(t.firstBulk), dur(t.firstOK), readyString(t), dur(t.ended), t.sent.Requests, t.sent.Created)
		}
	}
	tw.Flush()
	for _, r := range runs {
		if len(r.restarts) == 0 {
			continue
		}
		var first, up []float64
		for _, t := range r.restarts {
			if t.firstBulk > 0 {
				first = append(first, t.firstBulk.Seconds())
			}
			if t.apiUp > 0 {
				up = append(up, t.apiUp.Seconds())
			}
		}
		fb, au := figures.Of(first), figures.Of(up)
		fmt.Fprintf(w, "memory_limit %s: restart to first bulk median %.2fs (min %.2fs, max %.2fs, %d trials); API up median %.2fs (min %.2fs, max %.2fs)\n",
			r.limit, fb.Median, fb.Min, fb.Max, fb.N, au.Median, au.Min, au.Max)
		for i, t := range r.restarts {
			if t.problem == "" {
				continue
			}
			fmt.Fprintf(w, "trial %d PROBLEM: %s; its last log lines:\n", i+1, t.problem)
			for _, l := range t.logTail {
				fmt.Fprintf(w, "  %s\n", truncate(l, 400))
			}
		}
	}
	fmt.Fprintln(w)
}

func readyString(t restartTrial) string {
	if t.ready > 0 {
		return dur(t.ready)
	}
	if t.readyReason == "" {
		return "-"
	}
	return "not yet (" + truncate(t.readyReason, 60) + ")"
}
