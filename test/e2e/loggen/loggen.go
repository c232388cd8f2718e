// Package loggen generates sample application logs and writes them to
// Kafka, for the demo and the end-to-end tests. Record i is always the same
// bytes, so a test can check any indexed document against what was sent.
package loggen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

var (
	services = []string{"checkout", "payments", "search", "auth", "inventory"}
	paths    = []string{"/api/cart", "/api/pay", "/search?q=shoes", "/login", "/api/stock/42"}
	levels   = []string{"info", "info", "info", "warn", "error"}
)

// Kind says what shape record i has.
type Kind int

const (
	JSON      Kind = iota // a JSON object without @timestamp
	JSONTime              // a JSON object with its own @timestamp
	Text                  // one line of plain text
	Multiline             // a plain-text stack trace
	Large                 // a JSON object over 10 KiB
)

// KindOf returns the shape of record i.
func KindOf(i int) Kind {
	switch {
	case i%97 == 13:
		return Large
	case i%10 < 5:
		return JSON
	case i%10 == 5:
		return JSONTime
	case i%10 < 9:
		return Text
	}
	return Multiline
}

// Record returns the value of record i.
func Record(i int) []byte {
	svc, path, lvl := services[i%len(services)], paths[i%len(paths)], levels[i%len(levels)]
	latency := (i * 7919) % 1500
	switch KindOf(i) {
	case JSON:
		return fmt.Appendf(nil, `{"level":%q,"service":%q,"msg":"handled request","path":%q,"status":%d,"latency_ms":%d,"seq":%d}`,
			lvl, svc, path, 200+(i%4)*100, latency, i)
	case JSONTime:
		ts := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
		return fmt.Appendf(nil, `{"@timestamp":%q,"level":%q,"service":%q,"msg":"cache refreshed","seq":%d}`,
			ts.Format(time.RFC3339Nano), lvl, svc, i)
	case Text:
		return fmt.Appendf(nil, `%s %s [%s] GET %s -> %d in %dms seq=%d`,
			time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Second).Format(time.RFC3339),
			strings.ToUpper(lvl), svc, path, 200+(i%4)*100, latency, i)
	case Multiline:
		return fmt.Appendf(nil, "panic: runtime error: index out of range [%d]\n\ngoroutine 1 [running]:\nmain.handle(...)\n\t/src/%s/main.go:%d\nseq=%d",
			i%7, svc, 10+i%90, i)
	}
	return fmt.Appendf(nil, `{"level":"debug","service":%q,"msg":"request dump","seq":%d,"body":%q}`,
		svc, i, strings.Repeat("abcdefghij", 1100+i%300))
}

// dialController connects to broker and to the cluster's controller, which
// creates and deletes topics. The caller closes both.
func dialController(ctx context.Context, broker string) (conn, controller *kafka.Conn, err error) {
	conn, err = kafka.DialContext(ctx, "tcp", broker)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", broker, err)
	}
	c, err := conn.Controller()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("find controller: %w", err)
	}
	controller, err = kafka.DialContext(ctx, "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("dial controller: %w", err)
	}
	return conn, controller, nil
}

// CreateTopic creates a topic (if it does not exist) and waits until every
// partition has a leader.
func CreateTopic(ctx context.Context, broker, topic string, partitions int) error {
	return CreateTopicWith(ctx, broker, topic, partitions, nil)
}

// CreateTopicWith is CreateTopic with topic configuration, such as
// "max.message.bytes".
func CreateTopicWith(ctx context.Context, broker, topic string, partitions int, configs map[string]string) error {
	conn, cc, err := dialController(ctx, broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer cc.Close()
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}
	for k, v := range configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	err = cc.CreateTopics(tc)
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for {
		parts, err := conn.ReadPartitions(topic)
		ready := err == nil && len(parts) == partitions
		for _, p := range parts {
			ready = ready && p.Leader.Host != ""
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: partitions not ready: %v", topic, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DeleteTopic deletes a topic through the cluster's controller.
func DeleteTopic(ctx context.Context, broker, topic string) error {
	conn, cc, err := dialController(ctx, broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer cc.Close()
	return cc.DeleteTopics(topic)
}

// Writer returns a synchronous writer that waits for the broker's ack of
// every batch and spreads records over partitions round-robin.
func Writer(broker, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(broker),
		Topic:        topic,
		Balancer:     &kafka.RoundRobin{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    500,
		BatchBytes:   4 << 20,
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  10,
	}
}

// Produce writes records from, from+1, ..., from+n-1 to the topic, in
// batches, and returns once Kafka acknowledged them all. Messages that fail
// with a transient error (a new topic's metadata not yet everywhere, a
// leader election) are retried, and only those: a message Kafka took is
// never written twice, or a test counting records would see duplicates.
func Produce(ctx context.Context, w *kafka.Writer, from, n int) error {
	const batch = 1000
	msgs := make([]kafka.Message, 0, batch)
	for i := from; i < from+n; i++ {
		msgs = append(msgs, kafka.Message{Key: []byte(strconv.Itoa(i)), Value: Record(i)})
		if len(msgs) == batch || i == from+n-1 {
			if err := Write(ctx, w, msgs); err != nil {
				return fmt.Errorf("produce records %d..%d: %w", i+1-len(msgs), i, err)
			}
			msgs = msgs[:0]
		}
	}
	return nil
}

// Write writes the messages and returns once Kafka acknowledged them all,
// retrying only the messages that failed with a transient error, so that
// none is written twice.
//
// Transient errors are retried for up to transientBudget: kafka-go's
// transport caches a topic's metadata, an "unknown topic" answer included,
// for its metadata TTL (6s by default), so a new topic on a broker that just
// started can stay unknown to the writer for that long.
func Write(ctx context.Context, w *kafka.Writer, msgs []kafka.Message) error {
	deadline := time.Now().Add(transientBudget)
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		var failed []kafka.Message
		var werrs kafka.WriteErrors
		switch {
		case errors.As(err, &werrs):
			for i, e := range werrs {
				if e == nil {
					continue
				}
				if !transient(e) {
					return e
				}
				failed = append(failed, msgs[i])
			}
		case transient(err):
			failed = msgs
		default:
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %s: %w", transientBudget, err)
		}
		msgs = failed
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

const transientBudget = 30 * time.Second

func transient(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	// Raised by kafka-go before sending, from metadata it cached while a
	// broker restarted or a topic was new: nothing was written.
	return errors.Is(err, protocol.ErrNoLeader) || errors.Is(err, protocol.ErrNoTopic) || errors.Is(err, protocol.ErrNoPartition)
}
