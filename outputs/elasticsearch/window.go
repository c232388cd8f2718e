package elasticsearch

import (
	"context"
	"sync"
	"time"
)

// window is the adaptive limit on bulk requests in flight: additive
// increase, multiplicative decrease, as TCP does with its congestion window.
//
//   - Cut: an answer that says the cluster is overloaded halves the limit:
//     a 429 (the whole request or any of its documents: a full write queue,
//     indexing pressure, a flood-stage block), a whole-request 5xx or 408,
//     or no answer at all (a reset, a stall). An answer much slower than
//     the cluster's base latency cuts it by a quarter: Elasticsearch queues
//     work long before it refuses any, and a rising latency is the first
//     sign. Only requests sent after the last cut can cut again, so the
//     answers to one burst cut once, not once each.
//   - Grow: each answer without such a sign to a request sent while the
//     window was full adds 1/limit, about one request per window's worth of
//     answers. A window that was never full has shown nothing about more.
//
// The limit stays within [1, max_in_flight]. Every bulk request takes a slot,
// retries and split halves included, so a struggling cluster sees fewer
// requests, never more. Waiters are the delivery workers (and a dead-letter
// replay): as many as max_in_flight + 1 at most.
type window struct {
	max      int
	adaptive bool

	mu       sync.Mutex
	limit    float64
	inFlight int
	wake     chan struct{} // closed when a slot may have freed
	// fills counts the times a request took the last free slot.
	fills   int64
	lastCut time.Time
	// base is the cluster's base latency, seconds per MiB of request body:
	// it falls at once to a faster answer and rises slowly, so a queue
	// building up shows against it instead of becoming it.
	base    float64
	samples int
	stats   WindowStats
}

// Latency thresholds. An answer slower than latencyCut × the base (and than
// latencyMinCut) cuts; the
// base needs latencySamples answers first, and bodies count as at least
// latencyFloorBytes so that tiny requests (a retry of one document) do not
// set a base no full request can meet.
const (
	latencyCut        = 3.0
	latencySamples    = 20
	latencyFloorBytes = 256 << 10
	baseRise          = 0.02
	// latencyMinCut: an answer faster than this never cuts, however slow
	// against the base: a few milliseconds more is noise (a GC pause, a
	// busy core), not a queue.
	latencyMinCut = 50 * time.Millisecond
)

// WindowStats is the state of the in-flight window.
type WindowStats struct {
	// Adaptive is false when adaptive_concurrency is off: the limit stays
	// at Max.
	Adaptive bool `json:"adaptive"`
	// Limit is how many bulk requests may be in flight now (its integer
	// part); Max is max_in_flight.
	Limit float64 `json:"limit"`
	Max   int     `json:"max"`
	// InFlight is the bulk requests in flight now.
	InFlight int `json:"in_flight"`
	// Cuts counts decreases of the limit by cause: "429", "5xx",
	// "network", "latency".
	Cuts map[string]int64 `json:"cuts"`
	// Growths counts increases of the limit by one whole request.
	Growths int64 `json:"growths"`
	// BaseLatency is the cluster's base latency per MiB of request body,
	// in seconds, as the window sees it; 0 until enough answers came.
	BaseLatency float64 `json:"base_latency_seconds_per_mib"`
}

// congestion is what an answer says about the cluster's load.
type congestion int

const (
	healthy    congestion = iota
	neutral               // says nothing about load: a 401, a split, an error of ours
	overloaded            // 429
	failing               // whole-request 5xx or 408
	noAnswer              // a network error
)

var cutReason = map[congestion]string{overloaded: "429", failing: "5xx", noAnswer: "network"}

func newWindow(max int, adaptive bool) *window {
	w := &window{max: max, adaptive: adaptive, limit: float64(max), wake: make(chan struct{})}
	if adaptive {
		// Start low and grow while answers are good, rather than open
		// with every request a restarted fleet could send.
		w.limit = float64(min(max, 2))
	}
	w.stats.Cuts = map[string]int64{}
	return w
}

// slot is one bulk request's place in the window.
type slot struct {
	start  time.Time
	fills  int64 // window.fills once the request took its slot
	filled bool  // it took the last free slot
}

// acquire waits for a free slot, or for ctx to end.
func (w *window) acquire(ctx context.Context) (slot, error) {
	for {
		w.mu.Lock()
		if w.inFlight < int(w.limit) {
			w.inFlight++
			s := slot{start: time.Now(), filled: w.inFlight >= int(w.limit)}
			if s.filled {
				w.fills++
			}
			s.fills = w.fills
			w.mu.Unlock()
			return s, nil
		}
		wake := w.wake
		w.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return slot{}, ctx.Err()
		}
	}
}

// release frees the slot and adapts the limit to what the answer said.
// bodyBytes is the request body's size before compression.
func (w *window) release(s slot, c congestion, bodyBytes int) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.inFlight--
	before := int(w.limit)
	if w.adaptive {
		w.adapt(s, c, bodyBytes, now)
	}
	if w.inFlight < int(w.limit) || int(w.limit) != before {
		close(w.wake)
		w.wake = make(chan struct{})
	}
}

func (w *window) adapt(s slot, c congestion, bodyBytes int, now time.Time) {
	sentAfterCut := s.start.After(w.lastCut)
	switch c {
	case neutral:
		return
	case overloaded, failing, noAnswer:
		if sentAfterCut {
			w.cut(0.5, cutReason[c], now)
		}
		return
	}
	took := now.Sub(s.start)
	perMiB := took.Seconds() / (float64(max(bodyBytes, latencyFloorBytes)) / (1 << 20))
	switch {
	case w.samples == 0 || perMiB < w.base:
		w.base = perMiB
	default:
		w.base += baseRise * (perMiB - w.base)
	}
	w.samples++
	if w.samples > latencySamples && perMiB > latencyCut*w.base && took >= latencyMinCut && sentAfterCut {
		w.cut(0.75, "latency", now)
		return
	}
	// Grow only on evidence: the window was full while this request
	// was in flight (it took the last slot, or a later request did).
	full := s.filled || w.fills != s.fills
	if full && w.limit < float64(w.max) {
		was := int(w.limit)
		w.limit = min(float64(w.max), w.limit+1/w.limit)
		if int(w.limit) > was {
			w.stats.Growths++
		}
	}
}

func (w *window) cut(factor float64, reason string, now time.Time) {
	w.limit = max(1, w.limit*factor)
	w.lastCut = now
	w.stats.Cuts[reason]++
}

// snapshot returns the window's state.
func (w *window) snapshot() WindowStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stats
	st.Adaptive, st.Limit, st.Max, st.InFlight = w.adaptive, w.limit, w.max, w.inFlight
	st.Cuts = make(map[string]int64, len(w.stats.Cuts))
	for k, v := range w.stats.Cuts {
		st.Cuts[k] = v
	}
	if w.samples > latencySamples {
		st.BaseLatency = w.base
	}
	return st
}

// congestionOf reads what an answer says about the cluster's load.
func congestionOf(a answer) congestion {
	if a.err != nil {
		switch s := a.err.Status; {
		case a.err.Hold:
			return neutral
		case s == 0:
			return noAnswer
		case s == 429:
			return overloaded
		case s == 408 || s >= 500:
			return failing
		}
		return neutral
	}
	if a.split {
		return neutral
	}
	for _, r := range a.results {
		if r.Status == 429 {
			return overloaded
		}
	}
	return healthy
}
