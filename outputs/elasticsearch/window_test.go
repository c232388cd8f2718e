package elasticsearch

import (
	"context"
	"errors"
	"testing"
	"time"
)

// take acquires a slot that must be free at once.
func take(t *testing.T, w *window) slot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := w.acquire(ctx)
	if err != nil {
		t.Fatalf("acquire with limit %.2f and %d in flight: %v", w.limit, w.inFlight, err)
	}
	return s
}

// full says whether acquire would wait.
func full(w *window) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := w.acquire(ctx)
	if err == nil {
		w.release(s, neutral, 0)
		return false
	}
	return true
}

func TestWindowBoundsRequestsInFlight(t *testing.T) {
	w := newWindow(3, false)
	a, b, c := take(t, w), take(t, w), take(t, w)
	if !full(w) {
		t.Fatal("a fourth request got a slot of a window of 3")
	}
	got := make(chan error, 1)
	go func() {
		s, err := w.acquire(context.Background())
		if err == nil {
			w.release(s, neutral, 0)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("acquire returned (%v) while the window was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	w.release(b, healthy, 1<<20)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	w.release(a, healthy, 1<<20)
	w.release(c, healthy, 1<<20)
	if st := w.snapshot(); st.InFlight != 0 || st.Limit != 3 {
		t.Fatalf("after release: %+v", st)
	}
	// Without adaptation nothing moves the limit.
	s := take(t, w)
	w.release(s, overloaded, 1<<20)
	if st := w.snapshot(); st.Limit != 3 || len(st.Cuts) != 0 {
		t.Fatalf("fixed window changed: %+v", st)
	}
}

func TestWindowAcquireEndsWithContext(t *testing.T) {
	w := newWindow(1, true)
	s := take(t, w)
	defer w.release(s, neutral, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := w.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on a full window: %v, want the context's deadline", err)
	}
}

// The limit halves on signs of overload, once per burst, never below 1,
// and grows back by about one request per full window of good answers.
func TestWindowCutsAndGrows(t *testing.T) {
	w := newWindow(8, true)
	if st := w.snapshot(); st.Limit != 2 {
		t.Fatalf("adaptive window starts at %v, want 2", st.Limit)
	}
	// Grow to 8: each good answer to a request sent on a full window
	// adds 1/limit.
	for i := 0; i < 200 && w.snapshot().Limit < 8; i++ {
		var burst []slot
		for !full(w) {
			burst = append(burst, take(t, w))
		}
		for _, s := range burst {
			w.release(s, healthy, 1<<20)
		}
	}
	if st := w.snapshot(); st.Limit != 8 || st.Growths != 6 {
		t.Fatalf("after good answers: limit %v (want the max, 8), growths %d (want 6)", st.Limit, st.Growths)
	}

	// A burst of 8 requests all answered 429: one cut, not eight.
	var burst []slot
	for range 8 {
		burst = append(burst, take(t, w))
	}
	time.Sleep(time.Millisecond) // answers come after the sends
	for _, s := range burst {
		w.release(s, overloaded, 1<<20)
	}
	if st := w.snapshot(); st.Limit != 4 || st.Cuts["429"] != 1 {
		t.Fatalf("after one burst of 429s: limit %v (want 4), cuts %v (want one)", st.Limit, st.Cuts)
	}
	// Each later request failing cuts again, down to 1 and no lower.
	for _, c := range []congestion{failing, noAnswer, overloaded, overloaded} {
		s := take(t, w)
		time.Sleep(time.Millisecond)
		w.release(s, c, 1<<20)
	}
	st := w.snapshot()
	if st.Limit != 1 || st.Cuts["5xx"] != 1 || st.Cuts["network"] != 1 || st.Cuts["429"] != 3 {
		t.Fatalf("after failures: limit %v (want 1), cuts %v", st.Limit, st.Cuts)
	}
	// Answers that say nothing about load move nothing.
	s := take(t, w)
	w.release(s, neutral, 1<<20)
	if got := w.snapshot(); got.Limit != 1 || got.Growths != st.Growths {
		t.Fatalf("a neutral answer moved the window: %+v", got)
	}
	// A window never full does not grow: one request at a time on a limit
	// of 2 shows nothing about 2.
	w.limit = 2
	for range 10 {
		s := take(t, w)
		w.release(s, healthy, 1<<20)
	}
	if got := w.snapshot().Limit; got != 2 {
		t.Fatalf("a window never full grew to %v", got)
	}
}

// Answers far slower than the base latency cut the limit by a quarter;
// answers as fast as the base, of any size, do not.
func TestWindowCutsOnLatency(t *testing.T) {
	w := newWindow(8, true)
	w.limit = 8
	answer := func(bytes int, took time.Duration) {
		s := take(t, w)
		s.start = time.Now().Add(-took)
		w.release(s, healthy, bytes)
	}
	for i := range latencySamples + 5 {
		// 10 ms per MiB, in requests of 1 to 4 MiB, and small ones
		// counted as the floor.
		mib := 1 + i%4
		answer(mib<<20, time.Duration(mib)*10*time.Millisecond)
		answer(1<<10, 3*time.Millisecond)
	}
	if st := w.snapshot(); len(st.Cuts) != 0 || st.BaseLatency < 0.009 || st.BaseLatency > 0.013 {
		t.Fatalf("steady answers: cuts %v, base %gs (want about 10ms per MiB)", st.Cuts, st.BaseLatency)
	}
	answer(2<<20, 25*time.Millisecond) // 1.25× the base: load, not overload
	if st := w.snapshot(); len(st.Cuts) != 0 {
		t.Fatalf("an answer 1.25× the base cut: %v", st.Cuts)
	}
	answer(2<<20, 100*time.Millisecond) // 5× the base
	if st := w.snapshot(); st.Cuts["latency"] != 1 || st.Limit != 6 {
		t.Fatalf("an answer 5× the base: limit %v (want 6), cuts %v", st.Limit, st.Cuts)
	}
}

func TestCongestionOf(t *testing.T) {
	items := func(statuses ...int) []ItemResult {
		var out []ItemResult
		for _, s := range statuses {
			out = append(out, ItemResult{Status: s})
		}
		return out
	}
	cases := []struct {
		name string
		a    answer
		want congestion
	}{
		{"all indexed", answer{results: items(201, 201)}, healthy},
		{"duplicates and a mapping error", answer{results: items(409, 400)}, healthy},
		{"one document 429", answer{results: items(201, 429)}, overloaded},
		{"request 429", failAll(2, &RequestError{Status: 429}), overloaded},
		{"request 503", failAll(2, &RequestError{Status: 503}), failing},
		{"request 408", failAll(2, &RequestError{Status: 408}), failing},
		{"no answer", failAll(2, &RequestError{Type: "network"}), noAnswer},
		{"401 holds", failAll(2, &RequestError{Status: 401, Hold: true}), neutral},
		{"413 splits", answer{split: true, results: make([]ItemResult, 2)}, neutral},
		{"garbled 200", failAll(2, &RequestError{Status: 200, Type: "bad_response"}), neutral},
	}
	for _, c := range cases {
		if got := congestionOf(c.a); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
