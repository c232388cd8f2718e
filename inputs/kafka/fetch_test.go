package kafka_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/inputs/kafka"
	"github.com/shipper-agent/shipper/inputs/kafka/kafkatest"
)

// deliverAll marks every record in the sink delivered, as the buffer's
// watermarks would once Elasticsearch has them: the offset after each
// partition's last record.
func deliverAll(sink *kafkatest.Sink, marks *kafkatest.Watermarks) {
	for _, r := range sink.Records() {
		marks.Set(r.TP(), r.Offset+1)
	}
}

// TestInputTransactions: committed and aborted transactions interleaved with
// plain records on two partitions. Under read_committed the sink gets the
// plain and committed records only; under read_uncommitted the aborted ones
// too; never a control record (the transaction markers). Either way the
// committed offsets reach the end of every partition, past the markers.
func TestInputTransactions(t *testing.T) {
	t.Parallel()
	for _, isolation := range []string{"read_committed", "read_uncommitted"} {
		t.Run(isolation, func(t *testing.T) {
			t.Parallel()
			group := "g-txn-" + isolation
			c := kafkatest.NewCluster(t, 2, "logs")
			var want []string
			step := func(kind string, commit bool) {
				var msgs []kafkatest.Message
				for p := range int32(2) {
					for i := range 3 {
						msgs = append(msgs, kafkatest.Message{Topic: "logs", Partition: p, Value: fmt.Appendf(nil, "%s-%d-%d", kind, p, i)})
					}
				}
				switch kind {
				case "plain":
					c.Produce(t, msgs...)
				default:
					c.ProduceTxn(t, commit, msgs...)
				}
				if commit || kind == "plain" || isolation == "read_uncommitted" {
					for _, m := range msgs {
						want = append(want, string(m.Value))
					}
				}
			}
			step("plain", true)
			step("committed1", true)
			step("aborted1", false)
			step("plain2", true)
			step("aborted2", false)
			step("committed2", true)

			cfg := testConfig(t, c, group, "logs")
			cfg.IsolationLevel = isolation
			sink := kafkatest.NewSink()
			marks := kafkatest.NewWatermarks(nil)
			in := start(t, cfg, sink, marks)
			in.waitAssigned(t, 2)
			sink.WaitFor(t, waitTimeout, "every wanted record", func(s kafkatest.SinkState) bool { return s.Records >= len(want) })
			deliverAll(sink, marks)
			end := c.EndOffsets(t, "logs", 0, 1)
			waitCommitted(t, c, group, "logs", end)
			in.stop(t)

			var got []string
			for _, r := range sink.Records() {
				if len(r.Value) == 0 || strings.ContainsRune(string(r.Value), 0) {
					t.Fatalf("a control record reached the sink: %s", describe(r))
				}
				got = append(got, string(r.Value))
			}
			// Per partition order is Kafka's; compare as sets of values
			// with their counts, and per partition in order.
			if len(got) != len(want) {
				t.Fatalf("sink holds %d records, want %d:\n got %q\nwant %q", len(got), len(want), got, want)
			}
			seen := map[string]int{}
			for _, v := range got {
				seen[v]++
			}
			for _, v := range want {
				if seen[v] != 1 {
					t.Fatalf("record %q appended %d times, want once; got %q", v, seen[v], got)
				}
			}
			if st := in.Stats(); st.Filtered == 0 {
				t.Errorf("Stats().Filtered = 0, want the markers (and aborted records) counted: %+v", st)
			}
		})
	}
}

