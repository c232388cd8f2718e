//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// produceJSON writes the values to the topic (round-robin over its
// partitions) and returns once Kafka has them all.
func produceJSON(t *testing.T, topic string, values [][]byte, batchBytes int64) {
	t.Helper()
	w := loggen.Writer(stack.KafkaBrokers, topic)
	if batchBytes > 0 {
		w.BatchBytes = batchBytes
	}
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Value: v}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for len(msgs) > 0 {
		n := min(len(msgs), 1000)
		if err := loggen.Write(ctx, w, msgs[:n]); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// createIndex creates an index with one shard, no replica and the given
// mappings (JSON).
func createIndex(t *testing.T, index, mappings string) {
	t.Helper()
	body := `{"settings":{"number_of_shards":1,"number_of_replicas":0},"mappings":` + mappings + `}`
	if status := esDo(t, "PUT", "/"+index, strings.NewReader(body), nil); status != 200 {
		t.Fatalf("create index %s: status %d", index, status)
	}
}

// TestDeadLetterReplayAfterMappingFix: 5,000 records, 2,000 of which break
// the index's strict mapping. Exactly 3,000 are indexed, exactly 2,000 are
// listed by `shipper dlq list`, and the offsets are committed to the end:
// the rejected records do not hold the partitions back. Once the mapping
// is relaxed, `shipper dlq replay` indexes the 2,000 and empties the
// store: all 5,000 records are indexed exactly once.
func TestDeadLetterReplayAfterMappingFix(t *testing.T) {
	const n, partitions = 5000, 2
	topic := newTopic(t, partitions)
	createIndex(t, topic, `{"dynamic":"strict","properties":{"@timestamp":{"type":"date"},"seq":{"type":"long"},"msg":{"type":"keyword"}}}`)
	values := make([][]byte, n)
	bad := 0
	for i := range values {
		if i%5 < 2 { // 2 in 5: a field the strict mapping refuses
			values[i] = fmt.Appendf(nil, `{"seq":%d,"msg":"order %d","extra":"not in the mapping"}`, i, i)
			bad++
		} else {
			values[i] = fmt.Appendf(nil, `{"seq":%d,"msg":"order %d"}`, i, i)
		}
	}
	produceJSON(t, topic, values, 0)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ChunkSize: "4MiB"}
	a := startAgent(t, o)
	var st agentStatus
	waitFor(t, 2*time.Minute, "every record indexed or dead-lettered", func() (bool, string) {
		st = a.stats()
		return st.Consumed == n && st.Buffer.DiskChunks == 0 && st.Buffer.OpenRecords == 0 &&
				st.Output.Indexed+st.Output.Duplicates+st.Output.DeadLettered == n,
			fmt.Sprintf("consumed %d, %d chunks left, indexed %d, dead-lettered %d", st.Consumed, st.Buffer.DiskChunks,
				st.Output.Indexed, st.Output.DeadLettered)
	})
	// Duplicates: a hedged request's loser may have indexed some first.
	if got := esCount(t, o.Index); got != n-bad || st.Output.Indexed+st.Output.Duplicates != int64(n-bad) || st.Output.DeadLettered != int64(bad) ||
		st.Buffer.DeadLetters != int64(bad) {
		t.Fatalf("%d indexed, status %+v; want %d indexed and %d dead letters", got, st.Output, n-bad, bad)
	}
	waitCommittedAtEnd(t, o.Group, topic, partitions)

	dead := a.deadLetters()
	if len(dead) != bad {
		t.Fatalf("dlq list: %d entries, want %d", len(dead), bad)
	}
	for _, d := range dead {
		var v struct {
			Seq   int    `json:"seq"`
			Extra string `json:"extra"`
		}
		if err := json.Unmarshal([]byte(d.Value), &v); err != nil || v.Extra == "" || v.Seq%5 >= 2 ||
			d.Type != "strict_dynamic_mapping_exception" || d.Attempts != 1 || d.Topic != topic ||
			!strings.Contains(strings.Join(d.Reasons, " "), "extra") {
			t.Fatalf("dead letter %+v (value %v)", d, err)
		}
	}

	// The operator relaxes the mapping, then replays.
	if status := esDo(t, "PUT", "/"+o.Index+"/_mapping", strings.NewReader(`{"dynamic":true}`), nil); status != 200 {
		t.Fatalf("relax the mapping: status %d", status)
	}
	out := a.cli("dlq", "replay")
	if !strings.Contains(out, fmt.Sprintf("re-sent %d entries: %d delivered and removed, 0 dead-lettered again", bad, bad)) {
		t.Fatalf("dlq replay said:\n%s", out)
	}
	if left := a.deadLetters(); len(left) != 0 {
		t.Fatalf("%d dead letters left after the replay", len(left))
	}
	if st := a.stats(); st.Buffer.DeadLetters != 0 {
		t.Fatalf("status after replay: %d dead letters", st.Buffer.DeadLetters)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
}

// TestLargeRecordBetweenSmallOnes: a 20 MiB record, larger than any value
// the buffer's store takes at once, among small ones on two partitions.
// The small ones flow while it is buffered; it is stored in pieces and
// indexed; nothing waits on it for good.
func TestLargeRecordBetweenSmallOnes(t *testing.T) {
	const partitions, small = 2, 400
	topic := topicName(t) // created with room for the record
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := loggen.CreateTopicWith(ctx, stack.KafkaBrokers, topic, partitions,
		map[string]string{"max.message.bytes": fmt.Sprint(32 << 20)}); err != nil {
		t.Fatal(err)
	}
	createIndex(t, topic, `{"properties":{"blob":{"type":"text","index":false}}}`)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir()}
	a := startAgent(t, o)
	values := make([][]byte, 0, small+1)
	for i := range small / 2 {
		values = append(values, fmt.Appendf(nil, `{"seq":%d,"msg":"before"}`, i))
	}
	produceJSON(t, topic, values, 0)
	big := fmt.Appendf(nil, `{"seq":%d,"blob":"%s"}`, small, strings.Repeat("x", 20<<20))
	produceJSON(t, topic, [][]byte{big}, 32<<20)
	values = values[:0]
	for i := small / 2; i < small; i++ {
		values = append(values, fmt.Appendf(nil, `{"seq":%d,"msg":"after"}`, i))
	}
	produceJSON(t, topic, values, 0)
	waitFor(t, 2*time.Minute, "every record indexed", func() (bool, string) {
		a.requireRunning("with a 20 MiB record")
		got := esCount(t, o.Index)
		return got == small+1, fmt.Sprintf("%d of %d indexed; status %+v", got, small+1, a.stats().Buffer)
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	if d := a.stats().Buffer.DeadLetters; d != 0 {
		t.Fatalf("%d dead letters", d)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, small+1)
}

// TestHeldOnWriteBlock: while the index has a write block, Elasticsearch
// refuses every document with 403 cluster_block_exception. That is the
// cluster's state, not the documents': the agent holds them (nothing is
// dead-lettered or committed), says so on /api/health, and delivers
// everything once the block is lifted and an operator flushes.
func TestHeldOnWriteBlock(t *testing.T) {
	const n = 600
	topic := newTopic(t, 1)
	createIndex(t, topic, `{}`)
	if status := esDo(t, "PUT", "/"+topic+"/_settings", strings.NewReader(`{"index.blocks.write":true}`), nil); status != 200 {
		t.Fatalf("set write block: %d", status)
	}
	produce(t, topic, 0, n)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir()}
	a := startAgent(t, o)
	var body string
	waitFor(t, time.Minute, "health to report the hold", func() (bool, string) {
		var code int
		code, body = a.health()
		return code == 503 && strings.Contains(body, "cluster_block_exception"), fmt.Sprintf("%d %s", code, body)
	})
	waitFor(t, time.Minute, "every record consumed", func() (bool, string) {
		st := a.stats()
		return st.Consumed == n, fmt.Sprintf("consumed %d", st.Consumed)
	})
	time.Sleep(3 * time.Second) // a few commit intervals and retries pass while held
	st := a.stats()
	if st.Buffer.DeadLetters != 0 || st.Output.DeadLettered != 0 || st.Output.Held == nil || esCount(t, o.Index) != 0 {
		t.Fatalf("while held: %+v, buffer %+v", st.Output, st.Buffer)
	}
	if c := committedOffsets(t, o.Group, topic, 1); c[0] > 0 {
		t.Fatalf("committed %v while every record is held", c)
	}
	a.requireRunning("while held")

	if status := esDo(t, "PUT", "/"+topic+"/_settings", strings.NewReader(`{"index.blocks.write":null}`), nil); status != 200 {
		t.Fatalf("lift write block: %d", status)
	}
	var res struct {
		Done bool `json:"done"`
	}
	if code := a.getJSON("POST", "/api/flush?wait=60s", &res); code != 200 || !res.Done {
		t.Fatalf("flush after the fix: %d %+v", code, res)
	}
	if code, body := a.health(); code != 200 {
		t.Fatalf("health after the fix: %d %s", code, body)
	}
	waitCommittedAtEnd(t, o.Group, topic, 1)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, 1, n)
}

