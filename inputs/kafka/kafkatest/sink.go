package kafkatest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
)

// Sink records the records appended to it, in order. Like the disk buffer it
// stands for, it can be full: SetLimit bounds how many records it accepts,
// and Append blocks while the bound is reached, until the bound is raised or
// the context ends.
type Sink struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	records []shipper.Record
	calls   int
	waiting int
	limit   int // < 0: unbounded
	fail    map[failKey]error
	gaps    []shipper.OffsetGap
}

type failKey struct {
	tp     shipper.TopicPartition
	offset int64
}

// NewSink returns an unbounded sink.
func NewSink() *Sink {
	return &Sink{changed: make(chan struct{}), limit: -1}
}

// SinkState is a snapshot of a Sink.
type SinkState struct {
	// Records is the number of records accepted.
	Records int
	// Calls is the number of Append calls: accepted, waiting, abandoned or
	// failed.
	Calls int
	// Waiting is the number of Append calls blocked because the sink is full.
	Waiting int
}

func (s *Sink) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Sink) full() bool { return s.limit >= 0 && len(s.records) >= s.limit }

// RecordGap records g; Gaps returns what was recorded.
func (s *Sink) RecordGap(_ context.Context, g shipper.OffsetGap) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gaps = append(s.gaps, g)
	s.notify()
	return nil
}

// Gaps returns the offset gaps recorded, in order.
func (s *Sink) Gaps() []shipper.OffsetGap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.gaps)
}

// Append accepts a copy of r, blocking while the sink is full. It returns
// ctx's error if ctx ends first; the record is then not accepted.
func (s *Sink) Append(ctx context.Context, r *shipper.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.notify()
	for s.full() {
		s.waiting++
		s.notify()
		ch := s.changed
		s.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.mu.Lock()
		s.waiting--
		if err != nil {
			s.notify()
			return err
		}
	}
	if err, ok := s.fail[failKey{r.TP(), r.Offset}]; ok {
		delete(s.fail, failKey{r.TP(), r.Offset})
		return err
	}
	rec := *r
	rec.Key = slices.Clone(r.Key)
	rec.Value = slices.Clone(r.Value)
	s.records = append(s.records, rec)
	s.notify()
	return nil
}

// SetLimit sets how many records the sink holds before Append blocks; a
// negative limit removes the bound.
func (s *Sink) SetLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = n
	s.notify()
}

// FailOnce makes the next Append of the record at offset of tp return err
// instead of accepting the record (once the sink has room for it).
func (s *Sink) FailOnce(tp shipper.TopicPartition, offset int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail == nil {
		s.fail = map[failKey]error{}
	}
	s.fail[failKey{tp, offset}] = err
}

// Records returns the accepted records, in the order they were accepted.
func (s *Sink) Records() []shipper.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

// State returns a snapshot of the sink's counters.
func (s *Sink) State() SinkState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state()
}

func (s *Sink) state() SinkState {
	return SinkState{Records: len(s.records), Calls: s.calls, Waiting: s.waiting}
}

// WaitFor waits until cond holds for the sink's state and returns that
// state; it fails the test if cond does not hold within timeout.
func (s *Sink) WaitFor(t testing.TB, timeout time.Duration, what string, cond func(SinkState) bool) SinkState {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		st, ch := s.state(), s.changed
		s.mu.Unlock()
		if cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("sink: %s: not within %s; state %+v", what, timeout, st)
		}
	}
}
