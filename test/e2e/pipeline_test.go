//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

const records = 100_000

// TestEveryRecordIndexedOnce: 100,000 mixed records (JSON, plain text,
// multi-line, over 10 KiB) on six partitions are all indexed exactly once,
// and the group commits the end of every partition.
func TestEveryRecordIndexedOnce(t *testing.T) {
	const partitions = 6
	topic := newTopic(t, partitions)
	large := 0
	for i := range records {
		if loggen.KindOf(i) == loggen.Large {
			large++
		}
	}
	if large < 1000 {
		t.Fatalf("only %d records over 10 KiB", large)
	}
	produce(t, topic, 0, records)

	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir()}
	a := startAgent(t, o)
	waitFor(t, 5*time.Minute, "all records indexed", func() (bool, string) {
		n := esCount(t, o.Index)
		return n >= records, fmt.Sprintf("%d indexed", n)
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	st := a.status()
	if got := st["consumed_records"].(float64); got != records {
		t.Errorf("agent consumed %v records, want %d", got, records)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, records)
}

// TestKillMidStream: the agent is killed with SIGKILL while records are
// still being produced and indexed, then started again: every record ends
// up indexed exactly once.
func TestKillMidStream(t *testing.T) {
	const partitions = 4
	topic := newTopic(t, partitions)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir()}

	produced := make(chan error, 1)
	go func() {
		// Produce in slices so the kill lands while records still arrive.
		w := loggen.Writer(stack.KafkaBrokers, topic)
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		for from := 0; from < records; from += 10_000 {
			if err := loggen.Produce(ctx, w, from, 10_000); err != nil {
				produced <- err
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		produced <- nil
	}()

	a := startAgent(t, o)
	killAt := 20_000 + rand.IntN(40_000)
	waitFor(t, 3*time.Minute, fmt.Sprintf("%d records indexed before the kill", killAt), func() (bool, string) {
		n := esCount(t, o.Index)
		return n >= killAt, fmt.Sprintf("%d indexed", n)
	})
	a.kill()
	before := esCount(t, o.Index)
	t.Logf("killed at %d indexed documents", before)
	if before >= records {
		t.Fatalf("everything was indexed before the kill; the test proved nothing")
	}

	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	a2 := startAgent(t, o)
	waitFor(t, 5*time.Minute, "all records indexed after restart", func() (bool, string) {
		n := esCount(t, o.Index)
		return n >= records, fmt.Sprintf("%d indexed", n)
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	a2.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, records)
}

// TestFlushAPI: with chunks that would never seal on their own, POST
// /api/flush?wait= seals the open chunk, delivers it and says so.
func TestFlushAPI(t *testing.T) {
	const n = 500
	topic := newTopic(t, 1)
	produce(t, topic, 0, n)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ChunkSize: "16MiB", FlushInterval: "1h"}
	a := startAgent(t, o)
	waitFor(t, time.Minute, "records consumed into the open chunk", func() (bool, string) {
		st := a.status()
		got := st["consumed_records"].(float64)
		return got == n, fmt.Sprintf("consumed %v", got)
	})
	if got := esCount(t, o.Index); got != 0 {
		t.Fatalf("%d documents indexed before the flush; the open chunk should hold them", got)
	}
	var res struct {
		Sealed    int  `json:"sealed_records"`
		Done      bool `json:"done"`
		Remaining int  `json:"remaining_records"`
	}
	status := a.getJSON("POST", "/api/flush?wait=60s", &res)
	if status != 200 || !res.Done || res.Sealed != n || res.Remaining != 0 {
		t.Fatalf("flush answered %d %+v", status, res)
	}
	if got := esCount(t, o.Index); got != n {
		t.Fatalf("%d documents indexed after the flush, want %d", got, n)
	}
	waitCommittedAtEnd(t, o.Group, topic, 1)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, 1, n)
}
