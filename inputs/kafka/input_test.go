package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/inputs/kafka"
	"github.com/shipper-agent/shipper/inputs/kafka/kafkatest"
)

// Timeouts of the waits in these tests: generous, since the race detector
// and a loaded machine slow the group protocol down; passing tests never
// wait them out.
const (
	joinTimeout = 20 * time.Second
	waitTimeout = 10 * time.Second
	// stopTimeout bounds how long Run may take to return once its context
	// is cancelled: well under the session timeout, since leaving the group
	// must not wait for the session to expire.
	stopTimeout = 3 * time.Second
	// fetchLoops is the number of fetch loops, one per broker leading an
	// assigned partition: kfake clusters here have one broker. At most
	// that many appends wait while the sink is full.
	fetchLoops = 1
)

// testConfig returns a valid configuration with short intervals.
func testConfig(t *testing.T, c *kafkatest.Cluster, group string, topics ...string) kafka.Config {
	t.Helper()
	cfg := kafka.DefaultConfig()
	cfg.Brokers = c.Addrs()
	cfg.Topics = topics
	cfg.GroupID = group
	cfg.CommitInterval = 50 * time.Millisecond
	cfg.SessionTimeout = 6 * time.Second
	cfg.HeartbeatInterval = time.Second
	cfg.RebalanceTimeout = 5 * time.Second
	cfg.FetchMaxWait = 100 * time.Millisecond
	cfg.DialTimeout = 5 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	return cfg
}

// testLogger collects the input's log and prints it if the test fails.
func testLogger(t *testing.T) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("input log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// running is an Input whose Run runs in the background.
type running struct {
	*kafka.Input
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// start creates an input and runs it until stop or the end of the test.
func start(t *testing.T, cfg kafka.Config, sink kafka.Sink, marks kafka.Watermarks) *running {
	t.Helper()
	in, err := kafka.New(cfg, sink, marks, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Input: in, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- in.Run(ctx) }()
	t.Cleanup(func() {
		if !r.stopped {
			r.stop(t)
		}
	})
	return r
}

// stop cancels Run's context and waits for Run to return, failing the test
// if it takes longer than stopTimeout.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(stopTimeout):
		t.Fatalf("Run did not return within %s of cancelling its context", stopTimeout)
	}
}

