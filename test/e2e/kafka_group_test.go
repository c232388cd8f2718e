//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// TestGroupKillAddStop: three agents share a consumer group on a
// 12-partition topic while records arrive; one is killed with SIGKILL, a
// fourth joins, one is stopped with SIGTERM before the end, and the two left
// finish. Every record is indexed exactly once and the group commits the end
// of every partition.
//
// The graceful stop is also checked on its own: an agent that leaves the
// group must first commit everything it delivered, or the partitions' next
// owners deliver it again. While it stops, the other agents cannot reach
// Elasticsearch (each has its own proxy, stopped), so the index shows what
// the leaving agent delivered and nothing else: no document of its
// partitions may lie at or above the offset the group holds for them right
// after it exits.
func TestGroupKillAddStop(t *testing.T) {
	const (
		partitions = 12
		n          = 30_000
		step       = 1_000
		pace       = 400 * time.Millisecond
		session    = 3 * time.Second
	)
	requireShortSessions(t, session)
	topic := newTopic(t, partitions)
	opts := func(esURL string) agentOpts {
		return agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: esURL,
			SessionTimeout: session.String(), HeartbeatInterval: "500ms"}
	}
	proxy1, proxy4 := newESProxy(t), newESProxy(t)
	a1 := startAgent(t, opts(proxy1.URL))
	a2 := startAgent(t, opts(""))
	a3 := startAgent(t, opts(""))
	waitGroupSettled(t, topic, partitions, a1, a2, a3)

	// Production pauses at hold until the graceful stop is done, so that
	// the stop always comes before the end.
	const hold = 24_000
	p := startProducing(t, topic, n, step, pace, hold)

	waitFor(t, time.Minute, "agent 2 delivering while records arrive", func() (bool, string) {
		indexed, produced := a2.stats().Output.Indexed, p.produced.Load()
		return indexed > 0 && produced >= 6_000, fmt.Sprintf("agent 2 indexed %d, %d produced", indexed, produced)
	})
	a2.kill()
	t.Logf("agent 2 killed at %d produced, %d indexed", p.produced.Load(), esCount(t, topic))

	waitFor(t, time.Minute, "12,000 records produced", func() (bool, string) {
		return p.produced.Load() >= 12_000, fmt.Sprintf("%d produced", p.produced.Load())
	})
	a4 := startAgent(t, opts(proxy4.URL))
	waitGroupSettled(t, topic, partitions, a1, a3, a4)
	t.Logf("agent 4 joined at %d produced, %d indexed", p.produced.Load(), esCount(t, topic))

	// The graceful stop, with agents 1 and 4 cut off from Elasticsearch.
	waitFor(t, time.Minute, "18,000 records produced", func() (bool, string) {
		return p.produced.Load() >= 18_000, fmt.Sprintf("%d produced", p.produced.Load())
	})
	waitGroupSettled(t, topic, partitions, a1, a3, a4)
	proxy1.Stop()
	proxy4.Stop()
	owned := ownedPartitions(a3)
	a3.stop(30 * time.Second)
	committed := committedOffsets(t, topic, topic, partitions)
	end := endOffsets(t, topic, partitions)
	t.Logf("agent 3 stopped at %d produced; it owned partitions %v; committed %v, end %v",
		p.produced.Load(), owned, committed, end)
	for _, part := range owned {
		// Below the commit, everything is indexed: a commit never passes
		// an undelivered record (this also shows the look-up sees what
		// the index holds).
		if below := indexedFrom(t, topic, part, 0, committed[part]); int64(len(below)) != max(committed[part], 0) {
			t.Errorf("partition %d: committed %d, but the index holds only %d of the records below it",
				part, committed[part], len(below))
		}
		if beyond := indexedFrom(t, topic, part, committed[part], end[part]); len(beyond) > 0 {
			t.Errorf("partition %d: agent 3 delivered %d records at or above offset %d (%s … %s) but left the group "+
				"with %d committed: its final commit missed them, and the partition's next owner delivers them again",
				part, len(beyond), committed[part], beyond[0], beyond[len(beyond)-1], committed[part])
		}
	}
	for _, px := range []*esProxy{proxy1, proxy4} {
		if err := px.Start(); err != nil {
			t.Fatal(err)
		}
	}
	p.release()

	p.wait(t, 2*time.Minute)
	waitFor(t, 2*time.Minute, "every record indexed", func() (bool, string) {
		got := esCount(t, topic)
		return got >= n, fmt.Sprintf("%d of %d indexed", got, n)
	})
	waitCommittedAtEnd(t, topic, topic, partitions)
	for i, a := range []*agentProc{a1, a4} {
		st := a.stats()
		t.Logf("agent %d: consumed %d, indexed %d, %d found already indexed", []int{1, 4}[i],
			st.Consumed, st.Output.Indexed, st.Output.Duplicates)
	}
	a1.stop(30 * time.Second)
	a4.stop(30 * time.Second)
	// Leaving the group must not move a commit.
	if c, e := committedOffsets(t, topic, topic, partitions), endOffsets(t, topic, partitions); fmt.Sprint(c) != fmt.Sprint(e) {
		t.Errorf("after the last agents left the group: committed %v, want the end of every partition %v", c, e)
	}
	assertExactlyOnce(t, topic, topic, partitions, n)
}

