package elasticsearch

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Outcome is what became of one document of a Send: what the caller does
// with it next.
type Outcome uint8

const (
	// Pending is the zero value: no usable answer for this document (an
	// earlier request of the same Send failed so it was not sent; it is
	// missing from the response or its item cannot be read). The caller
	// sends it again; it is not an attempt of the document.
	Pending Outcome = iota
	// Delivered: indexed (2xx), or already indexed (409
	// version_conflict_engine_exception on create of our deterministic id,
	// with Duplicate set).
	Delivered
	// Retry: send it again later: a per-item 429 or 5xx, or a whole request
	// that failed with a network error, 429 or 5xx. Counted says whether it
	// counts toward max_item_attempts.
	Retry
	// DeadLetter: the document can never be indexed as is (a mapping error,
	// a document too large for the cluster...): store it as a dead letter.
	DeadLetter
	// Hold: the cluster or the credentials are wrong, not the document
	// (401, 403, a closed or missing index...): keep it, alert, retry slowly.
	Hold
	// Skipped: nothing to index (a tombstone with tombstones = "skip").
	Skipped
)

var outcomeNames = [...]string{"pending", "delivered", "retry", "dead_letter", "hold", "skipped"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// ItemResult is the outcome of one document of a Send.
type ItemResult struct {
	Outcome Outcome
	// Status is the item's HTTP status, or the whole request's when the
	// request failed as a whole; 0 when no response arrived or the
	// document was decided without sending it.
	Status int
	// Type is Elasticsearch's error type ("mapper_parsing_exception"), or
	// shipper's code for what it decided itself: "request_too_large",
	// "invalid_utf8", "tombstone", "network", "bad_response", or
	// "http_<status>" for a whole-request error without an Elasticsearch
	// error body. Empty for a document delivered without error.
	Type string
	// Reason is one line for operators ("400 mapper_parsing_exception:
	// failed to parse field [a] ..."), at most about 512 bytes. It never
	// holds document content: requests set include_source_on_error=false.
	Reason string
	// Counted is set on a Retry that is the document's own repeated failure
	// (a per-item 5xx other than 502, 503, 504, or a per-item 409 other than
	// a version conflict): the caller dead-letters a document after
	// max_item_attempts of them.
	Counted bool
	// Duplicate is set on a Delivered answered 409: indexed before.
	Duplicate bool
}

// RequestError is a bulk request that failed as a whole, with no answer per
// document. Send returns the first one, whose documents are Retry (or Hold
// when Hold is set); the documents of requests not sent are Pending.
type RequestError struct {
	// Status is the HTTP status; 0 when no response arrived.
	Status int
	// Type is as ItemResult.Type: "network", "bad_response", Elasticsearch's
	// error type, or "http_<status>".
	Type string
	// RetryAfter is the delay asked for by Retry-After (seconds form) on a
	// 429 or 503; 0 otherwise.
	RetryAfter time.Duration
	// Hold reports a failure of the cluster or the credentials (401, 403,
	// 404, a proxy's 400 ...) rather than a retry-later one.
	Hold bool
	// Err says what happened: the network error, or the answer's error
	// reason or (truncated) body.
	Err error
}

func (e *RequestError) Error() string { return "bulk request: " + e.reason() }

func (e *RequestError) Unwrap() error { return e.Err }

// reason is the one-line Reason given to the request's documents.
func (e *RequestError) reason() string {
	var b strings.Builder
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d ", e.Status)
	}
	b.WriteString(e.Type)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return oneLine(b.String())
}

// result is the ItemResult of each document of the failed request.
func (e *RequestError) result() ItemResult {
	r := ItemResult{Outcome: Retry, Status: e.Status, Type: e.Type, Reason: e.reason()}
	if e.Hold {
		r.Outcome = Hold
	}
	return r
}

// maxReason bounds a Reason: reasons end up in logs, metrics labels' help
// and the dead-letter store, once per document.
const maxReason = 512

// oneLine makes s a single line of at most about maxReason bytes of valid
// UTF-8, so that a proxy's HTML page or a long Elasticsearch reason cannot
// flood logs or the dead-letter store.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