// waitAssigned waits until the input owns n partitions.
func (r *running) waitAssigned(t *testing.T, n int) {
	t.Helper()
	waitUntil(t, joinTimeout, fmt.Sprintf("%d partitions assigned", n), func() bool { return len(r.Assigned()) == n })
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCommitted waits until the group's committed offsets of topic equal
// want.
func waitCommitted(t *testing.T, c *kafkatest.Cluster, group, topic string, want map[int32]int64) {
	t.Helper()
	parts := make([]int32, 0, len(want))
	for p := range want {
		parts = append(parts, p)
	}
	var got map[int32]int64
	deadline := time.Now().Add(waitTimeout)
	for {
		got = c.Committed(t, group, topic, parts...)
		if equalOffsets(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets of %s in %s: got %v, want %v", group, topic, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkCommitted checks, without waiting, the group's committed offsets.
func checkCommitted(t *testing.T, c *kafkatest.Cluster, group, topic string, want map[int32]int64) {
	t.Helper()
	parts := make([]int32, 0, len(want))
	for p := range want {
		parts = append(parts, p)
	}
	if got := c.Committed(t, group, topic, parts...); !equalOffsets(got, want) {
		t.Errorf("committed offsets of %s in %s: got %v, want %v", group, topic, got, want)
	}
}

func equalOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for p, o := range a {
		if bo, ok := b[p]; !ok || bo != o {
			return false
		}
	}
	return true
}

// produce writes n records to each of the topic's partitions, after what
// earlier calls wrote: the record at offset o of partition p has key
// "topic/p/o", value "value-topic-p-o" and a timestamp derived from both.
// It returns the records as the input should deliver them.
func produce(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32, from, n int64) []shipper.Record {
	t.Helper()
	var msgs []kafkatest.Message
	var want []shipper.Record
	for p := range partitions {
		for o := from; o < from+n; o++ {
			rec := shipper.Record{
				Topic:     topic,
				Partition: p,
				Offset:    o,
				Key:       fmt.Appendf(nil, "%s/%d/%d", topic, p, o),
				Value:     fmt.Appendf(nil, "value-%s-%d-%d", topic, p, o),
				Time:      time.UnixMilli(1_700_000_000_000 + int64(p)*1_000_000 + o),
			}
			if o%2 == 0 { // headers, in order, repeated keys kept
				rec.Headers = []shipper.Header{{Key: "trace", Value: fmt.Appendf(nil, "%d", o)}, {Key: "trace", Value: []byte("x")}}
			}
			want = append(want, rec)
			msgs = append(msgs, kafkatest.Message{Topic: topic, Partition: p, Key: rec.Key, Value: rec.Value,
				Headers: rec.Headers, Time: rec.Time})
		}
	}
	got := c.Produce(t, msgs...)
	for i, off := range got {
		if off != want[i].Offset {
			t.Fatalf("produce %s/%d: offset %d, want %d", want[i].Topic, want[i].Partition, off, want[i].Offset)
		}
	}
	return want
}

// checkRecords checks that got holds exactly the records of want, each once,
// and per partition in offset order.
func checkRecords(t *testing.T, got, want []shipper.Record) {
	t.Helper()
	byTP := func(rs []shipper.Record) map[shipper.TopicPartition][]shipper.Record {
		m := map[shipper.TopicPartition][]shipper.Record{}
		for _, r := range rs {
			m[r.TP()] = append(m[r.TP()], r)
		}
		return m
	}
	gotTP, wantTP := byTP(got), byTP(want)
	for tp, w := range wantTP {
		g := gotTP[tp]
		if len(g) != len(w) {
			t.Errorf("%s: got %d records (offsets %v), want %d (offsets %v)", tp, len(g), offsets(g), len(w), offsets(w))
			continue
		}
		for i := range w {
			if !sameRecord(g[i], w[i]) {
				t.Errorf("%s: record %d: got %s, want %s", tp, i, describe(g[i]), describe(w[i]))
			}
		}
	}
	for tp, g := range gotTP {
		if _, ok := wantTP[tp]; !ok {
			t.Errorf("%s: got %d unexpected records (offsets %v)", tp, len(g), offsets(g))
		}
	}
}

func sameRecord(a, b shipper.Record) bool {
	return a.Topic == b.Topic && a.Partition == b.Partition && a.Offset == b.Offset &&
		bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) && a.Time.Equal(b.Time) &&
		fmt.Sprintf("%q", a.Headers) == fmt.Sprintf("%q", b.Headers)
}

func describe(r shipper.Record) string {
	return fmt.Sprintf("{%s/%d@%d key=%q value=%q headers=%q time=%s}", r.Topic, r.Partition, r.Offset, r.Key, r.Value,
		r.Headers, r.Time.UTC().Format(time.RFC3339Nano))
}

func offsets(rs []shipper.Record) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Offset
	}
	return out
}

func tp(topic string, partition int32) shipper.TopicPartition {
	return shipper.TopicPartition{Topic: topic, Partition: partition}
}