// TestPausedMemberKeepsMembership: an agent whose buffer is full stops
// fetching, and that must not cost it its place in the group. Elasticsearch
// is out of reach (its proxy stopped) until appends block; the agent stays
// blocked for twice its 3 s session timeout. Throughout, the group keeps
// the same one member, stable, and the agent joins no new generation. Then
// Elasticsearch is back, and every record is indexed exactly once by that
// same member, without a rebalance.
func TestPausedMemberKeepsMembership(t *testing.T) {
	const (
		partitions = 4
		first      = 2_000
		n          = 50_000
		session    = 3 * time.Second
	)
	requireShortSessions(t, session)
	topic := newTopic(t, partitions)
	proxy := newESProxy(t)
	// memory_limit and disk_limit at their minimum, 4 × chunk_size (1MiB):
	// the buffer holds a few MiB, far less than the records produced.
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: proxy.URL,
		SessionTimeout: session.String(), HeartbeatInterval: "1s", RequestTimeout: "5s",
		MemoryLimit: "4MiB", Extra: `disk_limit = "4MiB"`}
	a := startAgent(t, o)
	produce(t, topic, 0, first)
	waitFor(t, time.Minute, "the first records indexed", func() (bool, string) {
		got := esCount(t, o.Index)
		return got >= first, fmt.Sprintf("%d of %d indexed", got, first)
	})
	member := waitGroupSettled(t, topic, partitions, a)[0]
	gens := assignedGenerations(t, a)
	t.Logf("member %s, generations joined %v", member, gens)

	proxy.Stop()
	produce(t, topic, first, n-first)
	var st agentStatus
	waitFor(t, time.Minute, "appends blocked on the full buffer", func() (bool, string) {
		a.requireRunning("while the buffer fills")
		st = a.stats()
		return st.Buffer.Blocked != "" && st.Consumed < n,
			fmt.Sprintf("consumed %d of %d, blocked %q", st.Consumed, n, st.Buffer.Blocked)
	})
	blockedAt := time.Now()
	t.Logf("appends blocked after %d records: %s", st.Consumed, st.Buffer.Blocked)

	// Held for twice the session timeout, sampled twice a second: a member
	// whose session lapsed would be removed, the group would rebalance
	// (PreparingRebalance, CompletingRebalance) and the agent would rejoin
	// with a new member id and a new generation.
	for time.Since(blockedAt) < 2*session+time.Second {
		a.requireRunning("while its buffer is full")
		requireSameMember(t, topic, member, "while the agent's appends are blocked")
		time.Sleep(500 * time.Millisecond)
	}
	st = a.stats()
	if st.Buffer.Blocked == "" || st.Consumed >= n {
		t.Fatalf("after %s the agent is no longer blocked (consumed %d of %d, blocked %q): the test proved nothing",
			time.Since(blockedAt).Round(time.Second), st.Consumed, n, st.Buffer.Blocked)
	}
	if now := assignedGenerations(t, a); !slices.Equal(now, gens) {
		t.Fatalf("the agent joined new generations while blocked: %v, before %v", now, gens)
	}
	t.Logf("blocked for %s: consumed %d, same member, same generation %v",
		time.Since(blockedAt).Round(100*time.Millisecond), st.Consumed, gens)

	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "every record indexed once Elasticsearch is back", func() (bool, string) {
		got := esCount(t, o.Index)
		return got >= n, fmt.Sprintf("%d of %d indexed", got, n)
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireSameMember(t, topic, member, "after the backlog was delivered")
	if now := assignedGenerations(t, a); !slices.Equal(now, gens) {
		t.Fatalf("the agent joined new generations: %v, before the outage %v", now, gens)
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
}

// producer writes loggen records to a topic in steps, in the background.
type producer struct {
	produced atomic.Int64
	limit    atomic.Int64 // production pauses here until release
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // set before done is closed
}

// startProducing produces records 0..n-1 in steps of step, one step every
// pace, pausing once hold records are produced until release is called.
func startProducing(t *testing.T, topic string, n, step int, pace time.Duration, hold int) *producer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &producer{cancel: cancel, done: make(chan struct{})}
	p.limit.Store(int64(hold))
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	go func() {
		defer close(p.done)
		w := loggen.Writer(stack.KafkaBrokers, topic)
		defer w.Close()
		for from := 0; from < n; from += step {
			for int64(from) >= p.limit.Load() {
				if p.err = sleep(ctx, 50*time.Millisecond); p.err != nil {
					return
				}
			}
			if p.err = loggen.Produce(ctx, w, from, min(step, n-from)); p.err != nil {
				return
			}
			p.produced.Store(int64(min(from+step, n)))
			if p.err = sleep(ctx, pace); p.err != nil {
				return
			}
		}
	}()
	return p
}

