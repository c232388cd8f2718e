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
