// Package kafka is shipper's Kafka input: a consumer-group member built on
// kafka-go's ConsumerGroup, with one partition reader per assigned
// partition. Records go to a Sink in offset order; offsets are committed
// only up to the sink's delivered watermark, only for owned partitions, and
// never backwards. Back-pressure is simply not fetching: group membership is
// kept by kafka-go's background heartbeats.
package kafka
