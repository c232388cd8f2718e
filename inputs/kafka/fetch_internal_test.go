package kafka

import (
	"context"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/inputs/kafka/kafkatest"
)

// TestPartitionErrorBacksOffThatPartitionOnly: a fetch response where one
// partition fails (here: not authorised) and the other has records. The
// records are appended; the failing partition is backed off, with a
// doubling wait, while the other stays fetchable; its next good answer
// clears the error. The generation is never ended for it.
func TestPartitionErrorBacksOffThatPartitionOnly(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Topics = []string{"logs"}
	sink := kafkatest.NewSink()
	in, err := New(cfg, sink, kafkatest.NewWatermarks(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	p0, p1 := shipper.TopicPartition{Topic: "logs", Partition: 0}, shipper.TopicPartition{Topic: "logs", Partition: 1}
	gen := &kafkago.Generation{ID: 1, Assignments: map[string][]kafkago.PartitionAssignment{"logs": {{ID: 0, Offset: 0}, {ID: 1, Offset: 5}}}}
	s := newSession(in, gen, map[shipper.TopicPartition]int64{p0: 0, p1: 5})
	for _, ps := range s.parts {
		ps.leader = 1
	}
	records := func(from int64, n int) []byte {
		var rs []testRecord
		for range n {
			rs = append(rs, testRecord{value: []byte("v")})
		}
		return encodeBatch(t, from, 0, -1, 0, rs...)
	}
	answer := func(p0set []byte, p1code int16, p1set []byte) *kmsg.FetchResponse {
		res := kmsg.NewPtrFetchResponse()
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = "logs"
		for i, set := range [][]byte{p0set, p1set} {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition, rp.HighWatermark, rp.RecordBatches = int32(i), 10, set
			if i == 1 {
				rp.ErrorCode = p1code
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		res.Topics = append(res.Topics, rt)
		return res
	}
	ctx := context.Background()

	parts, _ := s.claim(1)
	if len(parts) != 2 {
		t.Fatalf("claimed %d partitions, want 2", len(parts))
	}
	if err := s.handle(ctx, parts, answer(records(0, 2), int16(kafkago.TopicAuthorizationFailed), nil)); err != nil {
		t.Fatalf("handle: %v", err)
	}
	s.release(parts)
	if n := sink.State().Records; n != 2 {
		t.Fatalf("sink holds %d records, want logs/0's 2", n)
	}
	first := s.parts[p1].retryAt
	if ps := s.parts[p1]; !strings.Contains(ps.err, "Authorization") || !first.After(time.Now()) || ps.failures != 1 || ps.next != 5 {
		t.Fatalf("logs/1 after an error: err %q, retry at %v, failures %d, next %d", ps.err, first, ps.failures, ps.next)
	}
	if s.parts[p0].next != 2 || s.parts[p0].err != "" {
		t.Fatalf("logs/0: next %d, err %q", s.parts[p0].next, s.parts[p0].err)
	}
	parts, _ = s.claim(1)
	if len(parts) != 1 || parts[0].tp != p0 {
		t.Fatalf("claimed %v while logs/1 backs off, want logs/0 only", parts)
	}
	s.release(parts)

	// A second failure doubles the wait.
	s.parts[p1].retryAt = time.Time{}
	parts, _ = s.claim(1)
	start := time.Now()
	if err := s.handle(ctx, parts, answer(nil, int16(kafkago.TopicAuthorizationFailed), nil)); err != nil {
		t.Fatal(err)
	}
	s.release(parts)
	if wait := s.parts[p1].retryAt.Sub(start); wait < 2*retryMin-10*time.Millisecond || s.parts[p1].failures != 2 {
		t.Fatalf("second failure: wait %s, failures %d; want about %s, 2", wait, s.parts[p1].failures, 2*retryMin)
	}
	if st := in.Stats(); st.PartitionErrors != 2 {
		t.Errorf("Stats().PartitionErrors = %d, want 2", st.PartitionErrors)
	}

	// The partition answers again: its records flow, the error clears.
	s.parts[p1].retryAt = time.Time{}
	parts, _ = s.claim(1)
	if err := s.handle(ctx, parts, answer(nil, 0, records(5, 3))); err != nil {
		t.Fatal(err)
	}
	s.release(parts)
	if ps := s.parts[p1]; ps.err != "" || ps.failures != 0 || ps.next != 8 {
		t.Fatalf("logs/1 after recovering: err %q, failures %d, next %d", ps.err, ps.failures, ps.next)
	}
	if n := sink.State().Records; n != 5 {
		t.Fatalf("sink holds %d records, want 5", n)
	}
}
