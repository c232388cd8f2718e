//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// flushAnswer is the part of POST /api/flush and GET /api/flush/{id} the
// tests read.
type flushAnswer struct {
	ID             string `json:"id"`
	Sealed         int    `json:"sealed_records"`
	PendingRecords int64  `json:"pending_records"`
	Done           bool   `json:"done"`
	WaitingRecords int64  `json:"waiting_records"`
	Output         struct {
		Indexed      int64 `json:"indexed"`
		Duplicates   int64 `json:"duplicates"`
		DeadLettered int64 `json:"dead_lettered"`
	} `json:"output"`
	Error string `json:"error"`
}

// TestFlushAgainstStack: records wait in the open chunk (flush_interval is
// an hour) until an operator flushes. A flush without a wait answers at
// once with an id whose progress GET /api/flush/{id} reports until done;
// SIGUSR1 does the same; a flush with a wait answers when done. Each done
// answer's counts match what Elasticsearch holds.
func TestFlushAgainstStack(t *testing.T) {
	const partitions, n, more = 2, 5000, 1000
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	if got := kafkaRecords(t, topic, partitions); got != n {
		// The producer is not idempotent: a batch retried on a fresh
		// broker can be written twice, and the counts below would not
		// hold. Not the agent's doing.
		t.Fatalf("Kafka holds %d records in %s after producing %d", got, topic, n)
	}
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ChunkSize: "16MiB", FlushInterval: "1h"}
	a := startAgent(t, o)
	defer a.stop(20 * time.Second)
	waitConsumed := func(want int64) {
		waitFor(t, time.Minute, "every record consumed into the open chunk", func() (bool, string) {
			// Delivered counts the documents found already indexed: the
			// first bulk into a new index can take long enough to be
			// hedged, and the losing copy's documents answer 409.
			st := a.stats()
			delivered := st.Output.Indexed + st.Output.Duplicates
			return st.Consumed >= want && int64(st.Buffer.OpenRecords) == want-delivered, fmt.Sprintf("%+v", st)
		})
	}
	waitConsumed(n)
	if got := esCount(t, topic); got != 0 {
		t.Fatalf("%d documents indexed before any flush (flush_interval 1h)", got)
	}

	var f flushAnswer
	code := a.getJSON("POST", "/api/flush", &f)
	if code != http.StatusAccepted && code != http.StatusOK || f.ID == "" || f.Sealed != n || f.PendingRecords != n {
		t.Fatalf("flush without a wait: %d %+v, want its id, %d records sealed and pending", code, f, n)
	}
	waitFor(t, time.Minute, "flush "+f.ID+" done", func() (bool, string) {
		var st flushAnswer
		a.getJSON("GET", "/api/flush/"+f.ID, &st)
		f = st
		return st.Done, fmt.Sprintf("%+v", st)
	})
	// Indexed and found already indexed (the loser of a hedged request)
	// add up to what Elasticsearch holds.
	if got := esCount(t, topic); f.Output.Indexed+f.Output.Duplicates != n || got != n || f.WaitingRecords != 0 {
		t.Fatalf("flush %s done: %+v; Elasticsearch holds %d, want %d", f.ID, f, got, n)
	}

	// SIGUSR1 flushes too, and logs the flush's id.
	produce(t, topic, n, more)
	waitConsumed(n + more)
	if err := a.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var sig struct {
		ID     string `json:"id"`
		Sealed int    `json:"sealed_records"`
	}
	waitFor(t, 10*time.Second, "the SIGUSR1 flush logged", func() (bool, string) {
		line := a.lastLogLine("flush requested by SIGUSR1")
		return line != "" && json.Unmarshal([]byte(line), &sig) == nil, line
	})
	if sig.ID == "" || sig.Sealed != more {
		t.Fatalf("SIGUSR1 flush: %+v, want an id and %d records sealed", sig, more)
	}
	var w flushAnswer
	if code := a.getJSON("POST", "/api/flush?wait=60s", &w); code != http.StatusOK || !w.Done || w.Sealed != 0 {
		t.Fatalf("flush with a wait after SIGUSR1: %d %+v", code, w)
	}
	if got := esCount(t, topic); w.Output.Indexed+w.Output.Duplicates != n+more || got != n+more {
		t.Fatalf("flush with a wait done: %+v; Elasticsearch holds %d, want %d", w, got, n+more)
	}
	var s flushAnswer
	if code := a.getJSON("GET", "/api/flush/"+sig.ID, &s); code != 200 || !s.Done {
		t.Fatalf("the SIGUSR1 flush %s: %d %+v", sig.ID, code, s)
	}
	// The CLI's view of the same: a flush with nothing left, and the status.
	counts := regexp.MustCompile(`(\d+) indexed, (\d+) duplicates`)
	for _, args := range [][]string{{"flush", "-wait", "30s"}, {"status"}} {
		out := a.cli(args...)
		m := counts.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("shipper %v prints no counts: %q", args, out)
			continue
		}
		indexed, _ := strconv.Atoi(m[1])
		dups, _ := strconv.Atoi(m[2])
		if indexed+dups != n+more {
			t.Errorf("shipper %v: %d indexed + %d duplicates, want %d: %q", args, indexed, dups, n+more, out)
		}
	}
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	assertExactlyOnce(t, topic, topic, partitions, n+more)
}

