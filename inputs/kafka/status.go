package kafka

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shipper-agent/shipper"
)

// inputStats counts what the input did since start, for /api/status and
// the metrics.
type inputStats struct {
	fetches, fetchErrors, partitionErrors atomic.Int64
	records, filtered, bytes              atomic.Int64
	sinkWait                              atomic.Int64 // nanoseconds
	commits, commitErrors                 atomic.Int64
	commitTime                            atomic.Int64 // nanoseconds
	resets                                atomic.Int64

	mu   sync.Mutex
	gaps map[shipper.TopicPartition]int64
}

func (s *inputStats) init() { s.gaps = map[shipper.TopicPartition]int64{} }

func (s *inputStats) commitDone(d time.Duration) {
	s.commits.Add(1)
	s.commitTime.Add(int64(d))
}

func (s *inputStats) skipped(tp shipper.TopicPartition, n int64) {
	s.mu.Lock()
	s.gaps[tp] += n
	s.mu.Unlock()
}

// Stats is the input's activity since start.
type Stats struct {
	// Generation is the consumer-group generation this member is in; 0
	// when it is not in one.
	Generation int32 `json:"generation"`
	// MemberID is this member's id in the group.
	MemberID string `json:"member_id,omitempty"`
	// Records and Bytes (keys and values) handed to the buffer.
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
	// Filtered counts offsets passed over without a record: control
	// records, and aborted transactions under read_committed.
	Filtered int64 `json:"filtered"`
	// Fetches is the number of fetch responses; FetchErrors of failed
	// fetch requests; PartitionErrors of per-partition errors in them.
	Fetches         int64 `json:"fetches"`
	FetchErrors     int64 `json:"fetch_errors"`
	PartitionErrors int64 `json:"partition_errors"`
	// SinkWaitSeconds is the time spent handing records to the buffer,
	// mostly waiting while it is full: the input is paused then.
	SinkWaitSeconds float64 `json:"sink_wait_seconds"`
	// Commits, CommitErrors and CommitSeconds (their total latency).
	Commits       int64   `json:"commits"`
	CommitErrors  int64   `json:"commit_errors"`
	CommitSeconds float64 `json:"commit_seconds"`
	// Resets counts partitions found with a log that ends below the
	// consumer's position (recreated or truncated) and read from its start.
	Resets int64 `json:"resets"`
	// Partitions is one entry per assigned partition.
	Partitions []PartitionStatus `json:"partitions"`
	// Skipped counts records removed from a partition before they were
	// read (offset out of range), per partition, since start.
	Skipped map[string]int64 `json:"skipped,omitempty"`
}

// PartitionStatus is one assigned partition's progress. Offsets are Kafka
// offsets; -1 means unknown.
type PartitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Position is the next offset to fetch.
	Position int64 `json:"position"`
	// Committed is the group's committed offset.
	Committed int64 `json:"committed"`
	// Delivered is the offset below which everything read is delivered.
	Delivered int64 `json:"delivered"`
	// HighWatermark is the partition's end as of the last fetch; Lag is
	// HighWatermark - Committed (records not yet safely delivered).
	HighWatermark int64 `json:"high_watermark"`
	Lag           int64 `json:"lag"`
	// Leader is the broker id leading the partition.
	Leader int32 `json:"leader"`
	// Error is the partition's last fetch error, "" while it fetches;
	// RetryIn is when it is fetched again.
	Error   string `json:"error,omitempty"`
	RetryIn string `json:"retry_in,omitempty"`
}

// Stats returns the input's activity and each assigned partition's state.
func (in *Input) Stats() Stats {
	st := Stats{
		Records: in.stats.records.Load(), Bytes: in.stats.bytes.Load(), Filtered: in.stats.filtered.Load(),
		Fetches: in.stats.fetches.Load(), FetchErrors: in.stats.fetchErrors.Load(),
		PartitionErrors: in.stats.partitionErrors.Load(),
		SinkWaitSeconds: time.Duration(in.stats.sinkWait.Load()).Seconds(),
		Commits:         in.stats.commits.Load(), CommitErrors: in.stats.commitErrors.Load(),
		CommitSeconds: time.Duration(in.stats.commitTime.Load()).Seconds(),
		Resets:        in.stats.resets.Load(),
	}
	in.stats.mu.Lock()
	if len(in.stats.gaps) > 0 {
		st.Skipped = map[string]int64{}
		for tp, n := range in.stats.gaps {
			st.Skipped[tp.String()] = n
		}
	}
	in.stats.mu.Unlock()

	in.mu.Lock()
	s := in.sess
	if in.active != nil {
		st.Generation, st.MemberID = in.active.ID, in.active.MemberID
	}
	in.mu.Unlock()
	if s == nil {
		return st
	}
	wm := in.marks.Watermarks()
	now := time.Now()
	s.mu.Lock()
	for _, ps := range s.parts {
		p := PartitionStatus{Topic: ps.tp.Topic, Partition: ps.tp.Partition, Position: ps.next,
			Committed: ps.committed, Delivered: -1, HighWatermark: ps.highWater, Leader: ps.leader, Error: ps.err}
		if w, ok := wm[ps.tp]; ok {
			p.Delivered = min(w, max(ps.next, 0))
		}
		if ps.highWater > 0 && ps.committed >= 0 {
			p.Lag = max(ps.highWater-ps.committed, 0)
		} else if ps.highWater > 0 {
			p.Lag = ps.highWater
		}
		if ps.err != "" && ps.retryAt.After(now) {
			p.RetryIn = ps.retryAt.Sub(now).Round(time.Millisecond).String()
		}
		st.Partitions = append(st.Partitions, p)
	}
	s.mu.Unlock()
	slices.SortFunc(st.Partitions, func(a, b PartitionStatus) int {
		return comparePartitions(shipper.TopicPartition{Topic: a.Topic, Partition: a.Partition},
			shipper.TopicPartition{Topic: b.Topic, Partition: b.Partition})
	})
	return st
}
