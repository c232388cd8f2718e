package shipper

import (
	"encoding/base32"
	"strconv"
	"strings"
	"time"
)

// Record is one Kafka message as it travels through the agent.
type Record struct {
	Topic string
	// TopicID names the topic's incarnation: TopicIDOf Kafka's topic id,
	// the same for every record of a topic until it is deleted, different
	// once a topic of the same name is created again. "" where the broker
	// has no topic ids (Kafka before 2.8).
	TopicID   string
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
// "<topic>-<topic id>-<partition>-<offset>", or "<topic>-<partition>-<offset>"
// when the record has no TopicID. A record replayed after a crash or a
// rebalance gets the same id, so indexing it with op_type=create cannot
// produce a duplicate; a record of a topic deleted and created again under
// the same name gets a different one, so it never passes for an earlier
// record at the same offset. Partition and offset come last, so the id
// parses from the right even when the topic name contains dashes.
func (r *Record) DocumentID() string {
	return string(r.AppendDocumentID(make([]byte, 0, len(r.Topic)+len(r.TopicID)+25)))
}

// AppendDocumentID appends the record's DocumentID to dst.
func (r *Record) AppendDocumentID(dst []byte) []byte {
	dst = append(dst, r.Topic...)
	dst = append(dst, '-')
	if r.TopicID != "" {
		dst = append(dst, r.TopicID...)
		dst = append(dst, '-')
	}
	dst = strconv.AppendInt(dst, int64(r.Partition), 10)
	dst = append(dst, '-')
	return strconv.AppendInt(dst, r.Offset, 10)
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

// topicIDEncoding is lower-case base32hex without padding: ids stay short,
// sort like the bytes and need no escaping.
var topicIDEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// TopicIDOf returns the short form of a Kafka topic id (a random UUID) that
// Record.TopicID holds: its first 5 bytes, 8 characters. Two incarnations
// of one topic name share it with a probability of 2^-40.
func TopicIDOf(uuid [16]byte) string {
	return strings.ToLower(topicIDEncoding.EncodeToString(uuid[:5]))
}