// TestInputConsumesEveryRecordOnceInOrder: every record of every partition of
// every subscribed topic reaches the sink exactly once, in offset order per
// partition, with its topic, partition, offset, key, value and timestamp;
// records produced while the input runs arrive too.
func TestInputConsumesEveryRecordOnceInOrder(t *testing.T) {
	t.Parallel()
	const parts = 3
	c := kafkatest.NewCluster(t, parts, "app", "audit", "ignored")
	want := append(produce(t, c, "app", parts, 0, 20), produce(t, c, "audit", parts, 0, 20)...)
	produce(t, c, "ignored", parts, 0, 5) // not subscribed

	sink := kafkatest.NewSink()
	in := start(t, testConfig(t, c, "g1", "app", "audit"), sink, kafkatest.NewWatermarks(nil))
	in.waitAssigned(t, 2*parts)

	// Records produced while the input runs.
	want = append(want, produce(t, c, "app", parts, 20, 10)...)
	want = append(want, produce(t, c, "audit", parts, 20, 10)...)
	sink.WaitFor(t, waitTimeout, "every record appended", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	in.stop(t)

	checkRecords(t, sink.Records(), want)
	if got := in.Consumed(); got != int64(len(want)) {
		t.Errorf("Consumed() = %d, want %d", got, len(want))
	}
	if got := in.Assigned(); len(got) != 0 {
		t.Errorf("Assigned() after Run returned = %v, want none", got)
	}
}

// TestInputCommitsWatermarks: the input commits, for the partitions it owns,
// exactly the watermark it is given, once a commit interval has passed; it
// leaves partitions without a watermark and partitions it does not own
// alone, and never moves a committed offset backwards.
func TestInputCommitsWatermarks(t *testing.T) {
	t.Parallel()
	const group = "g-commits"
	c := kafkatest.NewCluster(t, 3, "logs", "other")
	produce(t, c, "logs", 3, 0, 20)
	produce(t, c, "other", 3, 0, 20)

	// logs/2 has no watermark: it stays at its start offset, committed
	// when it was assigned. other/0 is not subscribed, so never owned.
	marks := kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{
		tp("logs", 0):  7,
		tp("logs", 1):  12,
		tp("other", 0): 9,
	})
	sink := kafkatest.NewSink()
	in := start(t, testConfig(t, c, group, "logs"), sink, marks)
	in.waitAssigned(t, 3)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 7, 1: 12, 2: 0})

	// A few more commits: logs/2 must stay at 0, other/0 uncommitted.
	marks.WaitCalls(t, 3, waitTimeout)
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 7, 1: 12, 2: 0})
	checkCommitted(t, c, group, "other", map[int32]int64{0: -1, 1: -1, 2: -1})

	// Raising a watermark commits it.
	marks.Set(tp("logs", 0), 15)
	marks.Set(tp("logs", 2), 3)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 15, 1: 12, 2: 3})

	// Lowering one never rewinds the committed offset, not even at the
	// final commit.
	marks.Set(tp("logs", 0), 10)
	marks.Set(tp("logs", 1), 0)
	marks.WaitCalls(t, 3, waitTimeout)
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 15, 1: 12, 2: 3})
	in.stop(t)
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 15, 1: 12, 2: 3})
	checkCommitted(t, c, group, "other", map[int32]int64{0: -1, 1: -1, 2: -1})
}

// TestInputNeverCommitsBelowAssignedOffset: a member that joins a group with
// committed offsets treats them as committed: a lower watermark (say, of a
// buffer still holding older records of a previous assignment) is not
// committed, a higher one is.
func TestInputNeverCommitsBelowAssignedOffset(t *testing.T) {
	t.Parallel()
	const group = "g-baseline"
	c := kafkatest.NewCluster(t, 2, "logs")
	produce(t, c, "logs", 2, 0, 20)

	first := start(t, testConfig(t, c, group, "logs"), kafkatest.NewSink(),
		kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{tp("logs", 0): 10, tp("logs", 1): 10}))
	first.waitAssigned(t, 2)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 10, 1: 10})
	first.stop(t)

	marks := kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{tp("logs", 0): 4, tp("logs", 1): 11})
	second := start(t, testConfig(t, c, group, "logs"), kafkatest.NewSink(), marks)
	second.waitAssigned(t, 2)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 10, 1: 11})
	marks.WaitCalls(t, 3, waitTimeout)
	second.stop(t)
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 10, 1: 11})
}

