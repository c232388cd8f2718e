//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// TestBulkSplitsOn413: Elasticsearch (here a front with
// http.max_content_length at 256 KiB) refuses the agent's 1 MiB bulk
// requests with 413. The agent splits them until they fit, learns a
// smaller limit, and dead-letters the one record that is too large alone,
// naming its size; every other record is indexed exactly once and the
// group commits the end of every partition.
func TestBulkSplitsOn413(t *testing.T) {
	const (
		partitions = 2
		n          = 12000 // loggen records, seq 0..n-1: 2.8 MB, three chunks
		limit      = 256 << 10
	)
	front := newESFront(t)
	front.maxContentLength(limit)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n/2)
	big := fmt.Appendf(nil, `{"seq":%d,"blob":%q}`, n, strings.Repeat("a", 300<<10))
	bigOffset := produceAt(t, topic, 0, big)
	bigID := docID(t, topic, 0, bigOffset)
	produce(t, topic, n/2, n-n/2)

	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ESURL: front.URL, ESExtra: `max_bulk_bytes = "8MiB"`}
	a := startAgent(t, o)
	waitFor(t, time.Minute, "every record indexed or dead-lettered", func() (bool, string) {
		a.requireRunning("while requests were refused with 413")
		st := a.stats()
		got := esCount(t, o.Index)
		return got >= n && st.Buffer.DeadLetters >= 1,
			fmt.Sprintf("%d of %d indexed, %d dead letters, %d refused with 413", got, n, st.Buffer.DeadLetters, front.tooLarge.Load())
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)

	st := a.stats()
	t.Logf("%d requests refused with 413; bulk limit learned: %d bytes; %d indexed, %d dead-lettered",
		front.tooLarge.Load(), st.Output.BulkLimit, st.Output.Indexed, st.Output.DeadLettered)
	if front.tooLarge.Load() == 0 {
		t.Error("the front refused no request with 413: the test proved nothing")
	}
	// The output learns from each refusal (half the refused size, lower
	// again if refused again), so refusals stop early: without learning,
	// each of the three chunks (bulk bodies of about 1.3 MB) would be
	// refused 7 times on its way down to pieces under 256 KiB.
	if st.Output.BulkLimit <= 0 || st.Output.BulkLimit >= 8<<20 {
		t.Errorf("output.bulk_limit_bytes = %d, want a limit learned below max_bulk_bytes", st.Output.BulkLimit)
	}
	if n := front.tooLarge.Load(); n > 8 {
		t.Errorf("%d requests refused with 413: the output did not learn the limit", n)
	}
	if st.Buffer.DeadLetters != 1 {
		t.Errorf("buffer.dead_letters = %d, want 1", st.Buffer.DeadLetters)
	}
	dead := a.deadLetters()
	if len(dead) != 1 {
		t.Fatalf("the dead-letter store holds %d entries, want 1: %+v", len(dead), dead)
	}
	d := dead[0]
	requireDeadLetterOf(t, d, topic, 0, bigOffset, big)
	if d.Type != "request_too_large" {
		t.Errorf("dead letter type %q, want request_too_large; reasons %q", d.Type, d.Reasons)
	}
	m := regexp.MustCompile(`document of (\d+) bytes`).FindStringSubmatch(strings.Join(d.Reasons, "\n"))
	if m == nil {
		t.Errorf("the reasons do not name the document's size: %q", d.Reasons)
	} else if size, _ := strconv.Atoi(m[1]); size < len(big) || size > len(big)+100 {
		t.Errorf("the reason names a document of %d bytes; the record's value has %d: %q", size, len(big), d.Reasons)
	}
	if d.Size != len(big) {
		t.Errorf("dead letter size %d, want %d", d.Size, len(big))
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n+1, bigID)
}

