//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// seqCount returns how many documents of the index match the query (JSON)
// and how many distinct values of "seq" they hold, counted exactly (the
// cardinality aggregation is approximate), a sorted page at a time.
func seqCount(t *testing.T, index, query string) (total, distinct int) {
	t.Helper()
	esDo(t, "POST", "/"+index+"/_refresh", nil, nil)
	last, after := int64(-1), ""
	for {
		var res struct {
			Hits struct {
				Total struct {
					Value int `json:"value"`
				} `json:"total"`
				Hits []struct {
					Sort []int64 `json:"sort"`
				} `json:"hits"`
			} `json:"hits"`
		}
		esDo(t, "POST", "/"+index+"/_search", strings.NewReader(`{"size":10000,"_source":false,"track_total_hits":true,"query":`+query+
			`,"sort":[{"seq":"asc"}]`+after+`}`), &res)
		total = res.Hits.Total.Value
		for _, h := range res.Hits.Hits {
			if len(h.Sort) == 1 && h.Sort[0] != last {
				distinct++
				last = h.Sort[0]
			}
		}
		if len(res.Hits.Hits) < 10000 {
			return total, distinct
		}
		after = fmt.Sprintf(`,"search_after":[%d]`, last)
	}
}

// TestKafkaTransactions: committed and aborted transactions interleaved
// with plain records on 3 partitions, produced by a real transactional
// producer. Exactly the committed and plain records are indexed, once
// each; no aborted record and no transaction marker becomes a document;
// the group's offsets are committed at the end of every partition, past
// the markers.
func TestKafkaTransactions(t *testing.T) {
	const partitions, rounds, perTxn = 3, 4, 30
	topic := newTopic(t, partitions)
	index := topic
	plain := franzClient(t)
	txn := franzClient(t, kgo.TransactionalID(topic+"-txn"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	seq, want := 0, 0
	records := func(kind string) []*kgo.Record {
		var out []*kgo.Record
		for i := range perTxn {
			out = append(out, &kgo.Record{Topic: topic, Partition: int32(i % partitions),
				Value: fmt.Appendf(nil, `{"seq":%d,"kind":%q}`, seq, kind)})
			seq++
		}
		return out
	}
	inTxn := func(kind string, commit bool) {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(ctx, records(kind)...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		if commit {
			want += perTxn
		}
	}
	for range rounds {
		inTxn("committed", true)
		inTxn("aborted", false)
		if err := plain.ProduceSync(ctx, records("plain")...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		want += perTxn
	}

	a := startAgent(t, agentOpts{Topic: topic, Group: topic, Index: index, DataDir: t.TempDir()})
	defer a.stop(20 * time.Second)
	waitFor(t, time.Minute, fmt.Sprintf("%d documents", want), func() (bool, string) {
		n := esCount(t, index)
		return n >= want, fmt.Sprintf("%d documents", n)
	})
	waitCommittedAtEnd(t, topic, topic, partitions)
	if n := esCount(t, index); n != want {
		t.Fatalf("%d documents, want %d (committed and plain records)", n, want)
	}
	// Every document is a committed or plain record: none aborted, none
	// without a kind (a marker's NUL bytes), and as many distinct seq
	// numbers as documents (none twice).
	if total, seqs := seqCount(t, index, `{"terms":{"kind.keyword":["committed","plain"]}}`); total != want || seqs != want {
		t.Fatalf("%d committed or plain documents with %d distinct seq numbers, want %d of each", total, seqs, want)
	}
	if m := agentMetrics(a); m.get(t, "shipper_input_filtered_records_total") < rounds*perTxn {
		t.Errorf("shipper_input_filtered_records_total = %v, want at least the %d aborted records", m.get(t, "shipper_input_filtered_records_total"), rounds*perTxn)
	}
}

// TestKafkaRecordsDeletedBeforeRead: records removed from a partition
// (kafka-delete-records) while the agent was stopped, below its committed
// offset. On restart the gap is in the dead-letter store (type
// offset_gap, with its first offset and count) and in the metric, it is
// logged at error level, the rest is indexed, and the commits pass the gap.
func TestKafkaRecordsDeletedBeforeRead(t *testing.T) {
	topic := newTopic(t, 1)
	index := topic
	w := loggen.Writer(stack.KafkaBrokers, topic)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := loggen.Produce(ctx, w, 0, 100); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := agentOpts{Topic: topic, Group: topic, Index: index, DataDir: dir}
	a := startAgent(t, opts)
	waitFor(t, time.Minute, "100 documents", func() (bool, string) {
		n := esCount(t, index)
		return n == 100, fmt.Sprintf("%d documents", n)
	})
	waitCommittedAtEnd(t, topic, topic, 1)
	a.stop(20 * time.Second)

	if err := loggen.Produce(ctx, w, 100, 100); err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = 0, 150
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics, req.TimeoutMillis = append(req.Topics, rt), 10_000
	resp, err := req.RequestWith(ctx, franzClient(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode); err != nil {
		t.Fatalf("delete records: %v", err)
	}

	a = startAgent(t, opts)
	defer a.stop(20 * time.Second)
	waitFor(t, time.Minute, "150 documents", func() (bool, string) {
		n := esCount(t, index)
		return n >= 150, fmt.Sprintf("%d documents", n)
	})
	waitCommittedAtEnd(t, topic, topic, 1)
	if n := esCount(t, index); n != 150 {
		t.Fatalf("%d documents, want 150 (100 read before, 50 after the gap)", n)
	}
	var gaps []deadLetterLine
	for _, d := range a.deadLetters() {
		if d.Type == "offset_gap" {
			gaps = append(gaps, d)
		}
	}
	if len(gaps) != 1 || gaps[0].Topic != topic || gaps[0].Partition != 0 || gaps[0].Offset != 100 ||
		len(gaps[0].Reasons) == 0 || !strings.Contains(gaps[0].Reasons[0], "50 records missing (offsets 100 to 149)") {
		t.Fatalf("offset gaps in the dead-letter store: %+v, want one from offset 100, 50 records", gaps)
	}
	if got := agentMetrics(a).get(t, "shipper_input_skipped_records_total", "partition", "0", "topic", topic); got != 50 {
		t.Errorf("shipper_input_skipped_records_total = %v, want 50", got)
	}
	if line := a.lastLogLine("kafka records skipped"); !strings.Contains(line, `"level":"ERROR"`) || !strings.Contains(line, `"count":50`) {
		t.Errorf("log line for the gap: %q, want an error with the count", line)
	}
	// A replay has nothing to send for a gap: the entry stays.
	a.cli("dlq", "replay")
	if n := len(a.deadLetters()); n != 1 {
		t.Errorf("%d dead letters after a replay, want the gap's entry to stay", n)
	}
}

// TestKafkaTopicRecreated: a topic deleted and created again under the
// same name while the agent reads it. The new topic's offsets start at 0
// again, but its records carry another topic id in their document ids, so
// none is taken for an already indexed record of the old topic: both
// topics' records are indexed, each exactly once.
func TestKafkaTopicRecreated(t *testing.T) {
	const partitions, first, second = 2, 400, 300
	topic := newTopic(t, partitions)
	index := topic
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seqs := func(from, n int) [][]byte {
		var out [][]byte
		for i := from; i < from+n; i++ {
			out = append(out, fmt.Appendf(nil, `{"seq":%d}`, i))
		}
		return out
	}
	produceJSON(t, topic, seqs(0, first), 0)
	a := startAgent(t, agentOpts{Topic: topic, Group: topic, Index: index, DataDir: t.TempDir(),
		KafkaExtra: `topic_refresh_interval = "1s"`})
	defer a.stop(20 * time.Second)
	waitFor(t, time.Minute, fmt.Sprintf("%d documents", first), func() (bool, string) {
		n := esCount(t, index)
		return n == first, fmt.Sprintf("%d documents", n)
	})

	if err := loggen.DeleteTopic(ctx, stack.KafkaBrokers, topic); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the topic created again", func() (bool, string) {
		err := loggen.CreateTopic(ctx, stack.KafkaBrokers, topic, partitions)
		return err == nil, fmt.Sprint(err)
	})
	produceJSON(t, topic, seqs(first, second), 0)
	want := first + second
	waitFor(t, time.Minute, fmt.Sprintf("%d documents", want), func() (bool, string) {
		n := esCount(t, index)
		return n >= want, fmt.Sprintf("%d documents", n)
	})
	waitCommittedAtEnd(t, topic, topic, partitions)
	if total, seqs := seqCount(t, index, `{"match_all":{}}`); total != want || seqs != want {
		t.Fatalf("%d documents with %d distinct seq numbers, want %d of each", total, seqs, want)
	}
}

// TestKafkaKeyedTopicMirror: with document_id = "key" and tombstones =
// "delete", a keyed topic is mirrored: one document per live key, holding
// its latest record, with the record's offset as its version; keys whose
// last record is a tombstone have none. A second agent in another group
// reading the whole topic again from the start (older records of every
// key, and their tombstones, delivered once more) changes nothing: the
// real node refuses each older record (409, counted as a duplicate).
func TestKafkaKeyedTopicMirror(t *testing.T) {
	const partitions, keys, versions, deleted = 2, 10, 3, 3
	topic := newTopic(t, partitions)
	index := topic
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var recs []*kgo.Record
	for v := 1; v <= versions; v++ {
		for k := range keys {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(k % partitions), Key: fmt.Appendf(nil, "key-%d", k),
				Value: fmt.Appendf(nil, `{"key":"key-%d","v":%d}`, k, v)})
		}
	}
	for k := range deleted {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(k % partitions), Key: fmt.Appendf(nil, "key-%d", k)})
	}
	if err := franzClient(t).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		var res struct {
			Hits struct {
				Hits []struct {
					ID      string `json:"_id"`
					Version int64  `json:"_version"`
					Source  struct {
						Key string `json:"key"`
						V   int    `json:"v"`
					} `json:"_source"`
				} `json:"hits"`
			} `json:"hits"`
		}
		esDo(t, "POST", "/"+index+"/_refresh", nil, nil)
		esDo(t, "POST", "/"+index+"/_search", strings.NewReader(`{"size":100,"version":true}`), &res)
		if len(res.Hits.Hits) != keys-deleted {
			t.Fatalf("%s: %d documents, want %d (one per key not deleted): %+v", when, len(res.Hits.Hits), keys-deleted, res.Hits.Hits)
		}
		for _, h := range res.Hits.Hits {
			var k int
			fmt.Sscanf(h.Source.Key, "key-%d", &k)
			// Each partition holds keys/partitions keys; the last
			// version of key k is at offset 2×(keys/partitions) + k/2.
			last := int64(2*(keys/partitions) + k/partitions)
			if h.Source.V != versions || !strings.HasSuffix(h.ID, "-"+h.Source.Key) || h.Version != last {
				t.Fatalf("%s: document %s = %+v version %d, want the key's last record (v%d, offset %d)", when, h.ID, h.Source, h.Version, versions, last)
			}
		}
	}
	extra := `document_id = "key"
  tombstones  = "delete"`
	a := startAgent(t, agentOpts{Topic: topic, Group: topic, Index: index, DataDir: t.TempDir(), ESExtra: extra})
	waitCommittedAtEnd(t, topic, topic, partitions)
	a.stop(20 * time.Second)
	check("after the first agent")

	again := startAgent(t, agentOpts{Topic: topic, Group: topic + "-again", Index: index, DataDir: t.TempDir(), ESExtra: extra})
	defer again.stop(20 * time.Second)
	waitCommittedAtEnd(t, topic+"-again", topic, partitions)
	check("after every record was delivered again")
	// Refused as older than the document: versions 1 and 2 of the live
	// keys, and every version of the deleted ones (the node remembers a
	// delete's version for index.gc_deletes, 60 s).
	wantDup := float64((keys-deleted)*(versions-1) + deleted*versions)
	if got := agentMetrics(again).get(t, "shipper_output_documents_total", "outcome", "duplicate"); got != wantDup {
		t.Errorf("second pass: %v documents refused as older, want %v", got, wantDup)
	}
}