// TestInputBackPressure: while the sink is full, each partition reader waits
// in Append with its next record, makes no further Append call and drops
// nothing; once the sink has room, the remaining records follow, each once
// and in order.
func TestInputBackPressure(t *testing.T) {
	t.Parallel()
	const parts, perPart, limit = 2, 50, 10
	c := kafkatest.NewCluster(t, parts, "logs")
	want := produce(t, c, "logs", parts, 0, perPart)

	sink := kafkatest.NewSink()
	sink.SetLimit(limit)
	marks := kafkatest.NewWatermarks(nil)
	in := start(t, testConfig(t, c, "g-backpressure", "logs"), sink, marks)
	in.waitAssigned(t, parts)

	full := kafkatest.SinkState{Records: limit, Calls: limit + fetchLoops, Waiting: fetchLoops}
	sink.WaitFor(t, waitTimeout, "sink full, the fetch loop waiting", func(s kafkatest.SinkState) bool { return s.Waiting == fetchLoops })
	// Let the input run a while (several commit intervals) while the sink
	// stays full: nothing may change.
	marks.WaitCalls(t, 5, waitTimeout)
	if got := sink.State(); got != full {
		t.Fatalf("sink while full: %+v, want %+v", got, full)
	}
	if got := in.Consumed(); got != limit {
		t.Errorf("Consumed() while full = %d, want %d", got, limit)
	}

	// Room for 30 more: fetching goes on and blocks again.
	sink.SetLimit(limit + 30)
	sink.WaitFor(t, waitTimeout, "sink full again", func(s kafkatest.SinkState) bool { return s.Records == limit+30 && s.Waiting == fetchLoops })
	marks.WaitCalls(t, 3, waitTimeout)
	if got, want := sink.State(), (kafkatest.SinkState{Records: limit + 30, Calls: limit + 30 + fetchLoops, Waiting: fetchLoops}); got != want {
		t.Fatalf("sink while full again: %+v, want %+v", got, want)
	}

	sink.SetLimit(-1)
	sink.WaitFor(t, waitTimeout, "every record appended", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	in.stop(t)
	checkRecords(t, sink.Records(), want)
	if got := in.Consumed(); got != int64(len(want)) {
		t.Errorf("Consumed() = %d, want %d", got, len(want))
	}
}

// TestInputStopFetching: after StopFetching the input appends nothing more,
// even as new records arrive, but keeps its partitions and keeps committing
// raised watermarks; cancelling Run's context then returns promptly after a
// final commit of the latest watermarks.
func TestInputStopFetching(t *testing.T) {
	t.Parallel()
	const group, parts = "g-stop", 2
	c := kafkatest.NewCluster(t, parts, "logs")
	want := produce(t, c, "logs", parts, 0, 20)

	sink := kafkatest.NewSink()
	marks := kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{tp("logs", 0): 5})
	in := start(t, testConfig(t, c, group, "logs"), sink, marks)
	in.waitAssigned(t, parts)
	sink.WaitFor(t, waitTimeout, "every record appended", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 5, 1: 0})

	in.StopFetching()
	produce(t, c, "logs", parts, 20, 10)

	marks.Set(tp("logs", 0), 12)
	marks.Set(tp("logs", 1), 15)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 12, 1: 15})
	marks.WaitCalls(t, 5, waitTimeout) // several fetch waits long
	if got, want := sink.State(), (kafkatest.SinkState{Records: len(want), Calls: len(want)}); got != want {
		t.Errorf("sink after StopFetching: %+v, want %+v", got, want)
	}
	if got := in.Assigned(); len(got) != parts {
		t.Errorf("Assigned() after StopFetching = %v, want %d partitions", got, parts)
	}

	// Set right before cancelling: the final commit must catch these even
	// if the commit loop does not.
	marks.Set(tp("logs", 0), 18)
	marks.Set(tp("logs", 1), 20)
	in.stop(t)
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 18, 1: 20})
	checkRecords(t, sink.Records(), want)
}

// TestInputStopFetchingWhileSinkFull: StopFetching releases readers waiting
// in Append; the records they were offering are not appended when the sink
// gets room later.
func TestInputStopFetchingWhileSinkFull(t *testing.T) {
	t.Parallel()
	const parts, limit = 2, 6
	c := kafkatest.NewCluster(t, parts, "logs")
	produce(t, c, "logs", parts, 0, 20)

	sink := kafkatest.NewSink()
	sink.SetLimit(limit)
	marks := kafkatest.NewWatermarks(nil)
	in := start(t, testConfig(t, c, "g-stop-full", "logs"), sink, marks)
	in.waitAssigned(t, parts)
	sink.WaitFor(t, waitTimeout, "the fetch loop waiting", func(s kafkatest.SinkState) bool { return s.Waiting == fetchLoops })

	in.StopFetching()
	sink.WaitFor(t, waitTimeout, "waiting appends abandoned", func(s kafkatest.SinkState) bool { return s.Waiting == 0 })
	sink.SetLimit(-1)
	marks.WaitCalls(t, 5, waitTimeout)
	if got, want := sink.State(), (kafkatest.SinkState{Records: limit, Calls: limit + fetchLoops}); got != want {
		t.Errorf("sink after StopFetching: %+v, want %+v", got, want)
	}
	if got := in.Consumed(); got != limit {
		t.Errorf("Consumed() = %d, want %d", got, limit)
	}
}

