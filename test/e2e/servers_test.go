//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// topicName is a new topic name, after the test.
func topicName(t *testing.T) string {
	return strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")) +
		"-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
}

// newTopic creates a topic named after the test.
func newTopic(t *testing.T, partitions int) string {
	t.Helper()
	name := topicName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := loggen.CreateTopic(ctx, stack.KafkaBrokers, name, partitions); err != nil {
		t.Fatal(err)
	}
	return name
}

func produce(t *testing.T, topic string, from, n int) {
	t.Helper()
	// franz-go's idempotent producer: a batch it retries (a fresh broker
	// timing out a request it wrote) is never written twice, so the tests
	// can count records. Round robin over the partitions, record by record.
	c, err := kgo.NewClient(kgo.SeedBrokers(stack.KafkaBrokers), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.RecordDeliveryTimeout(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const batch = 1000
	recs := make([]*kgo.Record, 0, batch)
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: loggen.Record(i)})
		if len(recs) == batch || i == from+n-1 {
			if err := c.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatalf("produce records %d..%d into %s: %v", i+1-len(recs), i, topic, err)
			}
			recs = recs[:0]
		}
	}
}

func kafkaClient() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(stack.KafkaBrokers), Timeout: 10 * time.Second}
}

// endOffsets returns each partition's log end offset.
func endOffsets(t *testing.T, topic string, partitions int) map[int]int64 {
	t.Helper()
	var reqs []kafka.OffsetRequest
	for p := range partitions {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	res, err := kafkaClient().ListOffsets(context.Background(), &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("list offsets %s/%d: %v", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	return out
}

// committedOffsets returns the group's committed offset per partition (-1: none).
// kafkaRecords is the number of records the topic's partitions hold.
func kafkaRecords(t *testing.T, topic string, partitions int) int {
	t.Helper()
	total := 0
	for _, e := range endOffsets(t, topic, partitions) {
		total += int(e)
	}
	return total
}

func committedOffsets(t *testing.T, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	var parts []int
	for p := range partitions {
		parts = append(parts, p)
	}
	res, err := kafkaClient().OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{
		GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range res.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// waitCommittedAtEnd waits until the group has committed the end offset of
// every partition: everything was acknowledged end to end.
func waitCommittedAtEnd(t *testing.T, group, topic string, partitions int) {
	t.Helper()
	end := endOffsets(t, topic, partitions)
	waitFor(t, 30*time.Second, "committed offsets at the end of every partition", func() (bool, string) {
		c := committedOffsets(t, group, topic, partitions)
		return fmt.Sprint(c) == fmt.Sprint(end), fmt.Sprintf("committed %v, end %v", c, end)
	})
}

// esNode is an Elasticsearch node the tests read and write: the stack's
// (plainES) or its secured one (secureES).
type esNode struct {
	url    string
	client *http.Client
	auth   func(*http.Request) // sets the credentials; nil for none
}

// plainES is the stack's node, without security.
func plainES() esNode { return esNode{url: stack.ESURL, client: http.DefaultClient} }

func esDo(t *testing.T, method, path string, body io.Reader, v any) int {
	t.Helper()
	return esDoOn(t, plainES(), method, path, body, v)
}

// esDoOn sends a request to node n and decodes its JSON answer into v
// (when not nil); it returns the status.
func esDoOn(t *testing.T, n esNode, method, path string, body io.Reader, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, n.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if n.auth != nil {
		n.auth(req)
	}
	res, err := n.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %.300s", method, path, err, b)
		}
	}
	return res.StatusCode
}

// esCount refreshes the index and counts its documents (0 if it does not exist).
func esCount(t *testing.T, index string) int {
	t.Helper()
	return esCountOn(t, plainES(), index)
}

// esCountOn is esCount on node n.
func esCountOn(t *testing.T, n esNode, index string) int {
	t.Helper()
	esDoOn(t, n, "POST", "/"+index+"/_refresh", nil, nil)
	var res struct {
		Count int `json:"count"`
	}
	if status := esDoOn(t, n, "GET", "/"+index+"/_count", nil, &res); status == 404 {
		return 0
	}
	return res.Count
}

var seqInText = regexp.MustCompile(`seq=(\d+)`)

// assertExactlyOnce proves that the index holds exactly the n records the
// topic holds, each once, under its deterministic id, except the
// dead-lettered ones (ids <topic>-<partition>-<offset>), which it must not
// hold: the count is n less the dead letters, every other id of every
// offset Kafka holds is present, the dead ones are absent, and the
// documents carry distinct sequence numbers in 0..n-1 (loggen's "seq",
// as a field or "seq=N" in the message). Without dead letters that is
// each of 0..n-1 exactly once.
func assertExactlyOnce(t *testing.T, index, topic string, partitions, n int, dead ...string) {
	t.Helper()
	assertExactlyOnceOn(t, plainES(), index, topic, partitions, n, dead...)
}

// assertExactlyOnceOn is assertExactlyOnce on node es.
func assertExactlyOnceOn(t *testing.T, es esNode, index, topic string, partitions, n int, dead ...string) {
	t.Helper()
	want := n - len(dead)
	if got := esCountOn(t, es, index); got != want {
		t.Fatalf("index %s holds %d documents, want %d (%d records less %d dead letters)", index, got, want, n, len(dead))
	}
	end := endOffsets(t, topic, partitions)
	var total int64
	for _, e := range end {
		total += e
	}
	if total != int64(n) {
		t.Fatalf("Kafka holds %d records in %s, want %d", total, topic, n)
	}
	seen := make([]string, n)
	var ids []string
	check := func() {
		var res struct {
			Docs []struct {
				ID     string          `json:"_id"`
				Found  bool            `json:"found"`
				Source json.RawMessage `json:"_source"`
			} `json:"docs"`
		}
		esDoOn(t, es, "POST", "/"+index+"/_mget?_source_includes=seq,message", mustJSON(map[string]any{"ids": ids}), &res)
		if len(res.Docs) != len(ids) {
			t.Fatalf("_mget returned %d docs for %d ids", len(res.Docs), len(ids))
		}
		for _, d := range res.Docs {
			if isDead := slices.Contains(dead, d.ID); d.Found == isDead {
				t.Fatalf("document %s: indexed %v, dead-lettered %v", d.ID, d.Found, isDead)
			}
			if !d.Found {
				continue
			}
			var src struct {
				Seq     *int   `json:"seq"`
				Message string `json:"message"`
			}
			json.Unmarshal(d.Source, &src)
			seq := -1
			if src.Seq != nil {
				seq = *src.Seq
			} else if m := seqInText.FindStringSubmatch(src.Message); m != nil {
				seq, _ = strconv.Atoi(m[1])
			}
			if seq < 0 || seq >= n {
				t.Fatalf("document %s has no valid sequence number: %s", d.ID, d.Source)
			}
			if seen[seq] != "" {
				t.Fatalf("record %d is indexed twice: %s and %s", seq, seen[seq], d.ID)
			}
			seen[seq] = d.ID
		}
		ids = ids[:0]
	}
	for p := range partitions {
		for off := int64(0); off < end[p]; off++ {
			ids = append(ids, docID(t, topic, p, off))
			if len(ids) == 5000 {
				check()
			}
		}
	}
	if len(ids) > 0 {
		check()
	}
}

var (
	topicIDsMu sync.Mutex
	topicIDs   = map[string]string{}
)

// docID returns the document id the agent gives the record at offset of
// topic's partition: "<topic>-<topic id>-<partition>-<offset>", the topic
// id read from the broker (Metadata v10, which kafka-go cannot send).
func docID(t *testing.T, topic string, partition int, offset int64) string {
	t.Helper()
	topicIDsMu.Lock()
	defer topicIDsMu.Unlock()
	id, ok := topicIDs[topic]
	if !ok {
		req := kmsg.NewPtrMetadataRequest()
		req.Version = 10
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := req.RequestWith(ctx, franzClient(t))
		if err != nil {
			t.Fatalf("metadata of %s: %v", topic, err)
		}
		if len(res.Topics) != 1 || res.Topics[0].ErrorCode != 0 {
			t.Fatalf("metadata of %s: %+v", topic, res.Topics)
		}
		id = shipper.TopicIDOf(res.Topics[0].TopicID)
		topicIDs[topic] = id
	}
	r := shipper.Record{Topic: topic, TopicID: id, Partition: int32(partition), Offset: offset}
	return r.DocumentID()
}

// franzClient returns a franz-go client of the stack's broker, closed with
// the test: kafka-go cannot produce transactions, delete records or read
// topic ids.
func franzClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(stack.KafkaBrokers), kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// brokerConfig returns a setting of the stack's broker (node 1) as the
// broker reports it.
func brokerConfig(t *testing.T, name string) string {
	t.Helper()
	res, err := kafkaClient().DescribeConfigs(context.Background(), &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeBroker, ResourceName: "1", ConfigNames: []string{name}}},
	})
	if err != nil {
		t.Fatalf("describe broker config %s: %v", name, err)
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			t.Fatalf("describe broker config %s: %v", name, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == name {
				return e.ConfigValue
			}
		}
	}
	t.Fatalf("the broker does not report %s", name)
	return ""
}

// requireShortSessions fails unless the broker accepts consumer-group
// sessions as short as d. The stack reuses a running broker as it is, so a
// broker started before stacktest lowered group.min.session.timeout.ms
// keeps the old minimum (6s) until it is restarted.
func requireShortSessions(t *testing.T, d time.Duration) {
	t.Helper()
	v := brokerConfig(t, "group.min.session.timeout.ms")
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("broker group.min.session.timeout.ms = %q: %v", v, err)
	}
	if time.Duration(ms)*time.Millisecond > d {
		t.Fatalf("the running Kafka broker has group.min.session.timeout.ms=%s, this test needs sessions of %s; "+
			"the stack was started before stacktest lowered it: run `test/e2e/stack down` and run the tests again", v, d)
	}
}
