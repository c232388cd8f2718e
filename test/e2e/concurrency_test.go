//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// windowStatus is output.window of /api/status.
type windowStatus struct {
	Limit    float64          `json:"limit"`
	Max      int              `json:"max"`
	InFlight int              `json:"in_flight"`
	Cuts     map[string]int64 `json:"cuts"`
	Growths  int64            `json:"growths"`
}

func (a *agentProc) window() windowStatus {
	a.t.Helper()
	var st struct {
		Output struct {
			Window windowStatus `json:"window"`
		} `json:"output"`
	}
	a.getJSON("GET", "/api/status", &st)
	return st.Output.Window
}

// TestWindowShrinksOn429FromNode: the real node answers every document with
// 429 while its index has the read_only_allow_delete block (what the disk
// flood-stage watermark sets). The agent's window of bulk requests in
// flight falls from its start to 1 and stays there while the 429s last;
// once the block is lifted it grows again, and every record is indexed
// exactly once, with the group's commits at the end of every partition.
func TestWindowShrinksOn429FromNode(t *testing.T) {
	const (
		partitions = 4
		n          = 16000 // about 3.7 MB: some 60 chunks of 64 KiB
	)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	if code := esDo(t, "PUT", "/"+topic, mustJSON(map[string]any{"settings": map[string]any{
		"number_of_replicas": 0, "index.blocks.read_only_allow_delete": true}}), nil); code != 200 {
		t.Fatalf("create index %s with a read_only_allow_delete block: HTTP %d", topic, code)
	}
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ChunkSize: "64KiB",
		ESExtra: "max_in_flight = 4"}
	a := startAgent(t, o)
	waitFor(t, time.Minute, "the window cut to 1 by 429s", func() (bool, string) {
		a.requireRunning("while the node answered 429")
		w := a.window()
		return w.Limit < 2 && w.Cuts["429"] >= 2, fmt.Sprintf("%+v", w)
	})
	// The 429s go on, and the window stays at one request: every answer is
	// a 429 and none grows it.
	time.Sleep(2 * time.Second)
	w := a.window()
	if w.Limit >= 2 || w.InFlight > 1 || w.Max != 4 {
		t.Fatalf("window while the node answers 429: %+v, want a limit under 2 and at most 1 in flight", w)
	}
	if got := esCount(t, topic); got != 0 {
		t.Fatalf("%d documents indexed in a blocked index", got)
	}
	if m := a.lastLogLine("documents rejected for now"); !strings.Contains(m, "429") {
		t.Errorf("no log line of documents rejected with 429; last: %q", m)
	}
	cut := w.Cuts["429"]
	t.Logf("while blocked: %+v", w)

	if code := esDo(t, "PUT", "/"+topic+"/_settings", mustJSON(map[string]any{
		"index.blocks.read_only_allow_delete": nil}), nil); code != 200 {
		t.Fatalf("lift the block: HTTP %d", code)
	}
	waitFor(t, 2*time.Minute, "every record indexed after the block was lifted", func() (bool, string) {
		a.requireRunning("after the block was lifted")
		got := esCount(t, topic)
		return got >= n, fmt.Sprintf("%d of %d indexed; window %+v", got, n, a.window())
	})
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	w = a.window()
	t.Logf("after: %+v", w)
	if w.Limit < 2 || w.Growths < 1 {
		t.Errorf("the window did not grow back once the node took documents: %+v", w)
	}
	if w.Cuts["429"] > cut+1 {
		// One more is possible: an answer already on its way.
		t.Errorf("429 cuts went on after the block was lifted: %d, then %d", cut, w.Cuts["429"])
	}
	a.stop(30 * time.Second)
	assertExactlyOnce(t, topic, topic, partitions, n)
}
