//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// TestStartupWaitsForElasticsearch: the agent starts while no Elasticsearch
// node answers (the proxy in front of it is down). It consumes into its
// buffer, and its start-up check retries until the node appears 10 s
// later; then it logs the cluster's name and version, installs the index
// template of template_file, and delivers every record exactly once into
// an index the template shaped.
func TestStartupWaitsForElasticsearch(t *testing.T) {
	const partitions, n = 2, 2000
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	proxy := newESProxy(t)
	proxy.Stop()
	tmpl := filepath.Join(t.TempDir(), "template.json")
	if err := os.WriteFile(tmpl, []byte(`{"index_patterns":["`+topic+`*"],"priority":500,`+
		`"template":{"mappings":{"properties":{"level":{"type":"keyword"}}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: proxy.URL,
		ESExtra: fmt.Sprintf("template_file = %q\n  template_name = %q", tmpl, topic)}
	a := startAgent(t, o)
	defer a.stop(20 * time.Second)
	waitFor(t, 30*time.Second, "every record buffered", func() (bool, string) {
		st := a.stats()
		return st.Consumed == n, fmt.Sprintf("%d consumed", st.Consumed)
	})
	time.Sleep(10 * time.Second)
	if line := a.lastLogLine("elasticsearch not answering yet"); line == "" {
		t.Errorf("no log line about the start-up check waiting")
	}
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	waitCommittedAtEnd(t, topic, topic, partitions)
	assertExactlyOnce(t, topic, topic, partitions, n)
	if line := a.lastLogLine(`"msg":"elasticsearch cluster"`); !strings.Contains(line, `"version":"8.`) {
		t.Errorf("start-up log line %q: want the cluster's version", line)
	}
	var mapping map[string]struct {
		Mappings struct {
			Properties map[string]struct {
				Type string `json:"type"`
			} `json:"properties"`
		} `json:"mappings"`
	}
	esDo(t, "GET", "/"+topic+"/_mapping", nil, &mapping)
	if got := mapping[topic].Mappings.Properties["level"].Type; got != "keyword" {
		t.Errorf("level is mapped as %q, want keyword from the installed template", got)
	}
}

// TestDataStreamWithKill: the agent installs an index template that makes
// its index a data stream, writes into it with create, and is killed with
// SIGKILL half-way. The stack's node has no data-streams module (no
// _data_stream API), but its bulk action creates a data stream from the
// template and refuses a second create of an id in the backing index, so
// the replay after the kill adds nothing: every record is indexed exactly
// once.
func TestDataStreamWithKill(t *testing.T) {
	const partitions, n = 2, 12000
	topic := newTopic(t, partitions)
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Value: fmt.Appendf(nil, `{"seq":%d}`, i)}
	}
	w := loggen.Writer(stack.KafkaBrokers, topic)
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := loggen.Write(ctx, w, msgs); err != nil {
		t.Fatal(err)
	}
	stream := "logs-" + topic
	template := filepath.Join(t.TempDir(), "template.json")
	if err := os.WriteFile(template, fmt.Appendf(nil,
		`{"index_patterns":[%q],"data_stream":{},"priority":500,"template":{"settings":{"number_of_replicas":0}}}`, stream), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		esDo(t, "DELETE", "/_index_template/"+topic, nil, nil)
	})
	o := agentOpts{Topic: topic, Group: topic, Index: "logs-{topic}", DataDir: t.TempDir(), ChunkSize: "64KiB", FlushInterval: "50ms",
		ESExtra: fmt.Sprintf("data_stream = true\n  template_file = %q\n  template_name = %q", template, topic)}
	a := startAgent(t, o)
	waitFor(t, time.Minute, "some documents indexed", func() (bool, string) {
		got := esCount(t, stream)
		return got >= 1000, fmt.Sprintf("%d documents", got)
	})
	a.kill()
	killedAt := esCount(t, stream)
	a = startAgent(t, o)
	defer a.stop(20 * time.Second)
	waitCommittedAtEnd(t, topic, topic, partitions)
	// The backing indices are .ds-<stream>-<date>-<generation>: the
	// documents went to a data stream, not an index of that name.
	var resolved struct {
		DataStreams []struct {
			Name           string   `json:"name"`
			BackingIndices []string `json:"backing_indices"`
		} `json:"data_streams"`
	}
	if code := esDo(t, "GET", "/_resolve/index/"+stream, nil, &resolved); code != 200 || len(resolved.DataStreams) != 1 ||
		!strings.HasPrefix(resolved.DataStreams[0].BackingIndices[0], ".ds-"+stream) {
		t.Fatalf("%s is not a data stream: HTTP %d, %+v", stream, code, resolved)
	}
	total, distinct := seqCount(t, stream, `{"match_all":{}}`)
	if total != n || distinct != n {
		t.Errorf("data stream %s: %d documents, %d distinct sequence numbers; want %d of each (killed at %d indexed)",
			stream, total, distinct, n, killedAt)
	}
	t.Logf("killed at %d of %d documents indexed; after the restart %v found already indexed; backing indices %v", killedAt, n,
		agentMetrics(a).get(t, "shipper_output_documents_total", "outcome", "duplicate"), resolved.DataStreams[0].BackingIndices)
}

