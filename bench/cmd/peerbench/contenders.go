package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/shipper-agent/shipper/bench/internal/agentrun"
)

// peer is one contender: shipper or a peer built by bench/peers/build.
type peer struct {
	name    string // shipper, benthos, filebeat
	version string // the module version, or shipper's commit
	bin     string // the binary; "" when it could not be built
	err     string // why it cannot run (its build's own error), else ""
	build   buildInfo
}

// runSpec is where one run reads and writes.
type runSpec struct {
	dir     string // the run's own directory: data, config, log
	broker  string
	topic   string
	group   string
	esURL   string // the proxy
	index   string
	records int64
}

// peerSettings are the peers' throughput settings, tuned the way each
// one's documentation says to, the same for all of them where a setting
// exists in all: no compression (loopback), documents of the same fields,
// one id per Kafka record, a fresh consumer group from the oldest offset.
// docs/benchmarks.md ("Peers") says why each value.
type peerSettings struct {
	// Benthos: its elasticsearch output sends one bulk request per batch,
	// max_in_flight batches at once; its kafka_franz input lets
	// checkpoint_limit records per partition be in flight.
	benthosBatchCount  int
	benthosBatchPeriod string
	benthosMaxInFlight int
	benthosCheckpoint  int
	benthosInputBatch  int // kafka_franz batching.count per partition; 0: none
	// Filebeat: bulk_max_size events per bulk request, worker requests in
	// flight, the memory queue's size and flush.
	filebeatBulkMaxSize  int
	filebeatWorkers      int
	filebeatQueueEvents  int
	filebeatFlushMin     int
	filebeatFlushTimeout string
}

// defaultPeerSettings are, for each peer, the settings with the highest
// mean docs/s in peerbench -tune (bench/results/peers-tuning.txt), whose
// variants start from each peer's documented advice. Filebeat: Elastic's
// "throughput" preset (Filebeat 8.12+; each of its settings exists in
// 7.17: bulk_max_size 1600, worker 4, queue.mem.events 12800) without its
// compression_level 1 and with flush.timeout 1s, and bulk_max_size and
// flush.min_events 800, the best of the search. Benthos: batches of 100,
// 16 in flight; its elasticsearch output's CPU per document grows with the
// batch (each document's six interpolations copy the batch's slice of
// messages), so batches of 1000 or 1600 cost two to three times the CPU.
func defaultPeerSettings() peerSettings {
	return peerSettings{
		benthosBatchCount: 100, benthosBatchPeriod: "1s", benthosMaxInFlight: 16, benthosCheckpoint: 4096,
		filebeatBulkMaxSize: 800, filebeatWorkers: 4, filebeatQueueEvents: 12800, filebeatFlushMin: 800, filebeatFlushTimeout: "1s",
	}
}

// shipperConfig is the agent's configuration: all defaults.
func shipperConfig(s runSpec, api string) string {
	return agentrun.Config(agentrun.Where{DataDir: filepath.Join(s.dir, "data"), API: api, Broker: s.broker, Topic: s.topic,
		Group: s.group, ESURL: s.esURL, Index: s.index}, agentrun.Settings{})
}

// benthosConfig is Benthos's configuration file (YAML).
func benthosConfig(s runSpec, ps peerSettings) string {
	return fmt.Sprintf(`http:
  enabled: false
input:
  kafka_franz:
    seed_brokers: [ %q ]
    topics: [ %q ]
    consumer_group: %q
    start_from_oldest: true
    checkpoint_limit: %d
%soutput:
  elasticsearch:
    urls: [ %q ]
    index: %q
    id: '${! meta("kafka_topic") }-${! meta("kafka_partition") }-${! meta("kafka_offset") }'
    action: index
    sniff: false
    healthcheck: false
    timeout: 30s
    max_in_flight: %d
    batching:
      count: %d
      period: %s
logger:
  level: INFO
  format: logfmt
metrics:
  none: {}
shutdown_timeout: 10s
`, s.broker, s.topic, s.group, ps.benthosCheckpoint, inputBatching(ps), s.esURL, s.index, ps.benthosMaxInFlight, ps.benthosBatchCount, ps.benthosBatchPeriod)
}

func inputBatching(ps peerSettings) string {
	if ps.benthosInputBatch <= 0 {
		return ""
	}
	return fmt.Sprintf("    batching:\n      count: %d\n      period: %s\n", ps.benthosInputBatch, ps.benthosBatchPeriod)
}

// filebeatConfig is Filebeat's configuration file (YAML). The Kafka
// input's record value is decoded as JSON into the event's root
// (parsers: ndjson); the document id is a fingerprint of the record's
// topic, partition and offset (Filebeat has no processor that joins
// fields into a string; the fingerprint processor's default method is
// sha256); the fields Filebeat adds of its own (the raw
// message, kafka.*, input, agent, ecs, host) are dropped, so its documents
// carry the same fields as the others'.
func filebeatConfig(s runSpec, ps peerSettings) string {
	return fmt.Sprintf(`filebeat.inputs:
  - type: kafka
    hosts: [ %q ]
    topics: [ %q ]
    group_id: %q
    initial_offset: oldest
    parsers:
      - ndjson:
          target: ""
          overwrite_keys: true
processors:
  - fingerprint:
      fields: [ "kafka.topic", "kafka.partition", "kafka.offset" ]
      target_field: "@metadata._id"
  - drop_fields:
      fields: [ "message", "kafka", "input", "agent", "ecs", "host", "log" ]
      ignore_missing: true
queue.mem:
  events: %d
  flush.min_events: %d
  flush.timeout: %s
output.elasticsearch:
  hosts: [ %q ]
  index: %q
  bulk_max_size: %d
  worker: %d
  compression_level: 0
setup.template.enabled: false
setup.ilm.enabled: false
logging.level: info
logging.metrics.enabled: false
http.enabled: false
monitoring.enabled: false
`, s.broker, s.topic, s.group, ps.filebeatQueueEvents, ps.filebeatFlushMin, ps.filebeatFlushTimeout, s.esURL, s.index,
		ps.filebeatBulkMaxSize, ps.filebeatWorkers)
}

// settings says in one line what each contender was tuned with.
func settings(name string, ps peerSettings) string {
	switch name {
	case "shipper":
		return "all defaults (chunk_size 4MiB, sync_writes true, max_bulk_bytes 8MiB, max_in_flight 4, adaptive_concurrency, action create)"
	case "benthos":
		in := "none"
		if ps.benthosInputBatch > 0 {
			in = fmt.Sprintf("count %d / period %s", ps.benthosInputBatch, ps.benthosBatchPeriod)
		}
		return fmt.Sprintf("output batching count %d / period %s, max_in_flight %d; input checkpoint_limit %d, batching %s; action index, sniff/healthcheck off",
			ps.benthosBatchCount, ps.benthosBatchPeriod, ps.benthosMaxInFlight, ps.benthosCheckpoint, in)
	case "filebeat":
		return fmt.Sprintf("bulk_max_size %d, worker %d, queue.mem events %d / flush.min_events %d / flush.timeout %s, compression 0, action create, id: sha256 fingerprint of topic/partition/offset",
			ps.filebeatBulkMaxSize, ps.filebeatWorkers, ps.filebeatQueueEvents, ps.filebeatFlushMin, ps.filebeatFlushTimeout)
	}
	return ""
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}
