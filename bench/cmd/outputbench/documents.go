package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/inputs/kafka"
)

// The documents file holds, for every record of the topic in the order
// shipper's Kafka input delivered them, two lines: the document id the
// agent gives the record (shipper.Record.DocumentID) and the document's
// source. The loader reads it; nothing in it depends on the index.

// prepared describes the documents file.
type prepared struct {
	Documents   int64
	SourceBytes int64
	TopicID     string
	Took        time.Duration
}

// prepareDocuments reads the whole topic once with shipper's own Kafka
// input (a consumer group of its own) and writes the documents file at
// path. Every source must be what the agent sends for its record as it
// is: a compact JSON object, valid UTF-8, with its own top-level
// @timestamp (outputs/elasticsearch appends such a value unchanged; any
// other value it would rewrite, and the loader would not send the same
// bytes).
func prepareDocuments(ctx context.Context, brokers, topic string, partitions, records int, path string) (prepared, error) {
	f, err := os.Create(path)
	if err != nil {
		return prepared{}, err
	}
	defer f.Close()
	w := &documentWriter{w: bufio.NewWriterSize(f, 1<<20), topic: topic, total: int64(records), next: make([]int64, partitions),
		done: make(chan struct{})}
	cfg := kafka.DefaultConfig()
	cfg.Brokers, cfg.Topics, cfg.GroupID = []string{brokers}, []string{topic}, topic+"-documents"
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()
	in, err := kafka.New(cfg, w, w, log)
	if err != nil {
		return prepared{}, err
	}
	runCtx, stop := context.WithTimeout(ctx, 5*time.Minute)
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- in.Run(runCtx) }()
	select {
	case <-w.done:
	case err := <-ran:
		return prepared{}, fmt.Errorf("the input stopped before the last record: %v", err)
	case <-runCtx.Done():
		stop()
		<-ran
		return prepared{}, fmt.Errorf("%d of %d records before the deadline", w.count(), records)
	}
	stop()
	if err := <-ran; err != nil && !errors.Is(err, context.Canceled) {
		return prepared{}, fmt.Errorf("input: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return prepared{}, w.err
	}
	if err := w.w.Flush(); err != nil {
		return prepared{}, err
	}
	return prepared{Documents: w.n, SourceBytes: w.sourceBytes, TopicID: w.topicID, Took: time.Since(start)}, f.Close()
}

// documentWriter is the input's sink: it writes each record's id and
// source, and reports everything appended as delivered.
type documentWriter struct {
	topic string
	total int64
	done  chan struct{}

	mu          sync.Mutex
	w           *bufio.Writer
	n           int64
	sourceBytes int64
	topicID     string
	next        []int64 // per partition: offset after the last record appended
	err         error
}

func (d *documentWriter) count() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

func (d *documentWriter) Append(_ context.Context, r *shipper.Record) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n >= d.total {
		return nil // a record past the total: the topic holds more than it was given
	}
	if int(r.Partition) >= len(d.next) {
		return fmt.Errorf("partition %d: the topic has %d", r.Partition, len(d.next))
	}
	if err := sentAsIs(r.Value); err != nil {
		d.err = fmt.Errorf("record %s: %w", r.DocumentID(), err)
		return d.err
	}
	d.topicID = r.TopicID
	d.w.WriteString(r.DocumentID())
	d.w.WriteByte('\n')
	d.w.Write(r.Value)
	d.w.WriteByte('\n')
	d.sourceBytes += int64(len(r.Value))
	d.next[r.Partition] = r.Offset + 1
	if d.n++; d.n == d.total {
		close(d.done)
	}
	return nil
}

// sentAsIs says why the agent would not send v unchanged as its document's
// source, or nil.
func sentAsIs(v []byte) error {
	switch {
	case !utf8.Valid(v):
		return errors.New("not UTF-8")
	case len(v) == 0 || v[0] != '{' || !json.Valid(v):
		return errors.New("not a JSON object")
	case bytes.ContainsAny(v, "\r\n"):
		return errors.New("not compact: holds a line break")
	case !bytes.HasPrefix(v, []byte(`{"@timestamp":`)):
		return errors.New("no leading @timestamp")
	}
	return nil
}

func (d *documentWriter) RecordGap(_ context.Context, g shipper.OffsetGap) error {
	return fmt.Errorf("records removed from %s/%d before they were read: %s", g.Topic, g.Partition, g.Reason)
}

func (d *documentWriter) Watermarks() map[shipper.TopicPartition]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[shipper.TopicPartition]int64{}
	for p, off := range d.next {
		if off > 0 {
			m[shipper.TopicPartition{Topic: d.topic, Partition: int32(p)}] = off
		}
	}
	return m
}

func (d *documentWriter) ResumeOffsets() map[shipper.TopicPartition]int64 { return nil }
