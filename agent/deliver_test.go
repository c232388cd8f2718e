package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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
	ec.MaxItemAttempts = 3
	ec.HedgeAfter = 0 // a slow fake under -race must not be hedged: counts would move to duplicates
	out, err := es.New(ec, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{buf: buf, srv: srv}
	f.m = newMetrics(metricSources{consumed: func() float64 { return 0 }, buffer: buf.Stats,
		held: func() *HoldStatus { return f.d.held() }, nodes: out.Nodes})
	f.d = newDeliverer(buf, out, ec, slog.New(slog.DiscardHandler), f.m)
	return f
}

// deadLetters lists the whole dead-letter store.
func (f *fixture) deadLetters(t *testing.T) []buffer.DeadLetter {
	t.Helper()
	page, err := f.buf.DeadLetters().List(buffer.DeadLetterQuery{Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	return page.Entries
}

// waitState polls cond, a question about the fixture's state, never about
// elapsed time, until it holds; the deadline only bounds a broken test.
func waitState(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (f *fixture) appendRecords(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		r := shipper.Record{Topic: "t", Partition: 0, Offset: int64(i), Value: fmt.Appendf(nil, `{"n":%d}`, i), Time: time.Now()}
		if err := f.buf.Append(context.Background(), &r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.buf.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
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
	seq, _ := f.buf.Flush(ctx)
	if err := f.buf.WaitDelivered(ctx, seq); err != nil {
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
	// Counted right after the Ack that WaitDelivered sees: poll.
	waitState(t, "indexed metric at 3000", func() bool { return counterValue(f.m.indexed) >= 3000 })
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
	dead := f.deadLetters(t)
	if len(dead) != 1 || dead[0].Record.Offset != 7 || dead[0].Type != "mapper_parsing_exception" ||
		!strings.Contains(dead[0].Reasons[0], "mapper_parsing_exception") || dead[0].Attempts != 1 ||
		string(dead[0].Record.Value) != `{"n":7}` {
		t.Fatalf("dead letters = %+v", dead)
	}
	if got := counterValue(f.m.deadLettered); got != 1 {
		t.Fatalf("dead_lettered metric = %v", got)
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
	waitState(t, "the worker in its hour-long backoff", func() bool { return f.d.backingOff.Load() == 1 })
	mu.Lock()
	fail = false
	mu.Unlock()
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

// A chunk whose documents are all rejected: every one is dead-lettered and
// counted once, even when the chunk is sent again because its first
// acknowledgement failed. Before, 1,000 dead letters outgrew one badger
// transaction and the chunk was re-sent, and re-counted, for ever.
func TestDeliverManyRejectedCountedOnce(t *testing.T) {
	f := newFixture(t)
	f.srv.OnItem(func(id string, _ []byte) (int, string) {
		var off int
		fmt.Sscanf(id, "t-0-%d", &off)
		if off%5 != 0 {
			return 400, "strict_dynamic_mapping_exception"
		}
		return 0, ""
	})
	flaky := &failFirstAck{chunkSource: f.buf}
	f.d.src = flaky
	// Big enough chunks that each holds hundreds of documents.
	for i := range 1000 {
		r := shipper.Record{Topic: "t", Offset: int64(i), Value: fmt.Appendf(nil, `{"n":%d,"pad":"%0500d"}`, i, 0), Time: time.Now()}
		if err := f.buf.Append(context.Background(), &r); err != nil {
			t.Fatal(err)
		}
	}
	f.buf.Flush(context.Background())
	stop := f.run(2)
	defer stop()
	f.waitEmpty(t)
	if !flaky.failed.Load() {
		t.Fatal("no acknowledgement failed: the test proved nothing")
	}
	if n := len(f.srv.Docs("logs")); n != 200 {
		t.Fatalf("%d documents indexed, want 200", n)
	}
	if dead := f.deadLetters(t); len(dead) != 800 {
		t.Fatalf("%d dead letters stored, want 800", len(dead))
	}
	indexed, dup, dead := counterValue(f.m.indexed), counterValue(f.m.duplicates), counterValue(f.m.deadLettered)
	if dead != 800 || indexed+dup != 200 {
		t.Fatalf("metrics: indexed %v + duplicates %v, want 200; dead_lettered %v, want 800", indexed, dup, dead)
	}
	if got := counterValue(f.m.deadByType.WithLabelValues("strict_dynamic_mapping_exception")); got != 800 {
		t.Fatalf("dead letters by reason = %v, want 800", got)
	}
}

// failFirstAck fails the first acknowledgement, as a full disk would.
type failFirstAck struct {
	chunkSource
	failed atomic.Bool
}

func (s *failFirstAck) Ack(ctx context.Context, c *buffer.Chunk, dead []buffer.DeadLetter) error {
	if s.failed.CompareAndSwap(false, true) {
		return errors.New("injected: ack failed")
	}
	return s.chunkSource.Ack(ctx, c, dead)
}

// A document Elasticsearch answers with 500 every time is dead-lettered
// after max_item_attempts with every reason seen; the others are indexed.
// Before, it was retried for ever and held its chunk.
func TestDeliverRepeated500DeadLettered(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	sent := 0
	f.srv.OnItem(func(id string, _ []byte) (int, string) {
		if id != "t-0-3" {
			return 0, ""
		}
		mu.Lock()
		defer mu.Unlock()
		sent++
		if sent == 1 {
			return 500, "null_pointer_exception"
		}
		return 500, "illegal_state_exception"
	})
	f.appendRecords(t, 10)
	stop := f.run(1)
	defer stop()
	f.waitEmpty(t)
	dead := f.deadLetters(t)
	if len(dead) != 1 || dead[0].Record.Offset != 3 || dead[0].Attempts != 3 || sent != 3 {
		t.Fatalf("dead letters = %+v (sent %d times)", dead, sent)
	}
	reasons := strings.Join(dead[0].Reasons, " | ")
	for _, want := range []string{"null_pointer_exception", "illegal_state_exception", "gave up after 3 attempts"} {
		if !strings.Contains(reasons, want) {
			t.Fatalf("reasons %q lack %q", reasons, want)
		}
	}
	if n := len(f.srv.Docs("logs")); n != 9 {
		t.Fatalf("%d documents, want 9", n)
	}
}

// 503 and 429 answers for a document are the cluster's state, not the
// document's: they never count toward max_item_attempts.
func TestDeliverUnavailableShardsRetriedForever(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	sent := 0
	f.srv.OnItem(func(id string, _ []byte) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if sent++; sent <= 10 {
			return 503, "unavailable_shards_exception"
		}
		return 0, ""
	})
	f.appendRecords(t, 1)
	stop := f.run(1)
	defer stop()
	f.waitEmpty(t)
	if len(f.deadLetters(t)) != 0 || len(f.srv.Docs("logs")) != 1 {
		t.Fatalf("a document answered 503 was dead-lettered (%d) or not indexed", len(f.deadLetters(t)))
	}
}

// Answers that mean the cluster or the credentials are wrong hold the
// documents: nothing is dead-lettered or acknowledged, the agent says why,
// and everything is delivered once the operator fixes it.
func TestDeliverHolds(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(*estest.Server, *atomic.Bool)
		reason string
	}{
		{"401 wrong password", func(s *estest.Server, broken *atomic.Bool) {
			s.OnRequest(func(int) (int, string) {
				if broken.Load() {
					return 401, ""
				}
				return 0, ""
			})
		}, "401"},
		{"write block", func(s *estest.Server, broken *atomic.Bool) {
			s.OnItem(func(string, []byte) (int, string) {
				if broken.Load() {
					return 403, "cluster_block_exception"
				}
				return 0, ""
			})
		}, "cluster_block_exception"},
		{"index missing, auto-create off", func(s *estest.Server, broken *atomic.Bool) {
			s.OnItem(func(string, []byte) (int, string) {
				if broken.Load() {
					return 404, "index_not_found_exception"
				}
				return 0, ""
			})
		}, "index_not_found_exception"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			var broken atomic.Bool
			broken.Store(true)
			c.setup(f.srv, &broken)
			f.appendRecords(t, 20)
			stop := f.run(1)
			defer stop()
			waitState(t, "delivery held", func() bool { return f.d.held() != nil })
			h := f.d.held()
			if !strings.Contains(h.Reason, c.reason) || h.Documents != 20 {
				t.Fatalf("held = %+v", h)
			}
			waitState(t, "a few more attempts", func() bool { return f.srv.Requests() >= 3 })
			if s := f.buf.Stats(); s.DeadLetters != 0 || s.DiskRecords != 20 || counterValue(f.m.deadLettered) != 0 {
				t.Fatalf("while held: %+v", s)
			}
			if wm := f.buf.Watermarks()[shipper.TopicPartition{Topic: "t"}]; wm != 0 {
				t.Fatalf("watermark %d moved while held", wm)
			}
			broken.Store(false) // the operator fixes it, then flushes
			f.d.retryNow()
			f.waitEmpty(t)
			if n := len(f.srv.Docs("logs")); n != 20 || f.d.held() != nil {
				t.Fatalf("after the fix: %d documents, held %+v", n, f.d.held())
			}
		})
	}
}
