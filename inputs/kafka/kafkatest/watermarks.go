package kafkatest

import (
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
)

// Watermarks is a Watermarks provider whose offsets the test sets. It counts
// the calls, so that a test can wait for the consumer to have asked again.
type Watermarks struct {
	mu      sync.Mutex
	changed chan struct{}
	marks   map[shipper.TopicPartition]int64
	resume  map[shipper.TopicPartition]int64
	calls   int
}

// NewWatermarks returns a provider reporting the given offsets.
func NewWatermarks(marks map[shipper.TopicPartition]int64) *Watermarks {
	return &Watermarks{changed: make(chan struct{}), marks: maps.Clone(marks)}
}

// Watermarks returns a copy of the offsets set.
func (w *Watermarks) Watermarks() map[shipper.TopicPartition]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	close(w.changed)
	w.changed = make(chan struct{})
	m := maps.Clone(w.marks)
	if m == nil {
		m = map[shipper.TopicPartition]int64{}
	}
	return m
}

// ResumeOffsets returns a copy of the resume offsets set with SetResume.
func (w *Watermarks) ResumeOffsets() map[shipper.TopicPartition]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := maps.Clone(w.resume)
	if m == nil {
		m = map[shipper.TopicPartition]int64{}
	}
	return m
}

// SetResume sets the resume offset of tp.
func (w *Watermarks) SetResume(tp shipper.TopicPartition, offset int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resume == nil {
		w.resume = map[shipper.TopicPartition]int64{}
	}
	w.resume[tp] = offset
}

// Set sets the watermark of tp.
func (w *Watermarks) Set(tp shipper.TopicPartition, offset int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.marks == nil {
		w.marks = map[shipper.TopicPartition]int64{}
	}
	w.marks[tp] = offset
}

// Calls returns how many times Watermarks was called.
func (w *Watermarks) Calls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls
}

// WaitCalls waits until Watermarks has been called n more times than when
// WaitCalls was called, failing the test after timeout. A consumer that asks
// before each commit has then completed at least n-1 commits that saw the
// watermarks set before WaitCalls.
func (w *Watermarks) WaitCalls(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	w.mu.Lock()
	target := w.calls + n
	w.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		calls, ch := w.calls, w.changed
		w.mu.Unlock()
		if calls >= target {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("watermarks: %d calls, want %d within %s", calls, target, timeout)
		}
	}
}