func (p *producer) release() { p.limit.Store(1 << 62) }

// wait waits until every record is produced.
func (p *producer) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("producing: %v", p.err)
		}
	case <-time.After(timeout):
		t.Fatalf("producing did not finish within %s (%d produced)", timeout, p.produced.Load())
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// describeGroup returns the consumer group as the broker describes it.
// kafka-go has been seen failing, once, with "unexpected EOF" on a group
// in the middle of a rebalance, so a failure is tried again for 2 s before
// it fails the test.
func describeGroup(t *testing.T, group string) kafka.DescribeGroupsResponseGroup {
	t.Helper()
	var err error
	for range 8 {
		var res *kafka.DescribeGroupsResponse
		res, err = kafkaClient().DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		switch {
		case err != nil:
		case len(res.Groups) != 1:
			err = fmt.Errorf("%d groups described", len(res.Groups))
		case res.Groups[0].Error != nil:
			err = res.Groups[0].Error
		default:
			return res.Groups[0]
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("describe group %s: %v", group, err)
	return kafka.DescribeGroupsResponseGroup{}
}

// groupState summarises a described group: its state and, per member, the
// partitions assigned to it.
func groupState(g kafka.DescribeGroupsResponseGroup) string {
	var ms []string
	for _, m := range g.Members {
		var parts []int
		for _, tp := range m.MemberAssignments.Topics {
			parts = append(parts, tp.Partitions...)
		}
		slices.Sort(parts)
		ms = append(ms, fmt.Sprintf("%s %v", m.MemberID, parts))
	}
	return fmt.Sprintf("%s, members [%s]", g.GroupState, strings.Join(ms, "; "))
}

// waitGroupSettled waits until the group is stable with exactly these
// agents as members, each owning partitions and together all of them, and
// returns the member ids.
func waitGroupSettled(t *testing.T, group string, partitions int, agents ...*agentProc) []string {
	t.Helper()
	var ids []string
	waitFor(t, time.Minute, fmt.Sprintf("the group stable with %d members sharing %d partitions", len(agents), partitions),
		func() (bool, string) {
			g := describeGroup(t, group)
			total, each := 0, true
			var owned []string
			for _, a := range agents {
				a.requireRunning("while the group settles")
				k := len(ownedPartitions(a))
				total += k
				each = each && k > 0
				owned = append(owned, fmt.Sprint(k))
			}
			ids = ids[:0]
			for _, m := range g.Members {
				ids = append(ids, m.MemberID)
			}
			return g.GroupState == "Stable" && len(g.Members) == len(agents) && each && total == partitions,
				fmt.Sprintf("group %s; the agents own %s partitions", groupState(g), strings.Join(owned, "+"))
		})
	return ids
}

// requireSameMember fails unless the group is stable with the one member.
func requireSameMember(t *testing.T, group, member, when string) {
	t.Helper()
	g := describeGroup(t, group)
	if g.GroupState != "Stable" || len(g.Members) != 1 || g.Members[0].MemberID != member {
		t.Fatalf("%s: group %s, want stable with the one member %s", when, groupState(g), member)
	}
}

// ownedPartitions returns the partitions the agent says it owns.
func ownedPartitions(a *agentProc) []int {
	a.t.Helper()
	var st struct {
		Assigned []struct {
			Partition int `json:"partition"`
		} `json:"assigned_partitions"`
	}
	a.getJSON("GET", "/api/status", &st)
	var parts []int
	for _, tp := range st.Assigned {
		parts = append(parts, tp.Partition)
	}
	slices.Sort(parts)
	return parts
}

// assignedGenerations returns the generation of every "kafka partitions
// assigned" line of the agent's log, in order: one per group generation it
// joined.
func assignedGenerations(t *testing.T, a *agentProc) []int {
	t.Helper()
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var gens []int
	for _, line := range strings.Split(string(b), "\n") {
		var l struct {
			Msg        string `json:"msg"`
			Generation int    `json:"generation"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "kafka partitions assigned" {
			gens = append(gens, l.Generation)
		}
	}
	if len(gens) == 0 {
		t.Fatalf("agent log %s has no \"kafka partitions assigned\" line", a.logPath)
	}
	return gens
}

// indexedFrom returns the ids of the documents of one partition, offsets
// from..end-1, that the index holds (read in real time, by id).
func indexedFrom(t *testing.T, topic string, partition int, from, end int64) []string {
	t.Helper()
	var found []string
	for lo := max(from, 0); lo < end; lo += 5000 {
		var ids []string
		for off := lo; off < min(lo+5000, end); off++ {
			ids = append(ids, docID(t, topic, partition, off))
		}
		var res struct {
			Docs []struct {
				ID    string `json:"_id"`
				Found bool   `json:"found"`
			} `json:"docs"`
		}
		esDo(t, "POST", "/"+topic+"/_mget?_source=false", mustJSON(map[string]any{"ids": ids}), &res)
		for _, d := range res.Docs {
			if d.Found {
				found = append(found, d.ID)
			}
		}
	}
	return found
}
