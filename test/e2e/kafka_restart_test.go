//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

// TestKafkaBrokerRestart: records arrive on three partitions while an
// agent consumes them; half-way the broker is restarted (SIGTERM, a
// controlled shutdown, a start on the same data and ports) while the agent
// still has records to deliver and offsets to commit, and the other half
// arrives after. The agent keeps running, rejoins its group (its commits
// fail until then), reads the rest, and every record is indexed exactly
// once, with the end of every partition committed and health back to ok.
//
// Production pauses over the restart itself: the test producer is not
// idempotent, and a batch whose acknowledgement died with the broker
// would be written twice.
func TestKafkaBrokerRestart(t *testing.T) {
	const (
		partitions = 3
		n          = 24_000
		step       = 1_000
		pace       = 100 * time.Millisecond
		restartAt  = 12_000 // produced records
	)
	t.Cleanup(func() {
		// Later tests need the broker: say loudly if this one left it down.
		st, err := stacktest.Status(context.Background())
		if err != nil || !st.Kafka.Healthy {
			t.Errorf("the broker is not healthy after the test (%v): %s; run test/e2e/stack up", err, st)
		}
	})
	topic := newTopic(t, partitions)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir()}

	// The producer holds pause while it writes a slice; the test takes it
	// for the restart.
	var pause sync.Mutex
	var produced atomic.Int64
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		w := loggen.Writer(stack.KafkaBrokers, topic)
		defer w.Close()
		for from := 0; from < n; from += step {
			pause.Lock()
			err := loggen.Produce(ctx, w, from, step)
			pause.Unlock()
			if err != nil {
				done <- err
				return
			}
			produced.Store(int64(from + step))
			time.Sleep(pace)
		}
		done <- nil
	}()

	a := startAgent(t, o)
	waitFor(t, time.Minute, fmt.Sprintf("%d records produced and the agent indexing", restartAt), func() (bool, string) {
		p, indexed := produced.Load(), a.stats().Output.Indexed
		return p >= restartAt && indexed > 0, fmt.Sprintf("%d produced, %d indexed", p, indexed)
	})
	pause.Lock()
	// The last slice was just written: the agent has records to read.
	before := a.stats()
	t.Logf("restarting the broker at %d produced, %d consumed, %d indexed", produced.Load(), before.Consumed, before.Output.Indexed)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err := stacktest.RestartKafka(ctx, testLog{t})
	cancel()
	pause.Unlock()
	if err != nil {
		t.Fatalf("restarting the broker: %v", err)
	}
	// The test's own kafka-go clients share kafka-go's default transport,
	// whose pooled connections the restart broke: the first request on
	// one answers "unexpected EOF".
	kafka.DefaultTransport.(*kafka.Transport).CloseIdleConnections()
	a.requireRunning("after the broker restart")
	after := a.stats()
	t.Logf("broker back: %d consumed, %d indexed", after.Consumed, after.Output.Indexed)

	if err := <-done; err != nil {
		t.Fatalf("producing: %v", err)
	}
	waitIndexed(t, a, o.Index, n, 2*time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	a.requireRunning("after the broker restart")
	waitFor(t, 30*time.Second, "health ok after the restart", func() (bool, string) {
		code, body := a.health()
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
	b, _ := os.ReadFile(a.logPath)
	t.Logf("agent log: %d warnings, %d errors", strings.Count(string(b), `"level":"WARN"`), strings.Count(string(b), `"level":"ERROR"`))
}

// testLog writes stack progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
