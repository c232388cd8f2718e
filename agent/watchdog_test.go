package agent

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	es "github.com/shipper-agent/shipper/outputs/elasticsearch"
)

func TestPipelineWatchdog(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	const timeout = time.Minute
	progress, waiting, restarts := t0, true, 0
	w := &pipelineWatchdog{timeout: timeout, lastProgress: func() time.Time { return progress },
		waiting: func() bool { return waiting }, restart: func() { restarts++ }, log: slog.New(slog.DiscardHandler)}
	steps := []struct {
		at       time.Duration // after t0
		progress time.Duration // when the last bulk returned, after t0
		waiting  bool
		restarts int
		wedged   bool
	}{
		{30 * time.Second, 0, true, 0, false},                // not yet
		{2 * time.Minute, 0, false, 0, false},                // nothing waits: not stalled
		{2 * time.Minute, 0, true, 1, false},                 // stalled: restart
		{150 * time.Second, 0, true, 1, false},               // still stalled, one restart is enough for now
		{3 * time.Minute, 0, true, 1, true},                  // a timeout after the restart: wedged
		{4 * time.Minute, 0, true, 1, true},                  // stays wedged, no more restarts
		{5 * time.Minute, 290 * time.Second, true, 1, false}, // moving again
		{7 * time.Minute, 290 * time.Second, true, 2, false}, // a new stall: a new restart
	}
	for i, s := range steps {
		progress, waiting = t0.Add(s.progress), s.waiting
		w.check(t0.Add(s.at))
		if restarts != s.restarts || (w.reason() != "") != s.wedged {
			t.Fatalf("step %d: %d restarts, wedged %q", i, restarts, w.reason())
		}
	}
}

// wedgedSender never returns from its first Send, whatever its context
// says, as a deadlocked library would; later calls index everything.
type wedgedSender struct {
	once    sync.Once
	release chan struct{}
	mu      sync.Mutex
	sent    int
}

func (s *wedgedSender) Send(ctx context.Context, recs []*shipper.Record) ([]es.ItemResult, error) {
	first := false
	s.once.Do(func() { first = true })
	if first {
		<-s.release
	}
	s.mu.Lock()
	s.sent += len(recs)
	s.mu.Unlock()
	res := make([]es.ItemResult, len(recs))
	for i := range res {
		res[i] = es.ItemResult{Outcome: es.Delivered, Status: 201}
	}
	return res, nil
}

// A restarted generation of workers delivers past a wedged one, and stop
// gives up on the wedged worker at its deadline instead of hanging.
func TestWorkersRestartPastWedgedSender(t *testing.T) {
	f := newFixture(t)
	ws := &wedgedSender{release: make(chan struct{})}
	defer close(ws.release)
	f.d.out = ws
	f.appendRecords(t, 10) // chunk 1: the wedged worker takes it
	g := &workerGroup{d: f.d, n: 1}
	g.start()
	waitState(t, "the first chunk in flight", func() bool { return f.buf.Stats().InFlightChunks == 1 })
	for i := 10; i < 20; i++ { // chunk 2
		r := shipper.Record{Topic: "t", Offset: int64(i), Value: []byte(`{}`)}
		f.buf.Append(context.Background(), &r)
	}
	f.buf.Flush(context.Background())
	g.restart()
	waitState(t, "the second chunk delivered", func() bool { return f.buf.Stats().DiskChunks == 1 })
	if s := f.buf.Stats(); s.DiskRecords != 10 || s.InFlightChunks != 1 {
		t.Fatalf("after the restart: %+v", s)
	}
	start := time.Now()
	if g.stop(time.Now().Add(200 * time.Millisecond)) {
		t.Fatal("stop says a wedged worker returned")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("stop took %s", took)
	}
	if s := f.buf.Stats(); s.DiskRecords != 10 {
		t.Fatalf("the wedged chunk must stay buffered for the next start: %+v", s)
	}
}