// TestDocumentFailing500Forever: Elasticsearch answers one document with its
// own 500 every time. The agent sends it max_item_attempts (3) times, then
// dead-letters it with every reason seen and says it gave up; the other
// records are indexed exactly once and the commits reach the end.
func TestDocumentFailing500Forever(t *testing.T) {
	const (
		partitions = 2
		n          = 2000
		attempts   = 3
	)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	const victimOffset = 500
	victim := docID(t, topic, 1, victimOffset)
	front := newESFront(t)
	front.failDocument(victim, 500, "illegal_state_exception")

	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ESURL: front.URL, ESExtra: fmt.Sprintf("max_item_attempts = %d", attempts)}
	a := startAgent(t, o)
	waitFor(t, time.Minute, "every other record indexed and the failing one dead-lettered", func() (bool, string) {
		a.requireRunning("while a document kept failing")
		st := a.stats()
		got := esCount(t, o.Index)
		return got >= n-1 && st.Buffer.DeadLetters >= 1,
			fmt.Sprintf("%d of %d indexed, %d dead letters, the document answered 500 %d times",
				got, n-1, st.Buffer.DeadLetters, front.failures(victim))
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)

	dead := a.deadLetters()
	if len(dead) != 1 {
		t.Fatalf("the dead-letter store holds %d entries, want 1: %+v", len(dead), dead)
	}
	d := dead[0]
	// Round-robin decides which record landed at the victim's offset: the
	// dead letter must hold one of them, byte for byte.
	seq := -1
	for i := range n {
		if string(loggen.Record(i)) == d.Value {
			seq = i
			break
		}
	}
	if seq < 0 {
		t.Fatalf("the dead letter's value is none of the records produced: %.300s", d.Value)
	}
	requireDeadLetterOf(t, d, topic, 1, victimOffset, loggen.Record(seq))
	reasons := strings.Join(d.Reasons, "\n")
	if d.Type != "illegal_state_exception" || !strings.Contains(reasons, "illegal_state_exception") ||
		!strings.Contains(reasons, fmt.Sprintf("gave up after %d attempts", attempts)) {
		t.Errorf("dead letter type %q, reasons %q; want illegal_state_exception and \"gave up after %d attempts\"",
			d.Type, d.Reasons, attempts)
	}
	if d.Attempts != attempts {
		t.Errorf("dead letter attempts = %d, want %d", d.Attempts, attempts)
	}
	a.stop(30 * time.Second)
	if got := front.failures(victim); got != attempts {
		t.Errorf("the front answered the document with 500 %d times, want %d (max_item_attempts)", got, attempts)
	}
	assertExactlyOnce(t, o.Index, topic, partitions, n, victim)
}

// TestHeldOn401: the agent's password is wrong. Delivery is held: health
// says so (503, "held", the 401), nothing is indexed, dead-lettered or
// committed, and the agent keeps running and retrying. The operator sets
// the cluster's password to the one the agent has and asks for a flush:
// every record is indexed exactly once, health is back to 200 and the
// commits reach the end. The password never appears in the agent's log.
func TestHeldOn401(t *testing.T) {
	const (
		partitions = 2
		n          = 400
		secret     = "wrong-password-SECRET123"
	)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	front := newESFront(t)
	front.requireBasicAuth("shipper", "right-password")
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: front.URL,
		ESExtra: "username = \"shipper\"\n  password = env(\"ES_PASSWORD\")", Env: []string{"ES_PASSWORD=" + secret}}
	a := startAgent(t, o)

	waitFor(t, 30*time.Second, "health says delivery is held on 401", func() (bool, string) {
		a.requireRunning("while its password was wrong")
		code, held, reason, body := heldHealth(a)
		return code == http.StatusServiceUnavailable && held && strings.Contains(reason, "401"), fmt.Sprintf("%d %s", code, body)
	})
	_, _, reason, _ := heldHealth(a)
	t.Logf("held: %s", reason)
	// Held stays held: retried every retry_max_backoff (2s), never given up.
	refused := front.unauthorized.Load()
	time.Sleep(5 * time.Second)
	a.requireRunning("while its password was wrong")
	st := a.stats()
	if st.Output.Held == nil || !strings.Contains(st.Output.Held.Reason, "401") {
		t.Errorf("/api/status output.held = %+v, want a 401 reason", st.Output.Held)
	}
	if st.Buffer.DeadLetters != 0 || st.Output.DeadLettered != 0 {
		t.Errorf("%d dead letters while held: a wrong password is not the documents' fault", st.Buffer.DeadLetters)
	}
	if got := esCount(t, o.Index); got != 0 {
		t.Errorf("%d documents indexed with a wrong password", got)
	}
	for p, off := range committedOffsets(t, o.Group, topic, partitions) {
		if off > 0 {
			t.Errorf("partition %d: committed offset %d while nothing was delivered", p, off)
		}
	}
	if front.unauthorized.Load() == refused {
		t.Errorf("no request reached the front in 5s while held: the agent stopped retrying")
	}
	if code, held, _, body := heldHealth(a); code != http.StatusServiceUnavailable || !held {
		t.Errorf("health after 5s held: %d %s", code, body)
	}
	t.Logf("while held: %d requests refused with 401, consumed %d", front.unauthorized.Load(), st.Consumed)

	// The operator changes the cluster's password to the agent's.
	front.requireBasicAuth("shipper", secret)
	var flushed struct {
		Done  bool   `json:"done"`
		Error string `json:"error"`
	}
	if code := a.getJSON("POST", "/api/flush?wait=60s", &flushed); code != http.StatusOK || !flushed.Done {
		t.Fatalf("flush after the password was fixed: %d %+v", code, flushed)
	}
	if got := esCount(t, o.Index); got != n {
		t.Errorf("%d of %d documents indexed after the flush", got, n)
	}
	if code, held, _, body := heldHealth(a); code != http.StatusOK || held {
		t.Errorf("health after the password was fixed: %d %s", code, body)
	}
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)

	log, err := os.ReadFile(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(log, []byte(secret)); i >= 0 {
		line := log[bytes.LastIndexByte(log[:i], '\n')+1:]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		t.Errorf("the agent logged its password: %s", line)
	}
}