// TestInputFinalCommit: with a commit interval too long to tick during the
// test, nothing but the start offsets is committed while the input runs,
// and cancelling Run's
// context commits the latest watermarks before Run returns.
func TestInputFinalCommit(t *testing.T) {
	t.Parallel()
	const group = "g-final"
	c := kafkatest.NewCluster(t, 2, "logs")
	want := produce(t, c, "logs", 2, 0, 10)

	cfg := testConfig(t, c, group, "logs")
	cfg.CommitInterval = time.Hour
	sink := kafkatest.NewSink()
	marks := kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{tp("logs", 0): 3})
	in := start(t, cfg, sink, marks)
	in.waitAssigned(t, 2)
	sink.WaitFor(t, waitTimeout, "every record appended", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	// Only the start offsets, committed when the partitions were assigned.
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 0, 1: 0})

	marks.Set(tp("logs", 0), 8)
	marks.Set(tp("logs", 1), 10)
	in.stop(t)
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 8, 1: 10})
}

// TestInputRestartsFromCommittedOffsets: a new member of the group starts
// each partition at the offset the previous member committed: records below
// it are not appended again, records from it on are, each once and in order.
func TestInputRestartsFromCommittedOffsets(t *testing.T) {
	t.Parallel()
	const group, parts = "g-restart", 3
	c := kafkatest.NewCluster(t, parts, "logs")
	all := produce(t, c, "logs", parts, 0, 10)

	// logs/2 is never committed, so it starts from the earliest record.
	committed := map[shipper.TopicPartition]int64{tp("logs", 0): 4, tp("logs", 1): 10}
	sink1 := kafkatest.NewSink()
	first := start(t, testConfig(t, c, group, "logs"), sink1, kafkatest.NewWatermarks(committed))
	first.waitAssigned(t, parts)
	sink1.WaitFor(t, waitTimeout, "every record appended", func(s kafkatest.SinkState) bool { return s.Records >= len(all) })
	first.stop(t)
	checkRecords(t, sink1.Records(), all)
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 4, 1: 10, 2: 0})

	more := produce(t, c, "logs", parts, 10, 5)
	var want []shipper.Record
	for _, r := range append(all, more...) {
		if from, ok := committed[r.TP()]; !ok || r.Offset >= from {
			want = append(want, r)
		}
	}
	sink2 := kafkatest.NewSink()
	second := start(t, testConfig(t, c, group, "logs"), sink2, kafkatest.NewWatermarks(nil))
	second.waitAssigned(t, parts)
	sink2.WaitFor(t, waitTimeout, "records from the committed offsets appended", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	second.stop(t)
	checkRecords(t, sink2.Records(), want)
}

// TestInputSinkErrorRestartsFromCommitted: when the sink fails a record, the
// input ends the generation; the group rejoins and the partition is read
// again from its committed offset, so the failed record and those after it
// are appended again and nothing is skipped.
func TestInputSinkErrorRestartsFromCommitted(t *testing.T) {
	t.Parallel()
	const group = "g-sink-error"
	c := kafkatest.NewCluster(t, 1, "logs")
	first := produce(t, c, "logs", 1, 0, 10)

	// The sink fills up at offset 6; once offset 4 is committed, it fails
	// that record.
	sink := kafkatest.NewSink()
	sink.SetLimit(6)
	marks := kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{tp("logs", 0): 4})
	in := start(t, testConfig(t, c, group, "logs"), sink, marks)
	in.waitAssigned(t, 1)
	sink.WaitFor(t, waitTimeout, "sink full", func(s kafkatest.SinkState) bool { return s.Waiting == 1 })
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 4})
	sink.FailOnce(tp("logs", 0), 6, errors.New("disk on fire"))
	sink.SetLimit(-1)

	// 0..5, then the failure at 6, then 4..9 again after the rejoin.
	want := append(first[:6:6], first[4:]...)
	sink.WaitFor(t, joinTimeout, "records re-read after the failure", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	in.stop(t)
	got := sink.Records()
	if len(got) != len(want) {
		t.Fatalf("appended offsets %v, want %v", offsets(got), offsets(want))
	}
	for i := range want {
		if !sameRecord(got[i], want[i]) {
			t.Errorf("record %d: got %s, want %s", i, describe(got[i]), describe(want[i]))
		}
	}
}

