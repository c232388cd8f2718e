// Package shipper holds the domain types shared by every stage of the agent:
// a Kafka record, its position, and the value types used in configuration
// (sizes, secrets). It imports none of the client libraries, so inputs,
// buffer and outputs can all depend on it without depending on each other.
//
// The stages live in their own packages:
//
//	inputs/kafka            consumes records (kafka-go)
//	buffer                  disk-backed chunk buffer (badger)
//	outputs/elasticsearch   bulk delivery (go-elasticsearch)
//	agent                   config, lifecycle, wiring and the /api server
//	cmd/shipper             the binary
//
// See docs/architecture.md for the data flow and its invariants.
package shipper