// produceAt writes one record to a partition and returns its offset. The
// test must be the topic's only producer meanwhile.
func produceAt(t *testing.T, topic string, partition int, value []byte) int64 {
	t.Helper()
	offset := endOffsets(t, topic, partition+1)[partition]
	w := loggen.Writer(stack.KafkaBrokers, topic)
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return partition })
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := loggen.Write(ctx, w, []kafka.Message{{Value: value}}); err != nil {
		t.Fatal(err)
	}
	if end := endOffsets(t, topic, partition+1)[partition]; end != offset+1 {
		t.Fatalf("partition %d grew from %d to %d records for one record", partition, offset, end)
	}
	return offset
}

// requireDeadLetterOf fails unless the dead letter is the record at
// topic/partition@offset with exactly this value.
func requireDeadLetterOf(t *testing.T, d deadLetterLine, topic string, partition int32, offset int64, value []byte) {
	t.Helper()
	if d.Topic != topic || d.Partition != partition || d.Offset != offset {
		t.Fatalf("dead letter of %s/%d@%d, want %s/%d@%d", d.Topic, d.Partition, d.Offset, topic, partition, offset)
	}
	if d.Value != string(value) {
		t.Fatalf("the dead letter's value (%d bytes) is not the record's (%d bytes): %.200s", len(d.Value), len(value), d.Value)
	}
}

// TestBulkOverIndexingPressure: a bulk request larger than the node's
// indexing-pressure limit (10% of its heap: 51.2 MiB on the stack's node)
// is refused with a 429 that no retry of the same request can pass. The
// agent splits it, as for a 413, and learns a smaller bulk limit; every
// record is indexed once.
func TestBulkOverIndexingPressure(t *testing.T) {
	const n = 120 // records of 512 KiB: 60 MiB in one chunk and, at first, one request
	topic := topicName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := loggen.CreateTopicWith(ctx, stack.KafkaBrokers, topic, 1, map[string]string{"max.message.bytes": fmt.Sprint(16 << 20)}); err != nil {
		t.Fatal(err)
	}
	createIndex(t, topic, `{"properties":{"blob":{"type":"text","index":false}}}`)
	values := make([][]byte, n)
	for i := range values {
		values[i] = fmt.Appendf(nil, `{"seq":%d,"blob":"%s"}`, i, strings.Repeat("b", 512<<10))
	}
	produceJSON(t, topic, values, 8<<20)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ChunkSize: "64MiB", MemoryLimit: "256MiB", FlushInterval: "1h",
		ESExtra: `max_bulk_bytes = "64MiB"`}
	a := startAgent(t, o)
	waitFor(t, time.Minute, "every record in the open chunk", func() (bool, string) {
		st := a.stats()
		return st.Consumed == n, fmt.Sprintf("consumed %d", st.Consumed)
	})
	var res struct {
		Done  bool   `json:"done"`
		Error string `json:"error"`
	}
	if code := a.getJSON("POST", "/api/flush?wait=2m", &res); code != 200 || !res.Done {
		t.Fatalf("flush: %d %+v", code, res)
	}
	st := a.stats()
	t.Logf("bulk limit learned: %d bytes; %d indexed, %d dead letters", st.Output.BulkLimit, st.Output.Indexed, st.Buffer.DeadLetters)
	if st.Output.BulkLimit >= 64<<20 || st.Buffer.DeadLetters != 0 {
		t.Fatalf("status after the flush: bulk limit %d, %d dead letters", st.Output.BulkLimit, st.Buffer.DeadLetters)
	}
	waitCommittedAtEnd(t, o.Group, topic, 1)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, 1, n)
}