// TestInputRebalanceCommitsOnlyOwnedPartitions: when a second member joins,
// the partitions are split; each member then commits only the partitions it
// owns, whatever watermarks it still reports for the ones it lost, so it
// cannot rewind the new owner's commits.
func TestInputRebalanceCommitsOnlyOwnedPartitions(t *testing.T) {
	t.Parallel()
	const group = "g-rebalance"
	c := kafkatest.NewCluster(t, 2, "logs")
	produce(t, c, "logs", 2, 0, 30)

	marksA := kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{tp("logs", 0): 5, tp("logs", 1): 5})
	a := start(t, testConfig(t, c, group, "logs"), kafkatest.NewSink(), marksA)
	a.waitAssigned(t, 2)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 5, 1: 5})

	marksB := kafkatest.NewWatermarks(nil)
	b := start(t, testConfig(t, c, group, "logs"), kafkatest.NewSink(), marksB)
	waitUntil(t, joinTimeout, "partitions split between the members", func() bool {
		return len(a.Assigned()) == 1 && len(b.Assigned()) == 1
	})
	kept, lost := a.Assigned()[0], b.Assigned()[0]
	if kept == lost {
		t.Fatalf("both members own %s", kept)
	}

	// B owns lost now and commits beyond A's commit; A's stale, higher
	// watermark for it must not be committed, nor a stale lower one.
	marksB.Set(lost, 8)
	marksA.Set(lost, 20)
	marksA.Set(kept, 7)
	want := map[int32]int64{kept.Partition: 7, lost.Partition: 8}
	waitCommitted(t, c, group, "logs", want)
	marksA.Set(lost, 6)
	marksA.WaitCalls(t, 3, waitTimeout)
	marksB.WaitCalls(t, 3, waitTimeout)
	checkCommitted(t, c, group, "logs", want)

	a.stop(t)
	checkCommitted(t, c, group, "logs", want)
	b.stop(t)
	checkCommitted(t, c, group, "logs", want)
}

// TestInputStopWhileSinkFull: cancelling Run's context while every reader
// waits in Append returns promptly; the waiting Appends are abandoned and no
// Append happens after Run returned.
func TestInputStopWhileSinkFull(t *testing.T) {
	t.Parallel()
	const parts, limit = 3, 4
	c := kafkatest.NewCluster(t, parts, "logs")
	produce(t, c, "logs", parts, 0, 10)

	sink := kafkatest.NewSink()
	sink.SetLimit(limit)
	in := start(t, testConfig(t, c, "g-stop-full-run", "logs"), sink, kafkatest.NewWatermarks(nil))
	in.waitAssigned(t, parts)
	sink.WaitFor(t, waitTimeout, "the fetch loop waiting", func(s kafkatest.SinkState) bool { return s.Waiting == fetchLoops })
	in.stop(t)
	after := sink.State()
	if want := (kafkatest.SinkState{Records: limit, Calls: limit + fetchLoops}); after != want {
		t.Errorf("sink when Run returned: %+v, want %+v", after, want)
	}
	sink.SetLimit(-1)
	time.Sleep(200 * time.Millisecond) // two fetch waits
	if got := sink.State(); got != after {
		t.Errorf("sink changed after Run returned: %+v, then %+v", after, got)
	}
}