// TestShutdownDeadlineAndSecondSignal: with Elasticsearch accepting
// connections and never answering, SIGTERM still ends the agent within
// shutdown_timeout, cleanly; and when a longer shutdown is under way, a
// second SIGTERM ends it at once. Nothing is lost: a third agent delivers
// everything once Elasticsearch answers again.
func TestShutdownDeadlineAndSecondSignal(t *testing.T) {
	const n = 2000
	topic := newTopic(t, 2)
	proxy := newESProxy(t)
	proxy.blackhole(t, "stall", "upstream")
	produce(t, topic, 0, n)
	// The start-up check hangs on the stalled node too: past its 1 s
	// bound delivery starts, and stalls.
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: proxy.URL,
		TopExtra: `shutdown_timeout = "4s"`, ESExtra: `startup_timeout = "1s"`}
	// waitStuck waits until every record is buffered (this run's or the
	// previous one's) and a send is stalled.
	waitStuck := func(a *agentProc) {
		t.Helper()
		waitFor(t, time.Minute, "records buffered and a chunk in flight", func() (bool, string) {
			st := a.stats()
			return st.Buffer.DiskRecords == n && st.Buffer.InFlightChunks > 0,
				fmt.Sprintf("%d records on disk, in flight %d", st.Buffer.DiskRecords, st.Buffer.InFlightChunks)
		})
	}

	a := startAgent(t, o)
	waitStuck(a)
	start := time.Now()
	a.stop(4*time.Second + 5*time.Second) // clean exit required
	t.Logf("SIGTERM with every send stalled: stopped in %s (shutdown_timeout 4s)", time.Since(start).Round(time.Millisecond))
	if a.lastLogLine("shipper stopped") == "" {
		t.Fatal("the agent did not log its clean stop")
	}

	o.TopExtra = `shutdown_timeout = "5m"`
	a2 := startAgent(t, o)
	waitStuck(a2)
	if err := a2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the graceful shutdown under way", func() (bool, string) {
		l := a2.lastLogLine("shutting down")
		return l != "", "no \"shutting down\" log line yet"
	})
	if ended, err := a2.exited(); ended {
		t.Fatalf("the agent exited before its 5m shutdown could drain anything: %v", err)
	}
	start = time.Now()
	if err := a2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a2.done:
		a2.done <- err
		if code := a2.cmd.ProcessState.ExitCode(); code != 3 {
			t.Fatalf("after a second SIGTERM: exit code %d (%v), want 3", code, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second SIGTERM did not end the agent within 10s")
	}
	t.Logf("second SIGTERM: exited in %s", time.Since(start).Round(time.Millisecond))
	if log, _ := os.ReadFile(a2.logPath); !strings.Contains(string(log), "second signal") {
		t.Fatalf("the agent did not say why it exited at once; log tail:\n%s", tail(string(log), 5))
	}

	proxy.removeToxic(t, "stall")
	a3 := startAgent(t, o)
	waitFor(t, 2*time.Minute, "every record indexed", func() (bool, string) {
		got := esCount(t, o.Index)
		return got >= n, fmt.Sprintf("%d indexed", got)
	})
	waitCommittedAtEnd(t, o.Group, topic, 2)
	a3.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, 2, n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
