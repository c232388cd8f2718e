// Package elasticsearch is shipper's Elasticsearch output. It turns records
// into bulk requests (op_type=create, id <topic>-<partition>-<offset>) and
// reports one outcome per document: delivered (including 409, already
// indexed), retry (429, 5xx) or rejected (a dead letter). It never retries
// by itself: the agent's delivery loop owns retries and backoff.
package elasticsearch