// TestInputStartOffsetLatest: with start_offset "latest", a partition the
// group never committed starts at its end, and one it committed starts at
// the committed offset.
func TestInputStartOffsetLatest(t *testing.T) {
	t.Parallel()
	const group = "g-latest"
	c := kafkatest.NewCluster(t, 2, "logs")
	old := produce(t, c, "logs", 2, 0, 10)

	// Commit logs/0 at 3; logs/1 stays uncommitted.
	c.Commit(t, group, "logs", map[int32]int64{0: 3})

	cfg := testConfig(t, c, group, "logs")
	cfg.StartOffset = "latest"
	sink := kafkatest.NewSink()
	in := start(t, cfg, sink, kafkatest.NewWatermarks(nil))
	in.waitAssigned(t, 2)
	// "latest" resolved for logs/1 is committed at once, before anything
	// is delivered: a restart now would not resolve it again past
	// records that arrive meanwhile.
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 3, 1: 10})
	// When logs/1's reader resolves "latest" is not observable: produce
	// to it until a record arrives.
	deadline := time.Now().Add(waitTimeout)
	for {
		c.Produce(t, kafkatest.Message{Topic: "logs", Partition: 1, Value: []byte("new")})
		if slices.ContainsFunc(sink.Records(), func(r shipper.Record) bool { return r.Partition == 1 }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record of logs/1 appended within %s", waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sink.WaitFor(t, waitTimeout, "logs/0 from 3", func(kafkatest.SinkState) bool {
		n := 0
		for _, r := range sink.Records() {
			if r.Partition == 0 {
				n++
			}
		}
		return n >= 7
	})
	in.stop(t)

	var p0, p1 []shipper.Record
	for _, r := range sink.Records() {
		if r.Partition == 0 {
			p0 = append(p0, r)
		} else {
			p1 = append(p1, r)
		}
	}
	var want0 []shipper.Record
	for _, r := range old {
		if r.Partition == 0 && r.Offset >= 3 {
			want0 = append(want0, r)
		}
	}
	checkRecords(t, p0, want0)
	// logs/1: no old record, and from the first record on, every later
	// one in order.
	if len(p1) == 0 || p1[0].Offset < 10 {
		t.Fatalf("logs/1 offsets %v: want only offsets from 10 on", offsets(p1))
	}
	for i, r := range p1 {
		if want := p1[0].Offset + int64(i); r.Offset != want {
			t.Fatalf("logs/1 offsets %v: want consecutive offsets", offsets(p1))
		}
	}
}

// TestInputPicksUpTopicCreatedLater: an agent started before its topic
// exists joins the group with nothing to read; once the topic appears it
// must rebalance and consume it, not idle forever.
func TestInputPicksUpTopicCreatedLater(t *testing.T) {
	t.Parallel()
	const parts = 2
	c := kafkatest.NewCluster(t, parts) // no topics yet
	cfg := testConfig(t, c, "g-late", "late")
	cfg.TopicRefreshInterval = 200 * time.Millisecond
	sink := kafkatest.NewSink()
	in := start(t, cfg, sink, kafkatest.NewWatermarks(nil))
	waitUntil(t, joinTimeout, "joined the group, with no partitions to read", in.Joined)
	if n := len(in.Assigned()); n != 0 {
		t.Fatalf("%d partitions assigned before the topic exists", n)
	}
	c.CreateTopic(t, "late", parts)
	want := produce(t, c, "late", parts, 0, 5)
	in.waitAssigned(t, parts)
	sink.WaitFor(t, waitTimeout, "records of the late topic appended", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	in.stop(t)
	checkRecords(t, sink.Records(), want)
}

// TestInputResumesAfterBufferedRecords: after a restart the sink already
// holds records past the committed offset; reading starts after them, while
// the commit floor stays the committed offset. A resume offset beyond the
// partition's end is ignored, and so is one of a partition without a
// committed offset (new to the group, or of a topic created again: what the
// sink holds may be of the old topic).
func TestInputResumesAfterBufferedRecords(t *testing.T) {
	t.Parallel()
	c := kafkatest.NewCluster(t, 3, "logs")
	all := produce(t, c, "logs", 3, 0, 10)
	c.Commit(t, "g-resume", "logs", map[int32]int64{0: 2, 1: 0})
	marks := kafkatest.NewWatermarks(nil)
	marks.SetResume(tp("logs", 0), 6)   // the sink holds logs/0 from 2 up to 5
	marks.SetResume(tp("logs", 1), 500) // beyond the end: ignored
	marks.SetResume(tp("logs", 2), 3)   // no committed offset: ignored
	sink := kafkatest.NewSink()
	in := start(t, testConfig(t, c, "g-resume", "logs"), sink, marks)
	in.waitAssigned(t, 3)
	var want []shipper.Record
	for _, r := range all {
		if r.Partition != 0 || r.Offset >= 6 {
			want = append(want, r)
		}
	}
	sink.WaitFor(t, waitTimeout, "records after the resume offsets", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
	marks.Set(tp("logs", 0), 10)
	marks.WaitCalls(t, marks.Calls()+2, waitTimeout)
	in.stop(t)
	checkRecords(t, sink.Records(), want)
	checkCommitted(t, c, "g-resume", "logs", map[int32]int64{0: 10, 1: 0, 2: 0})
}
