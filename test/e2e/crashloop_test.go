//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// killPoint is what was going on when one agent of the crash loop was
// killed.
type killPoint struct {
	ran      time.Duration // from exec to SIGKILL
	joined   bool          // the agent owned partitions
	consumed int64         // records this agent had read from Kafka
	indexed  int64         // documents this agent had indexed
	onDisk   int64         // records in stored chunks
	produced int64         // records Kafka had acknowledged
	inES     int           // documents in the index after the kill
}

// TestCrashLoop: an agent killed with SIGKILL over and over at random
// moments, while records keep arriving, never loses or duplicates a
// record. Every run reuses the data directory left by the killed one, so
// the buffer must survive kill -9 at any point: before the agent joined
// the group, while it reads, while chunks are being written, while bulk
// requests are in flight, between delivery and commit. A last agent then
// delivers the rest, and the index holds each record exactly once.
func TestCrashLoop(t *testing.T) {
	const (
		partitions = 4
		n          = 80_000
		batch      = 1_000
		kills      = 24
		// The loop starts on a backlog, as when an agent is restarted
		// over and over after an outage; the rest of the records arrive
		// over about as long as the loop lasts.
		backlog = 30_000
		pace    = time.Second
	)
	// A killed member stays in the group until its session expires, and
	// the next agent's join waits for that: 1s sessions keep the loop fast.
	requireShortSessions(t, time.Second)
	topic := newTopic(t, partitions)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		SessionTimeout: "1s", HeartbeatInterval: "250ms"}

	var produced atomic.Int64
	produceErr := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		<-produceErr
	})
	go func() {
		w := loggen.Writer(stack.KafkaBrokers, topic)
		defer w.Close()
		for from := 0; from < n; from += batch {
			if err := loggen.Produce(ctx, w, from, batch); err != nil {
				produceErr <- err
				return
			}
			produced.Store(int64(from + batch))
			if from+batch < backlog {
				continue
			}
			select {
			case <-ctx.Done():
				produceErr <- ctx.Err()
				return
			case <-time.After(pace):
			}
		}
		produceErr <- nil
	}()

	seed := uint64(time.Now().UnixNano())
	rnd := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("random seed %d", seed)
	var points []killPoint
	for i := range kills {
		// The agent lives 300ms to 3s from exec to SIGKILL. Some lives
		// are cut short, most of those before the new member has joined
		// the group; the rest run long enough to read, write chunks and
		// deliver.
		life := 800*time.Millisecond + time.Duration(rnd.Int64N(int64(2200*time.Millisecond)))
		if rnd.IntN(4) == 0 {
			life = 300*time.Millisecond + time.Duration(rnd.Int64N(int64(300*time.Millisecond)))
		}
		started := time.Now()
		a := startAgent(t, o)
		time.Sleep(time.Until(started.Add(life)))
		a.requireRunning("during the crash loop")
		st := a.stats()
		p := killPoint{ran: time.Since(started), joined: len(st.Assigned) > 0, consumed: st.Consumed,
			indexed: st.Output.Indexed, onDisk: st.Buffer.DiskRecords, produced: produced.Load()}
		a.kill()
		p.inES = esCount(t, o.Index)
		points = append(points, p)
		t.Logf("kill %2d after %5s: joined=%-5v consumed %6d, indexed %6d, %6d on disk; index holds %6d of %6d produced",
			i+1, p.ran.Round(time.Millisecond), p.joined, p.consumed, p.indexed, p.onDisk, p.inES, p.produced)
		select {
		case err := <-produceErr:
			produceErr <- err
			if err != nil {
				t.Fatalf("producing: %v", err)
			}
		default:
		}
	}

	var beforeJoin, midDelivery, behind, missing int
	var copies float64 // worst ratio of records in the buffer to records in Kafka
	for _, p := range points {
		if !p.joined {
			beforeJoin++
		}
		if p.indexed > 0 && int64(p.inES) < p.produced {
			midDelivery++
		}
		if int64(p.inES) < p.produced {
			behind++
		}
		if p.inES < n {
			missing++
		}
		copies = max(copies, float64(p.onDisk)/float64(max(p.produced, 1)))
	}
	t.Logf("%d kills: %d while records were still missing from the index, %d while it lacked records Kafka already held, "+
		"%d before the agent owned partitions, %d after it had indexed documents with more to deliver; "+
		"at worst the buffer held %.1f× the records Kafka held", len(points), missing, behind, beforeJoin, midDelivery, copies)
	if missing < len(points)/2 {
		t.Fatalf("only %d of %d kills happened while records were still missing from the index: the loop proved little", missing, len(points))
	}

	select {
	case err := <-produceErr:
		produceErr <- err
		if err != nil {
			t.Fatalf("producing: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("producing did not finish within 2 minutes after the loop")
	}
	a := startAgent(t, o)
	waitFor(t, 3*time.Minute, "all records indexed after the crash loop", func() (bool, string) {
		n2 := esCount(t, o.Index)
		return n2 >= n, fmt.Sprintf("%d of %d indexed", n2, n)
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	st := a.stats()
	t.Logf("last agent: consumed %d, indexed %d, %d already indexed (replays), %d dead letters, %d quarantined chunks",
		st.Consumed, st.Output.Indexed, st.Output.Duplicates, st.Buffer.DeadLetters, st.Buffer.Quarantined)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
}