// TestInputNullAndEmptyValues: a tombstone (null value) reaches the sink as
// a nil Value, an empty value as an empty, non-nil one.
func TestInputNullAndEmptyValues(t *testing.T) {
	t.Parallel()
	c := kafkatest.NewCluster(t, 1, "logs")
	c.Produce(t,
		kafkatest.Message{Topic: "logs", Key: []byte("k"), Value: nil},
		kafkatest.Message{Topic: "logs", Key: []byte("k"), Value: []byte{}},
		kafkatest.Message{Topic: "logs", Value: []byte("line")})
	sink := kafkatest.NewSink()
	in := start(t, testConfig(t, c, "g-null", "logs"), sink, kafkatest.NewWatermarks(nil))
	in.waitAssigned(t, 1)
	sink.WaitFor(t, waitTimeout, "three records", func(s kafkatest.SinkState) bool { return s.Records >= 3 })
	recs := sink.Records()
	if recs[0].Value != nil {
		t.Errorf("tombstone: Value = %q, want nil", recs[0].Value)
	}
	if recs[1].Value == nil || len(recs[1].Value) != 0 {
		t.Errorf("empty value: Value = %#v, want empty and non-nil", recs[1].Value)
	}
	if string(recs[2].Value) != "line" {
		t.Errorf("third record: %s", describe(recs[2]))
	}
}

// TestInputOffsetOutOfRange: records removed below the group's committed
// offset before they were read are a gap: reported to the sink (which
// stores it with the dead letters) with its bounds and counted; reading
// resumes at the log start, and the commits then pass the gap.
func TestInputOffsetOutOfRange(t *testing.T) {
	t.Parallel()
	const group = "g-gap"
	c := kafkatest.NewCluster(t, 1, "logs")
	all := produce(t, c, "logs", 1, 0, 10)
	c.Commit(t, group, "logs", map[int32]int64{0: 2})
	c.DeleteRecords(t, "logs", 0, 6)

	sink := kafkatest.NewSink()
	marks := kafkatest.NewWatermarks(nil)
	in := start(t, testConfig(t, c, group, "logs"), sink, marks)
	in.waitAssigned(t, 1)
	sink.WaitFor(t, waitTimeout, "records after the gap", func(s kafkatest.SinkState) bool { return s.Records >= 4 })
	checkRecords(t, sink.Records(), all[6:])
	gaps := sink.Gaps()
	if len(gaps) != 1 {
		t.Fatalf("gaps = %+v, want one", gaps)
	}
	if g := gaps[0]; g.Topic != "logs" || g.Partition != 0 || g.From != 2 || g.To != 6 || !strings.Contains(g.Reason, "removed") {
		t.Errorf("gap = %+v, want logs/0 from 2 to 6 with a reason", g)
	}
	if got := in.Stats().Skipped["logs/0"]; got != 4 {
		t.Errorf("Stats().Skipped[logs/0] = %d, want 4", got)
	}
	deliverAll(sink, marks)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 10})
}

// TestInputCommitsBeforeRevoke: with a commit interval too long to tick, a
// member whose partitions move to a new member commits what it delivered
// before giving them up, so the new member starts there and nothing
// delivered is read twice.
func TestInputCommitsBeforeRevoke(t *testing.T) {
	t.Parallel()
	const group, parts = "g-revoke", 2
	c := kafkatest.NewCluster(t, parts, "logs")
	all := produce(t, c, "logs", parts, 0, 10)

	cfg := testConfig(t, c, group, "logs")
	cfg.CommitInterval = time.Hour
	sink1 := kafkatest.NewSink()
	marks1 := kafkatest.NewWatermarks(nil)
	first := start(t, cfg, sink1, marks1)
	first.waitAssigned(t, parts)
	sink1.WaitFor(t, waitTimeout, "every record", func(s kafkatest.SinkState) bool { return s.Records >= len(all) })
	deliverAll(sink1, marks1)

	sink2 := kafkatest.NewSink()
	second := start(t, cfg, sink2, kafkatest.NewWatermarks(nil))
	waitUntil(t, joinTimeout, "one partition each", func() bool {
		return len(first.Assigned()) == 1 && len(second.Assigned()) == 1
	})
	// The revoke commit, not a periodic one: the interval is an hour.
	checkCommitted(t, c, group, "logs", map[int32]int64{0: 10, 1: 10})
	time.Sleep(3 * cfg.FetchMaxWait)
	if n := sink2.State().Records; n != 0 {
		t.Errorf("the new member appended %d records already delivered", n)
	}
}

