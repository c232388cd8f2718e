//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// TestDatedIndicesAcrossMidnightWithKill: an index pattern with the
// event's date, records whose Kafka timestamps cross midnight UTC, and a
// SIGKILL half-way. Every record is indexed exactly once, in the index of
// its own day: the replay after the kill routes each record again to the
// same index, under the same id.
func TestDatedIndicesAcrossMidnightWithKill(t *testing.T) {
	const partitions, n = 2, 20000
	topic := newTopic(t, partitions)
	midnight := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		// Half before midnight, half after, a millisecond apart.
		msgs[i] = kafka.Message{Value: fmt.Appendf(nil, `{"seq":%d}`, i), Time: midnight.Add(time.Duration(i-n/2) * time.Millisecond)}
	}
	w := loggen.Writer(stack.KafkaBrokers, topic)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < n; i += 1000 {
		if err := loggen.Write(ctx, w, msgs[i:i+1000]); err != nil {
			t.Fatal(err)
		}
	}
	before, after := topic+"-2026.11.29", topic+"-2026.11.30"
	o := agentOpts{Topic: topic, Group: topic, Index: topic + "-{+yyyy.MM.dd}", DataDir: t.TempDir(),
		ChunkSize: "64KiB", FlushInterval: "50ms"}
	a := startAgent(t, o)
	waitFor(t, time.Minute, "some documents indexed", func() (bool, string) {
		got := esCount(t, before) + esCount(t, after)
		return got >= 1000, fmt.Sprintf("%d documents", got)
	})
	a.kill()
	killedAt := esCount(t, before) + esCount(t, after)
	a = startAgent(t, o)
	defer a.stop(20 * time.Second)
	waitCommittedAtEnd(t, topic, topic, partitions)
	for _, c := range []struct {
		index, query string
	}{
		{before, fmt.Sprintf(`{"range":{"seq":{"lt":%d}}}`, n/2)},
		{after, fmt.Sprintf(`{"range":{"seq":{"gte":%d}}}`, n/2)},
	} {
		total, _ := seqCount(t, c.index, `{"match_all":{}}`)
		inDay, distinct := seqCount(t, c.index, c.query)
		if total != n/2 || inDay != n/2 || distinct != n/2 {
			t.Errorf("index %s: %d documents, %d of its day, %d distinct seq numbers; want %d of each (killed at %d indexed)",
				c.index, total, inDay, distinct, n/2, killedAt)
		}
	}
	t.Logf("killed at %d of %d documents indexed", killedAt, n)
}
