package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
	es "github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

type fixture struct {
	buf *buffer.Buffer
	srv *estest.Server
	d   *deliverer
	m   *metrics
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	bc := buffer.DefaultConfig()
	bc.Dir = t.TempDir()
	bc.ChunkSize = 64 << 10
	bc.MemoryLimit = 1 << 20
	bc.FlushInterval = time.Hour
	bc.SyncWrites = false
	buf, err := buffer.Open(bc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { buf.Close() })
	srv := estest.New(t)
	ec := es.DefaultConfig()
	ec.URLs = []string{srv.URL}
	ec.Index = "logs"
	ec.RetryInitialBackoff = 5 * time.Millisecond
	ec.RetryMaxBackoff = 20 * time.Millisecond
	out, err := es.New(ec, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(func() float64 { return 0 }, buf.Stats)
	return &fixture{buf: buf, srv: srv, m: m, d: newDeliverer(buf, out, ec, slog.New(slog.DiscardHandler), m)}
}

func (f *fixture) appendRecords(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		r := shipper.Record{Topic: "t", Partition: 0, Offset: int64(i), Value: fmt.Appendf(nil, `{"n":%d}`, i), Time: time.Now()}
		if err := f.buf.Append(context.Background(), &r); err != nil {
			t.Fatal(err)
		}
	}
	f.buf.Flush(context.Background())
}

// run starts n workers and returns a function that stops them and waits.
func (f *fixture) run(n int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() { defer wg.Done(); f.d.run(ctx) }()
	}
	return func() { cancel(); wg.Wait() }
}

func (f *fixture) waitEmpty(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.buf.WaitDelivered(ctx, f.buf.Flush(ctx)); err != nil {
		t.Fatalf("buffer not drained: %v; %+v", err, f.buf.Stats())
	}
}

func TestDeliverAll(t *testing.T) {
	f := newFixture(t)
	f.appendRecords(t, 3000)
	stop := f.run(2)
	defer stop()
	f.waitEmpty(t)
	if n := len(f.srv.Docs("logs")); n != 3000 {
		t.Fatalf("%d documents, want 3000", n)
	}
	if got := counterValue(f.m.indexed); got != 3000 {
		t.Fatalf("indexed metric = %v", got)
	}
}

func TestDeliverRetriesOnlyFailedDocuments(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	attempts := map[string]int{}
	f.srv.OnItem(func(id string, _ []byte) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		attempts[id]++
		// Every fifth document is rejected twice with 429 before it succeeds.
		var off int
		fmt.Sscanf(id, "t-0-%d", &off)
		if off%5 == 0 && attempts[id] <= 2 {
			return 429, "es_rejected_execution_exception"
		}
		return 0, ""
	})
	f.appendRecords(t, 500)
	stop := f.run(1)
	defer stop()
	f.waitEmpty(t)
	if n := len(f.srv.Docs("logs")); n != 500 {
		t.Fatalf("%d documents, want 500", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range attempts {
		var off int
		fmt.Sscanf(id, "t-0-%d", &off)
		want := 1
		if off%5 == 0 {
			want = 3
		}
		if n != want {
			t.Fatalf("%s sent %d times, want %d", id, n, want)
		}
	}
	if got := counterValue(f.m.retries); got != 200 {
		t.Fatalf("retries metric = %v, want 200", got)
	}
}

func TestDeliverDeadLettersRejectedDocuments(t *testing.T) {
	f := newFixture(t)
	f.srv.OnItem(func(id string, _ []byte) (int, string) {
		if id == "t-0-7" {
			return 400, "mapper_parsing_exception"
		}
		return 0, ""
	})
	f.appendRecords(t, 20)
	stop := f.run(1)
	defer stop()
	f.waitEmpty(t)
	if n := len(f.srv.Docs("logs")); n != 19 {
		t.Fatalf("%d documents, want 19", n)
	}
	var dead []buffer.DeadLetter
	f.buf.DeadLetters(func(d buffer.DeadLetter) error { dead = append(dead, d); return nil })
	if len(dead) != 1 || dead[0].Record.Offset != 7 || !strings.Contains(dead[0].Reason, "mapper_parsing_exception") ||
		string(dead[0].Record.Value) != `{"n":7}` {
		t.Fatalf("dead letters = %+v", dead)
	}
}

func TestDeliverSurvivesOutage(t *testing.T) {
	f := newFixture(t)
	f.srv.OnRequest(func(n int) (int, string) {
		if n <= 4 {
			return 503, ""
		}
		return 0, ""
	})
	f.appendRecords(t, 100)
	stop := f.run(2)
	defer stop()
	f.waitEmpty(t)
	if n := len(f.srv.Docs("logs")); n != 100 {
		t.Fatalf("%d documents, want 100", n)
	}
	if f.srv.Requests() < 5 {
		t.Fatalf("only %d requests: the outage was not retried", f.srv.Requests())
	}
}

func TestDeliverStopReleasesChunk(t *testing.T) {
	f := newFixture(t)
	f.srv.OnRequest(func(int) (int, string) { return 503, "" }) // never recovers
	f.appendRecords(t, 10)
	stop := f.run(1)
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.Requests() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no delivery attempts")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	s := f.buf.Stats()
	if s.DiskRecords != 10 || s.InFlightChunks != 0 || s.MemoryBytes != 0 {
		t.Fatalf("after stop the chunk must be back in the buffer, idle: %+v", s)
	}
}

func TestRetryNowCutsBackoff(t *testing.T) {
	f := newFixture(t)
	f.d.initial, f.d.maxWait = time.Hour, time.Hour
	var mu sync.Mutex
	fail := true
	f.srv.OnRequest(func(int) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return 503, ""
		}
		return 0, ""
	})
	f.appendRecords(t, 10)
	stop := f.run(1)
	defer stop()
	for f.srv.Requests() < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	time.Sleep(20 * time.Millisecond) // the worker is in its hour-long backoff
	f.d.retryNow()
	f.waitEmpty(t)
}

func TestBackoff(t *testing.T) {
	for attempt := range 40 {
		d := backoff(100*time.Millisecond, 10*time.Second, attempt)
		ceiling := min(100*time.Millisecond<<min(attempt, 20), 10*time.Second)
		if d < ceiling/2 || d > ceiling {
			t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, ceiling/2, ceiling)
		}
	}
}
