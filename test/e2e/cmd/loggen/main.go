// Command loggen writes sample application logs to a Kafka topic: the demo's
// traffic. It creates the topic if needed.
//
//	loggen -brokers 127.0.0.1:9092 -topic app-logs -rate 200 [-count N]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "a Kafka broker, host:port")
	topic := flag.String("topic", "app-logs", "topic to write to")
	partitions := flag.Int("partitions", 3, "partitions when creating the topic")
	rate := flag.Int("rate", 200, "records per second")
	count := flag.Int("count", 0, "stop after this many records (0: until interrupted)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *brokers, *topic, *partitions, *rate, *count); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "loggen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, broker, topic string, partitions, rate, count int) error {
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := loggen.CreateTopic(setup, broker, topic, partitions); err != nil {
		return err
	}
	w := loggen.Writer(broker, topic)
	defer w.Close()
	// Write a tenth of the rate every 100ms.
	per := max(rate/10, 1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; count == 0 || sent < count; sent += per {
		if count > 0 {
			per = min(per, count-sent)
		}
		if err := loggen.Produce(ctx, w, sent, per); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	return nil
}
