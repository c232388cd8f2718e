// Package plainconsumer is the baseline the benchmarks compare shipper's
// Kafka reading with: a plain kafka-go consumer group, as an application
// would write it. Reader with GroupID, FetchMessage in a loop,
// CommitMessages every 1000 records and once at the end, and the fetch and
// group timings of shipper's Kafka input defaults where kafka-go has them.
package plainconsumer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/bench/internal/cputime"
	"github.com/shipper-agent/shipper/inputs/kafka"
)

// Config is one run.
type Config struct {
	Brokers []string
	Topic   string
	Group   string // a new group reads from the earliest offset
	Records int    // stop at this many
	// ReadUncommitted selects read_uncommitted (default: read_committed,
	// the input's default).
	ReadUncommitted bool
	// MaxBytes is kafka-go's MaxBytes (per partition); 0: the input's
	// fetch_max_bytes.
	MaxBytes int
}

// CommitEvery is how many records go between two CommitMessages calls.
const CommitEvery = 1000

// Result is what a run measured, with this process's CPU marks.
type Result struct {
	Records, Bytes int64 // bytes: keys + values
	// Start is just before NewReader; First and Last the first and last
	// record (Last after the final commit); Closed when Close returned.
	Start, First, Last cputime.Mark
	Closed             time.Time
}

// Consume reads the topic until it has cfg.Records records, commits, and
// closes the reader. ctx bounds the run.
func Consume(ctx context.Context, cfg Config) (Result, error) {
	def := kafka.DefaultConfig()
	isolation := kafkago.ReadCommitted
	if cfg.ReadUncommitted {
		isolation = kafkago.ReadUncommitted
	}
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = int(def.FetchMaxBytes)
	}
	var res Result
	res.Start = cputime.Self()
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:           cfg.Brokers,
		GroupID:           cfg.Group,
		Topic:             cfg.Topic,
		MinBytes:          1,
		MaxBytes:          maxBytes,
		MaxWait:           def.FetchMaxWait,
		CommitInterval:    def.CommitInterval,
		SessionTimeout:    def.SessionTimeout,
		HeartbeatInterval: def.HeartbeatInterval,
		RebalanceTimeout:  def.RebalanceTimeout,
		StartOffset:       kafkago.FirstOffset,
		IsolationLevel:    isolation,
		ReadLagInterval:   -1,
		ErrorLogger:       kafkago.LoggerFunc(func(f string, a ...any) { fmt.Fprintf(os.Stderr, "kafka-go: "+f+"\n", a...) }),
	})
	// The latest record of each partition, without its data: what
	// CommitMessages needs.
	latest := map[int]kafkago.Message{}
	commit := func() error {
		msgs := make([]kafkago.Message, 0, len(latest))
		for _, m := range latest {
			msgs = append(msgs, m)
		}
		clear(latest)
		return r.CommitMessages(ctx, msgs...)
	}
	for res.Records < int64(cfg.Records) {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			r.Close()
			if errors.Is(err, context.DeadlineExceeded) {
				return res, fmt.Errorf("%d of %d records before the deadline", res.Records, cfg.Records)
			}
			return res, err
		}
		if res.Records++; res.Records == 1 {
			res.First = cputime.Self()
		}
		res.Bytes += int64(len(m.Key) + len(m.Value))
		latest[m.Partition] = kafkago.Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
		if res.Records%CommitEvery == 0 {
			if err := commit(); err != nil {
				r.Close()
				return res, fmt.Errorf("commit: %w", err)
			}
		}
	}
	if err := commit(); err != nil {
		r.Close()
		return res, fmt.Errorf("commit: %w", err)
	}
	res.Last = cputime.Self()
	if err := r.Close(); err != nil {
		return res, fmt.Errorf("close: %w", err)
	}
	res.Closed = time.Now()
	return res, nil
}

// KafkaGoVersion is the kafka-go module version this binary was built with.
func KafkaGoVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/segmentio/kafka-go" {
				return m.Version
			}
		}
	}
	return "(unknown version)"
}