// TestSIGHUPReload: SIGHUP re-reads the configuration file. The log level
// changes at once (debug lines appear) and a new node list takes over (the
// documents produced after it go through the new node, a front to the
// same Elasticsearch); a changed buffer setting is reported as needing a
// restart, and a file that no longer loads changes nothing. Every record is
// indexed exactly once across the switch.
func TestSIGHUPReload(t *testing.T) {
	topic := newTopic(t, 1)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir()}
	a := startAgent(t, o)
	defer a.stop(20 * time.Second)
	produce(t, topic, 0, 100)
	waitFor(t, time.Minute, "the first records indexed", func() (bool, string) {
		got := esCount(t, topic)
		return got == 100, fmt.Sprintf("%d indexed", got)
	})
	if line := a.lastLogLine(`"level":"DEBUG"`); line != "" {
		t.Fatalf("a debug line at level info: %s", line)
	}
	cfg, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	front := newESFront(t)
	edited := strings.Replace(string(cfg), `level  = "info"`, `level  = "debug"`, 1)
	edited = strings.Replace(edited, fmt.Sprintf("urls  = [%q]", stack.ESURL), fmt.Sprintf("urls  = [%q]", front.URL), 1)
	edited = strings.Replace(edited, `memory_limit   = "64MiB"`, `memory_limit   = "96MiB"`, 1)
	if strings.Count(edited, "debug")+strings.Count(edited, front.URL)+strings.Count(edited, "96MiB") != 3 {
		t.Fatal("the test could not edit the configuration")
	}
	hup := func() map[string]any {
		t.Helper()
		before := a.lastLogLine("SIGHUP")
		if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var line map[string]any
		waitFor(t, 10*time.Second, "the reload logged", func() (bool, string) {
			l := a.lastLogLine("SIGHUP")
			return l != before && json.Unmarshal([]byte(l), &line) == nil, l
		})
		return line
	}
	os.WriteFile(a.config, []byte(edited), 0o644)
	line := hup()
	if fmt.Sprint(line["applied"]) != "[log.level elasticsearch.urls]" || fmt.Sprint(line["needs_restart"]) != "[buffer.memory_limit]" {
		t.Fatalf("reload: %v, want log.level and elasticsearch.urls applied, buffer.memory_limit needing a restart", line)
	}
	produce(t, topic, 100, 100)
	waitFor(t, time.Minute, "the new records indexed through the new node", func() (bool, string) {
		got := esCount(t, topic)
		return got == 200 && front.bulks.Load() > 0, fmt.Sprintf("%d indexed, %d bulk requests through the new node", got, front.bulks.Load())
	})
	if a.lastLogLine(`"msg":"chunk delivered"`) == "" {
		t.Error("no debug line after the level changed to debug")
	}
	var st struct {
		Output struct {
			Nodes []struct {
				URL string `json:"url"`
			} `json:"nodes"`
		} `json:"output"`
	}
	a.getJSON("GET", "/api/status", &st)
	if len(st.Output.Nodes) != 1 || st.Output.Nodes[0].URL != front.URL {
		t.Errorf("nodes after the reload: %+v, want only %s", st.Output.Nodes, front.URL)
	}

	os.WriteFile(a.config, []byte(edited+"\nbogus {\n"), 0o644)
	if line := hup(); line["level"] != "ERROR" || !strings.Contains(fmt.Sprint(line["msg"]), "nothing changed") {
		t.Fatalf("reload of a broken file: %v", line)
	}
	waitCommittedAtEnd(t, o.Group, topic, 1)
	assertExactlyOnce(t, topic, topic, 1, 200)
}