// TestMissingPipelineHolds: the agent names an ingest pipeline the real
// node does not have. The node answers every document with a 400 that is
// the cluster's fault, not the documents', so delivery holds (health 503,
// the reason named) and nothing is dead-lettered; once the pipeline is
// created, every record goes through it and is indexed exactly once.
func TestMissingPipelineHolds(t *testing.T) {
	const partitions, n = 2, 3000
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	pipeline := "p-" + topic
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		ESExtra: fmt.Sprintf("pipeline = %q", pipeline)}
	a := startAgent(t, o)
	defer a.stop(20 * time.Second)
	waitFor(t, time.Minute, "delivery held on the missing pipeline", func() (bool, string) {
		a.requireRunning("while the pipeline was missing")
		code, held, reason, body := heldHealth(a)
		return code == 503 && held && strings.Contains(reason, "pipeline with id ["+pipeline+"] does not exist"), body
	})
	// Held is not ready, but alive: a restart would not help.
	var ready, live map[string]any
	if code := a.getJSON("GET", "/api/health/ready", &ready); code != 503 || ready["status"] != "held" {
		t.Errorf("ready while held: %d %v, want 503 held", code, ready)
	}
	if code := a.getJSON("GET", "/api/health/live", &live); code != 200 {
		t.Errorf("live while held: %d %v, want 200", code, live)
	}
	if st := a.stats(); st.Buffer.DeadLetters != 0 || st.Output.DeadLettered != 0 {
		t.Fatalf("documents dead-lettered for a missing pipeline: %d in the store, %d counted", st.Buffer.DeadLetters, st.Output.DeadLettered)
	}
	// An empty pipeline: the node's only processor, set_security_user,
	// needs security on.
	if code := esDo(t, "PUT", "/_ingest/pipeline/"+pipeline, strings.NewReader(`{"processors":[]}`), nil); code != 200 {
		t.Fatalf("create pipeline: HTTP %d", code)
	}
	t.Cleanup(func() { esDo(t, "DELETE", "/_ingest/pipeline/"+pipeline, nil, nil) })
	// A flush cuts the hold's backoff short.
	var flushed struct {
		Done bool `json:"done"`
	}
	if code := a.getJSON("POST", "/api/flush?wait=60s", &flushed); code != 200 || !flushed.Done {
		t.Fatalf("flush after the pipeline was created: HTTP %d, done %v", code, flushed.Done)
	}
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	assertExactlyOnce(t, topic, topic, partitions, n)
	if code, _ := a.health(); code != 200 {
		t.Errorf("health %d after the pipeline was created", code)
	}
	ready, live = nil, nil
	if code := a.getJSON("GET", "/api/health/ready", &ready); code != 200 {
		t.Errorf("ready: %d %v once delivering (joined, node alive, nothing held)", code, ready)
	}
	if code := a.getJSON("GET", "/api/health/live", &live); code != 200 {
		t.Errorf("live: %d %v", code, live)
	}
}