// TestInputStatus: Stats reports each assigned partition's position,
// committed offset, end and lag.
func TestInputStatus(t *testing.T) {
	t.Parallel()
	const group = "g-status"
	c := kafkatest.NewCluster(t, 2, "logs")
	produce(t, c, "logs", 2, 0, 10)
	sink := kafkatest.NewSink()
	marks := kafkatest.NewWatermarks(map[shipper.TopicPartition]int64{tp("logs", 0): 4})
	in := start(t, testConfig(t, c, group, "logs"), sink, marks)
	in.waitAssigned(t, 2)
	sink.WaitFor(t, waitTimeout, "every record", func(s kafkatest.SinkState) bool { return s.Records >= 20 })
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 4, 1: 0})
	var st kafka.Stats
	waitUntil(t, waitTimeout, "status of both partitions", func() bool {
		st = in.Stats()
		return len(st.Partitions) == 2 && st.Partitions[0].Committed == 4
	})
	if st.Generation <= 0 || st.MemberID == "" || st.Records != 20 || st.Fetches == 0 {
		t.Errorf("Stats() = %+v", st)
	}
	p0 := st.Partitions[0]
	if p0.Topic != "logs" || p0.Partition != 0 || p0.Position != 10 || p0.HighWatermark != 10 || p0.Lag != 6 || p0.Delivered != 4 || p0.Error != "" {
		t.Errorf("logs/0 status = %+v, want position 10, end 10, committed 4, delivered 4, lag 6", p0)
	}
	if p1 := st.Partitions[1]; p1.Committed != 0 || p1.Lag != 10 || p1.Delivered != -1 {
		t.Errorf("logs/1 status = %+v, want committed 0, lag 10, delivered unknown (-1)", p1)
	}
}

// TestInputTopicRecreated: a topic deleted and created again under the
// same name while the input reads it. Its records restart at offset 0;
// they carry another topic id than the old topic's, so their document ids
// differ from those of the old records at the same offsets, and every
// record of both topics reaches the sink once.
func TestInputTopicRecreated(t *testing.T) {
	t.Parallel()
	const group = "g-recreated"
	c := kafkatest.NewCluster(t, 1, "logs")
	old := produce(t, c, "logs", 1, 0, 5)
	cfg := testConfig(t, c, group, "logs")
	cfg.TopicRefreshInterval = 200 * time.Millisecond
	sink := kafkatest.NewSink()
	marks := kafkatest.NewWatermarks(nil)
	in := start(t, cfg, sink, marks)
	in.waitAssigned(t, 1)
	sink.WaitFor(t, waitTimeout, "the old topic's records", func(s kafkatest.SinkState) bool { return s.Records >= len(old) })
	deliverAll(sink, marks)
	waitCommitted(t, c, group, "logs", map[int32]int64{0: 5})

	c.DeleteTopic(t, "logs")
	c.CreateTopic(t, "logs", 1)
	fresh := produce(t, c, "logs", 1, 0, 3)
	sink.WaitFor(t, waitTimeout, "the new topic's records", func(s kafkatest.SinkState) bool { return s.Records >= len(old)+len(fresh) })
	in.stop(t)
	got := sink.Records()
	checkRecords(t, got, append(old, fresh...))
	before, after := got[0].TopicID, got[len(old)].TopicID
	if before == "" || after == "" || before == after {
		t.Fatalf("topic ids %q (old) and %q (new): want two different ones", before, after)
	}
	ids := map[string]bool{}
	for _, r := range got {
		if ids[r.DocumentID()] {
			t.Fatalf("document id %s given twice", r.DocumentID())
		}
		ids[r.DocumentID()] = true
	}
}
