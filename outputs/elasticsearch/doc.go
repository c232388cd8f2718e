// Package elasticsearch is shipper's Elasticsearch output. It turns records
// into bulk requests (op_type=create, id <topic>-<partition>-<offset>) and
// reports exactly one Outcome per record: Delivered (including a 409 on
// create: already indexed), Retry, DeadLetter, Hold (the cluster or the
// credentials are wrong, not the document), Skipped (a tombstone), or
// Pending (no usable answer: send it again). It never waits or retries by
// time: the agent's delivery loop owns retries, backoff, attempt counting
// and the dead-letter store. The only thing it does again by itself is a
// request Elasticsearch refused for what it holds: a 413 (too large; the
// smaller limit is learned) or a 400 (a document breaks the body) is sent
// again as two halves, down to the one document to dead-letter.
//
// response.go holds the classification of answers, outcome.go the types the
// caller sees, document.go how a record becomes a document, auth.go and
// tls.go the credentials and TLS every request to a node carries.
package elasticsearch
