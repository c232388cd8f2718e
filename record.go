package shipper

import (
	"strconv"
	"time"
)

// Record is one Kafka message as it travels through the agent.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	// Value is nil for a tombstone (a null value). kafka-go reports an
	// empty value the same way, so the two cannot be told apart.
	Value []byte
	// Headers are the Kafka record headers, in order.
	Headers []Header
	// Time is the Kafka message timestamp.
	Time time.Time
}

// Header is one Kafka record header. Keys may repeat.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// TopicPartition names one partition of one topic.
type TopicPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

func (tp TopicPartition) String() string {
	return tp.Topic + "/" + strconv.Itoa(int(tp.Partition))
}

// TP returns the record's topic and partition.
func (r *Record) TP() TopicPartition { return TopicPartition{r.Topic, r.Partition} }

// DocumentID is the deterministic Elasticsearch _id of a record:
// "<topic>-<partition>-<offset>". A record replayed after a crash or a
// rebalance gets the same id, so indexing it with op_type=create cannot
// produce a duplicate. Partition and offset come last, so the id parses from
// the right even when the topic name contains dashes.
func (r *Record) DocumentID() string {
	b := make([]byte, 0, len(r.Topic)+24)
	b = append(b, r.Topic...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(r.Partition), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, r.Offset, 10)
	return string(b)
}
