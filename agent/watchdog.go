package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// workerGroup runs the delivery workers in generations: the pipeline
// watchdog replaces a generation that stopped making progress.
type workerGroup struct {
	d *deliverer
	n int

	mu     sync.Mutex
	cancel context.CancelFunc
	gen    chan struct{}  // closed when the current generation's workers all returned
	wg     sync.WaitGroup // the workers of every generation
}

// start starts a generation of n workers.
func (g *workerGroup) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	g.mu.Lock()
	g.cancel, g.gen = cancel, done
	g.mu.Unlock()
	var gen sync.WaitGroup
	for range g.n {
		g.wg.Add(1)
		gen.Add(1)
		go func() {
			defer g.wg.Done()
			defer gen.Done()
			g.d.run(ctx)
		}()
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		gen.Wait()
		close(done)
	}()
}

// started reports whether a generation was started.
func (g *workerGroup) started() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cancel != nil
}

// restart cancels the current generation, without waiting for it (a wedged
// worker may never return), and starts a new one. The channel it returns is
// closed once the cancelled generation's workers all returned.
func (g *workerGroup) restart() <-chan struct{} {
	g.mu.Lock()
	cancel, prev := g.cancel, g.gen
	g.mu.Unlock()
	cancel()
	g.start()
	return prev
}

// stop cancels the workers and waits for them until the deadline; it
// reports whether they all returned.
func (g *workerGroup) stop(deadline time.Time) bool {
	g.mu.Lock()
	if g.cancel != nil { // nil: never started
		g.cancel()
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// pipelineWatchdog notices a delivery pipeline that stopped: chunks wait,
// nodes look alive, and no bulk request has returned for
// pipeline_stall_timeout. Requests are bounded by request_timeout and
// backoffs by retry_max_backoff, so only a wedge (a deadlock, a library
// that ignores its context) gets there. It restarts the workers once; if
// that does not help within another timeout, it reports the pipeline
// wedged on /api/health so that an orchestrator restarts the process: the
// disk buffer makes that safe.
type pipelineWatchdog struct {
	timeout      time.Duration
	lastProgress func() time.Time // the last bulk request that returned
	waiting      func() bool      // chunks wait and a node is alive
	restart      func()
	log          *slog.Logger

	restarted time.Time // zero unless a restart has not yet helped
	wedged    atomic.Pointer[string]
}

// check looks at the pipeline once.
func (w *pipelineWatchdog) check(now time.Time) {
	last := w.lastProgress()
	stalled := now.Sub(last) >= w.timeout && w.waiting()
	switch {
	case !stalled:
		if !w.restarted.IsZero() && last.After(w.restarted) {
			if w.wedged.Swap(nil) != nil {
				w.log.Info("delivery pipeline moving again")
			}
			w.restarted = time.Time{}
		}
	case w.restarted.IsZero():
		w.log.Error("delivery pipeline stalled: chunks wait, nodes look alive, and no bulk request returned; restarting the delivery workers",
			"for", now.Sub(last).Round(time.Second).String(), "pipeline_stall_timeout", w.timeout.String())
		w.restarted = now
		w.restart()
	case now.Sub(w.restarted) >= w.timeout && w.wedged.Load() == nil:
		reason := fmt.Sprintf("delivery pipeline wedged: no bulk request returned for %s, even after restarting the workers; restart the process (undelivered data is on disk)",
			now.Sub(last).Round(time.Second))
		w.wedged.Store(&reason)
		w.log.Error(reason)
	}
}

// run checks the pipeline until ctx ends.
func (w *pipelineWatchdog) run(ctx context.Context) {
	t := time.NewTicker(min(w.timeout/4, 5*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.check(now)
		}
	}
}

// reason says why the pipeline is wedged, or "".
func (w *pipelineWatchdog) reason() string {
	if r := w.wedged.Load(); r != nil {
		return *r
	}
	return ""
}
