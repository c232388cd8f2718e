// Package kafkatest provides fakes of the Kafka input's collaborators: an
// in-process Kafka cluster that speaks the real protocol (kfake), a Sink that
// records what it is given and can apply back-pressure, and a Watermarks
// whose offsets a test controls.
package kafkatest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/shipper-agent/shipper"
)

// Cluster is an in-process single-broker Kafka cluster with a client for
// producing test data and inspecting committed offsets. Both are closed when
// the test ends.
type Cluster struct {
	kf     *kfake.Cluster
	client *kgo.Client
}

// NewCluster starts a cluster holding the given topics, each with the given
// number of partitions.
func NewCluster(t testing.TB, partitions int32, topics ...string) *Cluster {
	t.Helper()
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	client, err := newClient(kf.ListenAddrs())
	if err != nil {
		kf.Close()
		t.Fatalf("kgo client: %v", err)
	}
	c := &Cluster{kf: kf, client: client}
	t.Cleanup(func() {
		c.client.Close()
		kf.Close()
	})
	return c
}

func newClient(addrs []string) (*kgo.Client, error) {
	return kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		// Requests by topic name, as the Kafka 3.9 the e2e tests run
		// against answers them; later versions address topics by id.
		kgo.MaxVersions(kversion.V3_9_0()),
	)
}

// request sends req to the cluster with a 10 s bound and fails the test
// if it gets no answer; the answer's error codes are the caller's.
func request[Req interface {
	kmsg.Request
	RequestWith(context.Context, kmsg.Requestor) (Resp, error)
}, Resp any](t testing.TB, c *Cluster, what string, req Req) Resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, c.client)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return resp
}

// Addrs returns the brokers' "host:port" addresses.
func (c *Cluster) Addrs() []string { return c.kf.ListenAddrs() }

// Message is a record to produce.
type Message struct {
	Topic     string
	Partition int32
	Key       []byte
	Value     []byte
	Headers   []shipper.Header
	Time      time.Time
}

// Produce writes the messages synchronously and returns the offset each got.
func (c *Cluster) Produce(t testing.TB, msgs ...Message) []int64 {
	t.Helper()
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Topic: m.Topic, Partition: m.Partition, Key: m.Key, Value: m.Value, Timestamp: m.Time}
		for _, h := range m.Headers {
			recs[i].Headers = append(recs[i].Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	offsets := make([]int64, len(recs))
	for i, r := range recs {
		offsets[i] = r.Offset
	}
	return offsets
}

// ProduceTxn writes the messages in one transaction of a new transactional
// producer, committed or aborted, and returns the offset each got.
func (c *Cluster) ProduceTxn(t testing.TB, commit bool, msgs ...Message) []int64 {
	t.Helper()
	client, err := kgo.NewClient(
		kgo.SeedBrokers(c.Addrs()...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionalID(fmt.Sprintf("txn-%d", time.Now().UnixNano())),
		kgo.MaxVersions(kversion.V3_9_0()),
	)
	if err != nil {
		t.Fatalf("transactional client: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.BeginTransaction(); err != nil {
		t.Fatalf("begin transaction: %v", err)
	}
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = &kgo.Record{Topic: m.Topic, Partition: m.Partition, Key: m.Key, Value: m.Value}
	}
	if err := client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce in a transaction: %v", err)
	}
	if err := client.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatalf("end transaction: %v", err)
	}
	offsets := make([]int64, len(recs))
	for i, r := range recs {
		offsets[i] = r.Offset
	}
	return offsets
}

// EndOffsets returns the end offset (the high watermark) of each of the
// topic's partitions in parts.
func (c *Cluster) EndOffsets(t testing.TB, topic string, parts ...int32) map[int32]int64 {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range parts {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp = p, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp := request(t, c, "list offsets", req)
	out := map[int32]int64{}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				t.Fatalf("list offsets %s/%d: %v", rt.Topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	return out
}

// DeleteTopic deletes a topic.
func (c *Cluster) DeleteTopic(t testing.TB, topic string) {
	t.Helper()
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TopicNames = []string{topic}
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp := request(t, c, "delete topic", req)
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			t.Fatalf("delete topic %s: %v", topic, err)
		}
	}
	// The client keeps the deleted topic's id: a topic created again
	// under the name needs a fresh one.
	c.client.Close()
	var err error
	if c.client, err = newClient(c.kf.ListenAddrs()); err != nil {
		t.Fatalf("kgo client: %v", err)
	}
}

// CreateTopic creates a topic after the cluster started.
func (c *Cluster) CreateTopic(t testing.TB, topic string, partitions int32) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = topic
	rt.NumPartitions = partitions
	rt.ReplicationFactor = 1
	req.Topics = append(req.Topics, rt)
	resp := request(t, c, "create topic", req)
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			t.Fatalf("create topic %s: %v", rt.Topic, err)
		}
	}
}

// Commit commits offsets for an empty group, as an administrator would.
func (c *Cluster) Commit(t testing.TB, group, topic string, offsets map[int32]int64) {
	t.Helper()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.Generation = group, -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic
	for p, off := range offsets {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = p, off
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp := request(t, c, "offset commit", req)
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				t.Fatalf("offset commit %s %s/%d: %v", group, rt.Topic, p.Partition, err)
			}
		}
	}
}

// DeleteRecords removes a partition's records below offset, as retention
// or kafka-delete-records would.
func (c *Cluster) DeleteRecords(t testing.TB, topic string, partition int32, offset int64) {
	t.Helper()
	if err := c.kf.DeleteRecords(topic, partition, offset); err != nil {
		t.Fatalf("delete records: %v", err)
	}
}

// Committed returns the group's committed offset of each of the topic's
// partitions in parts; -1 means none is committed.
func (c *Cluster) Committed(t testing.TB, group, topic string, parts ...int32) map[int32]int64 {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = topic
	rt.Partitions = parts
	req.Topics = append(req.Topics, rt)
	resp := request(t, c, "offset fetch", req)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		t.Fatalf("offset fetch %s: %v", group, err)
	}
	out := make(map[int32]int64, len(parts))
	for _, rt := range resp.Topics {
		if rt.Topic != topic {
			continue
		}
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				t.Fatalf("offset fetch %s %s/%d: %v", group, topic, p.Partition, err)
			}
			out[p.Partition] = p.Offset
		}
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			t.Fatalf("offset fetch %s: no answer for %s/%d", group, topic, p)
		}
	}
	return out
}
