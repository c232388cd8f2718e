// Package agent loads shipper's configuration, wires the Kafka input, the
// buffer and the Elasticsearch output, runs the delivery workers, serves the
// /api, and owns the lifecycle: start-up checks and the shutdown order
// (see docs/architecture.md).
package agent
