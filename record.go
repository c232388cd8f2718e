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
	// Value is nil for a tombstone (a null value); an empty value is an
	// empty, non-nil slice.
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

// OffsetGap is a range of a partition's offsets that will never be read:
// the records were removed (by retention or delete-records) before the
// consumer reached them. From is the first offset missing, To the offset
// reading resumed at; To-From records are lost upstream of shipper.
type OffsetGap struct {
	Topic     string
	Partition int32
	From, To  int64
	// Reason says what happened, for the dead-letter store.
	Reason string
}
