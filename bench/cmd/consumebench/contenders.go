package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/bench/internal/cputime"
	"github.com/shipper-agent/shipper/bench/internal/plainconsumer"
	"github.com/shipper-agent/shipper/inputs/kafka"
)

// childArgs is what a child process runs.
type childArgs struct {
	contender, brokers, topic, group string
	records, partitions              int
	isolation                        string
	maxBytes                         int
	timeout                          time.Duration
}

// runResult is one contender's run, as a child measured it.
type runResult struct {
	Contender string `json:"contender"`
	Round     int    `json:"-"`
	Records   int64  `json:"records"`
	Bytes     int64  `json:"bytes"` // key + value
	// From the start (just before New / NewReader) to the first and to the
	// last record, and from the last record until the consumer closed.
	First time.Duration `json:"first"`
	Last  time.Duration `json:"last"`
	Close time.Duration `json:"close"`
	// CPU time of the process from the start to the last record.
	User, Sys, CPU time.Duration
	MaxRSS         int64  `json:"max_rss"` // bytes
	Committed      string `json:"-"`
	Load           string `json:"-"` // the machine's load averages when the run started
}

func (r runResult) recordsPerSec() float64 { return float64(r.Records) / (r.Last - r.First).Seconds() }
func (r runResult) mbPerSec() float64      { return float64(r.Bytes) / 1e6 / (r.Last - r.First).Seconds() }
func (r runResult) cpuPerMillion() float64 { return r.CPU.Seconds() / float64(r.Records) * 1e6 }
func (r runResult) joinSecs() float64      { return r.First.Seconds() }
func (r runResult) totalSecs() float64     { return r.Last.Seconds() }
func (r runResult) closeSecs() float64     { return r.Close.Seconds() }
func (r runResult) rssMiB() float64        { return float64(r.MaxRSS) / (1 << 20) }

// runChild runs one contender and writes its result as JSON.
func runChild(ctx context.Context, c childArgs, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var r runResult
	var err error
	switch c.contender {
	case "input":
		r, err = runInput(ctx, c)
	case "plain":
		r, err = runPlain(ctx, c)
	default:
		err = fmt.Errorf("unknown contender %q", c.contender)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.contender, err)
	}
	r.Contender, r.MaxRSS = c.contender, cputime.MaxRSS()
	return json.NewEncoder(out).Encode(r)
}

// result fills a runResult from the marks of a run.
func result(start, first, last cputime.Mark, closed time.Time, records, bytes int64) runResult {
	r := runResult{Records: records, Bytes: bytes,
		First: first.At.Sub(start.At), Last: last.At.Sub(start.At), Close: closed.Sub(last.At)}
	r.User, r.Sys = last.CPU(start)
	r.CPU = r.User + r.Sys
	return r
}

// countingSink is the input's sink and watermarks: it keeps nothing but
// counts, and reports every appended record as delivered, so the input
// commits what it read as it would commit what the agent delivered.
type countingSink struct {
	topic   string
	total   int64
	records atomic.Int64
	bytes   atomic.Int64
	next    []atomic.Int64 // per partition: offset after the last record appended

	mu          sync.Mutex // guards first and last
	first, last cputime.Mark
	done        chan struct{} // closed at the total
}

// RecordGap fails the run: records removed before they were read would
// make the count wrong, and a fresh topic has none.
func (s *countingSink) RecordGap(_ context.Context, g shipper.OffsetGap) error {
	return fmt.Errorf("records removed from %s/%d before they were read: %s", g.Topic, g.Partition, g.Reason)
}

func (s *countingSink) Append(ctx context.Context, r *shipper.Record) error {
	if int(r.Partition) >= len(s.next) {
		return fmt.Errorf("partition %d: the topic has %d", r.Partition, len(s.next))
	}
	s.bytes.Add(int64(len(r.Key) + len(r.Value)))
	s.next[r.Partition].Store(r.Offset + 1)
	switch n := s.records.Add(1); n {
	case 1:
		m := cputime.Self()
		s.mu.Lock()
		s.first = m
		s.mu.Unlock()
	case s.total:
		m := cputime.Self()
		s.mu.Lock()
		s.last = m
		s.mu.Unlock()
		close(s.done)
	}
	return nil
}

// marks returns the moments of the first and the last record.
func (s *countingSink) marks() (first, last cputime.Mark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, s.last
}

// Watermarks reports every appended record as delivered.
func (s *countingSink) Watermarks() map[shipper.TopicPartition]int64 {
	m := map[shipper.TopicPartition]int64{}
	for p := range s.next {
		if off := s.next[p].Load(); off > 0 {
			m[shipper.TopicPartition{Topic: s.topic, Partition: int32(p)}] = off
		}
	}
	return m
}

// ResumeOffsets is empty: nothing is held, every partition starts at the
// group's committed offset (none: the earliest).
func (s *countingSink) ResumeOffsets() map[shipper.TopicPartition]int64 { return nil }

// runInput consumes the topic with shipper's Kafka input.
func runInput(ctx context.Context, c childArgs) (runResult, error) {
	sink := &countingSink{topic: c.topic, total: int64(c.records), next: make([]atomic.Int64, c.partitions), done: make(chan struct{})}
	cfg := kafka.DefaultConfig()
	cfg.Brokers, cfg.Topics, cfg.GroupID = []string{c.brokers}, []string{c.topic}, c.group
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	start := cputime.Self()
	in, err := kafka.New(cfg, sink, sink, log)
	if err != nil {
		return runResult{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- in.Run(runCtx) }()
	select {
	case <-sink.done:
	case err := <-ran:
		return runResult{}, fmt.Errorf("Run returned before the last record: %v", err)
	case <-ctx.Done():
		return runResult{}, fmt.Errorf("%d of %d records after %s", sink.records.Load(), c.records, c.timeout)
	}
	stop()
	if err := <-ran; err != nil {
		return runResult{}, fmt.Errorf("run: %w", err)
	}
	closed := time.Now()
	first, last := sink.marks()
	return result(start, first, last, closed, sink.records.Load(), sink.bytes.Load()), nil
}

// runPlain consumes the topic with the plain kafka-go consumer group
// (bench/internal/plainconsumer).
func runPlain(ctx context.Context, c childArgs) (runResult, error) {
	res, err := plainconsumer.Consume(ctx, plainconsumer.Config{Brokers: []string{c.brokers}, Topic: c.topic, Group: c.group,
		Records: c.records, ReadUncommitted: c.isolation == "read_uncommitted", MaxBytes: c.maxBytes})
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return runResult{}, fmt.Errorf("%v (run timeout %s)", err, c.timeout)
		}
		return runResult{}, err
	}
	return result(res.Start, res.First, res.Last, res.Closed, res.Records, res.Bytes), nil
}
