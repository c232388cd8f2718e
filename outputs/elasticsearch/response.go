package elasticsearch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// answer is what one HTTP answer to a bulk request of n documents means.
type answer struct {
	// status is the HTTP status; 0 when no response arrived.
	status int
	// results has exactly n entries, in request order.
	results []ItemResult
	// err is set when the request failed as a whole with a retry-later or
	// hold outcome; results then all carry it.
	err *RequestError
	// split is set when n > 1 and Elasticsearch refused the request for
	// what it holds (413 too large, 400 unparsable): the caller sends it
	// again as two halves. results are then all Pending.
	split bool
	// tooLarge is set when the request was refused for its size: a 413, or
	// a 429 saying the request alone is over the node's indexing-pressure
	// limit. The caller lowers its bulk limit.
	tooLarge bool
}

// readAnswer classifies one HTTP answer (status, headers, body) to a bulk
// request of n documents. It decides from the answer alone, so that no
// answer, however malformed, can leave a document without a result.
func readAnswer(status int, h http.Header, body []byte, n int) answer {
	a := answer{status: status, results: make([]ItemResult, n)}
	var esType, esReason string
	if status < 200 || status >= 300 {
		// Only an answer that failed as a whole has an error object; a
		// 2xx body is the items, too large to decode twice for nothing.
		esType, esReason = errorBody(h, body)
	}
	answered := status
	if status == http.StatusTooManyRequests && overIndexingPressure(esType, esReason) {
		// Not throttling: this request alone is more than the node takes
		// at once (indexing_pressure.memory.limit, 10% of its heap), and
		// would be refused for ever. Treated as a 413.
		status = http.StatusRequestEntityTooLarge
	}
	switch {
	case status >= 200 && status < 300:
		items, err := decodeItems(body, n)
		if err != nil {
			return failAll(n, &RequestError{Status: status, Type: "bad_response", Err: err})
		}
		for i, it := range items {
			a.results[i] = classifyItem(it)
		}
		return a
	case status == http.StatusRequestEntityTooLarge ||
		status == http.StatusBadRequest && esType != "" && !strings.Contains(esReason, "unrecognized parameter"):
		// The request's content is at fault: a body over
		// http.max_content_length, or a line Elasticsearch cannot parse.
		// Halving finds the document; alone, it is a dead letter. (A
		// parameter this Elasticsearch does not know would fail every
		// document alone too: it is the cluster's, below.)
		a.tooLarge = status == http.StatusRequestEntityTooLarge
		if n != 1 {
			a.split = n > 1
			return a
		}
		r := ItemResult{Outcome: DeadLetter, Status: answered, Type: esType,
			Reason: oneLine(fmt.Sprintf("%d %s: %s", answered, esType, esReason))}
		if status == http.StatusRequestEntityTooLarge {
			r.Type = "request_too_large"
			r.Reason = "Elasticsearch refused the request with 413 (http.max_content_length or a proxy's limit)"
			if esReason != "" {
				r.Reason = "Elasticsearch refused the request: it alone is over the node's indexing pressure limit: " + oneLine(esReason)
			}
		}
		a.results[0] = r
		return a
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500 && status < 600:
		e := requestError(status, esType, esReason, body)
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			e.RetryAfter = retryAfter(h)
		}
		return failAll(n, e)
	default:
		// 401, 403, 404, a proxy's 400, a redirect, an older version's
		// "unrecognized parameter" 400...: the address, the credentials, the
		// cluster or something in between is wrong, not the documents.
		e := requestError(status, esType, esReason, body)
		e.Hold = true
		return failAll(n, e)
	}
}

// failAll is the answer to a request of n documents that failed as a whole.
func failAll(n int, e *RequestError) answer {
	a := answer{status: e.Status, err: e, results: make([]ItemResult, n)}
	for i := range a.results {
		a.results[i] = e.result()
	}
	return a
}

// requestError describes a whole-request failure from Elasticsearch's
// error body if it sent one, else from the raw body.
func requestError(status int, esType, esReason string, body []byte) *RequestError {
	if esType != "" {
		return &RequestError{Status: status, Type: esType, Err: errors.New(oneLine(esReason))}
	}
	return &RequestError{Status: status, Type: "http_" + strconv.Itoa(status), Err: errors.New(oneLine(string(body)))}
}

// errorBody returns the error type and reason of an Elasticsearch error
// answer ({"error":{"type":...,"reason":...},"status":...}), or "" when the
// answer is not one: it lacks the X-Elastic-Product header Elasticsearch
// sets on every answer it produces, so a proxy's error page never passes
// for Elasticsearch's.
func errorBody(h http.Header, body []byte) (typ, reason string) {
	if h.Get("X-Elastic-Product") != "Elasticsearch" {
		return "", ""
	}
	var e struct {
		Error struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	return e.Error.Type, e.Error.Reason
}

// item is one decoded entry of a bulk response's items.
type item struct {
	ok      bool // an object with one action key whose value has an integer status
	action  string
	status  int
	errType string
	reason  string
}

// decodeItems decodes the items of a bulk response to n documents. An
// unreadable body or a wrong number of items is an error: positions cannot
// be trusted. A single unreadable item is not: it is returned with ok false.
//
// Keys are matched exactly (encoding/json matches struct fields without
// regard to case, which would read "STATUS" as the status).
func decodeItems(body []byte, n int) ([]item, error) {
	if arr, ok := itemsArray(body); ok && validJSON(arr) {
		// The usual answer: its items read in place, without a copy of
		// each (encoding/json's RawMessage) and without decoding it twice.
		if r := gjson.ParseBytes(arr); r.IsArray() {
			items := make([]item, 0, n)
			r.ForEach(func(_, v gjson.Result) bool {
				items = append(items, decodeItem(v.Raw))
				return len(items) <= n
			})
			if len(items) != n {
				return nil, fmt.Errorf("response has %d items for %d documents", r.Get("#").Int(), n)
			}
			return items, nil
		}
	}
	// Any other shape: decoded as a whole, the last "items" key winning.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(top["items"], &raws); err != nil {
		return nil, fmt.Errorf("decode response items: %w", err)
	}
	if len(raws) != n {
		return nil, fmt.Errorf("response has %d items for %d documents", len(raws), n)
	}
	items := make([]item, n)
	for i, raw := range raws {
		items[i] = decodeItem(raw)
	}
	return items, nil
}

// itemsArray returns the items array of a body shaped exactly as
// filter_path makes Elasticsearch's answer, {"errors":…,"items":[…]}, so
// that the usual answer is read in place. Any other shape, or an array
// that is not valid JSON, takes the general path.
func itemsArray(body []byte) ([]byte, bool) {
	for _, prefix := range []string{`{"errors":false,"items":`, `{"errors":true,"items":`} {
		if rest, ok := bytes.CutPrefix(body, []byte(prefix)); ok {
			return bytes.CutSuffix(rest, []byte("}"))
		}
	}
	return nil, false
}

// createdItem is a created document's item as filter_path leaves it: most
// items, read without the three decodes below.
const createdItem = `{"create":{"status":201}}`

func decodeItem[S ~string | ~[]byte](raw S) item {
	if string(raw) == createdItem {
		return item{ok: true, status: http.StatusCreated}
	}
	var action map[string]json.RawMessage
	if json.Unmarshal([]byte(raw), &action) != nil || len(action) != 1 {
		return item{}
	}
	for _, v := range action {
		var fields map[string]json.RawMessage
		if json.Unmarshal(v, &fields) != nil {
			return item{}
		}
		var it item
		if json.Unmarshal(fields["status"], &it.status) != nil {
			return item{}
		}
		for k := range action {
			it.action = k
		}
		it.ok = true
		if e, found := fields["error"]; found {
			var ef map[string]json.RawMessage
			if json.Unmarshal(e, &ef) == nil {
				// A non-string type or reason reads as empty.
				_ = json.Unmarshal(ef["type"], &it.errType)
				_ = json.Unmarshal(ef["reason"], &it.reason)
			} else {
				_ = json.Unmarshal(e, &it.reason) // an error given as a bare string
			}
		}
		return it
	}
	return item{}
}

// holdItemTypes are 400 errors about the cluster, not the document.
var holdItemTypes = map[string]bool{"invalid_index_name_exception": true, "index_closed_exception": true}

// holdItemReasons mark 400 errors about the cluster whose type is too
// general to tell (illegal_argument_exception, validation_exception): every
// document would fail alike until an operator acts, so dead-lettering them
// would empty the topic into the dead-letter store. A reason matches an
// entry when it contains each of its parts.
var holdItemReasons = [][]string{
	// pipeline, or an index's default_pipeline or final_pipeline, missing
	{"pipeline with id [", "] does not exist"},
	// a new (dated) index would pass cluster.max_shards_per_node
	{"maximum normal shards open"},
	{"maximum shards open"}, // wording before 7.x
}

func heldForReason(reason string) bool {
	for _, parts := range holdItemReasons {
		matched := true
		for _, p := range parts {
			matched = matched && strings.Contains(reason, p)
		}
		if matched {
			return true
		}
	}
	return false
}

// classifyItem maps one bulk response item to its outcome.
func classifyItem(it item) ItemResult {
	if !it.ok {
		return ItemResult{Outcome: Pending, Type: "bad_response", Reason: "bulk response item without an action and a numeric status"}
	}
	s := it.status
	r := ItemResult{Status: s, Type: it.errType}
	if it.errType != "" || it.reason != "" || s < 200 || s >= 300 {
		r.Reason = oneLine(fmt.Sprintf("%d %s: %s", s, it.errType, it.reason))
	}
	switch {
	case s >= 200 && s < 300:
		r.Outcome = Delivered
	case s == http.StatusNotFound && it.action == "delete" && it.errType == "":
		// Nothing to delete: not indexed yet, or deleted already.
		r.Outcome = Delivered
	case s == http.StatusConflict && (it.errType == "" || it.errType == "version_conflict_engine_exception"):
		// create found our deterministic id already indexed: an earlier
		// attempt or a replay delivered it; or, with key ids, the
		// document holds a later offset of the key already.
		r.Outcome, r.Duplicate = Delivered, true
	case s == http.StatusConflict:
		r.Outcome, r.Counted = Retry, true
	case s == http.StatusTooManyRequests, s == http.StatusRequestTimeout,
		s == http.StatusBadGateway, s == http.StatusServiceUnavailable, s == http.StatusGatewayTimeout:
		// Cluster state (unavailable shards, a full queue): not the
		// document's fault, never counted against it.
		r.Outcome = Retry
	case s >= 500 && s < 600:
		r.Outcome, r.Counted = Retry, true
	case s == http.StatusUnauthorized, s == http.StatusForbidden, s == http.StatusNotFound,
		s == http.StatusBadRequest && (holdItemTypes[it.errType] || heldForReason(it.reason)):
		// security_exception, a write block, a missing or closed index
		// with auto-create off, a missing pipeline, the shard limit: the
		// cluster is wrong, not the document.
		r.Outcome = Hold
	case s >= 400 && s < 500:
		r.Outcome = DeadLetter
	default:
		// 1xx, 3xx, 0 or nonsense: no usable answer for this document.
		r.Outcome, r.Type = Pending, "bad_response"
	}
	return r
}

// retryAfter reads Retry-After in its seconds form; the HTTP-date form is
// not used by Elasticsearch and reads as 0.
func retryAfter(h http.Header) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After")))
	if err != nil || s <= 0 {
		return 0
	}
	return time.Duration(min(s, 24*3600)) * time.Second
}

// overIndexingPressure reports a 429 whose reason says the request by
// itself is over the node's indexing-pressure limit, e.g. "rejected
// execution of coordinating operation [..., coordinating_operation_bytes=
// 54546944, max_coordinating_bytes=53687091]", as opposed to a node busy
// with other requests.
func overIndexingPressure(esType, reason string) bool {
	if esType != "es_rejected_execution_exception" {
		return false
	}
	op, okOp := reasonBytes(reason, "coordinating_operation_bytes=")
	limit, okMax := reasonBytes(reason, "max_coordinating_bytes=")
	return okOp && okMax && op > limit
}

// reasonBytes reads the number after key in an Elasticsearch reason.
func reasonBytes(reason, key string) (int64, bool) {
	i := strings.Index(reason, key)
	if i < 0 {
		return 0, false
	}
	rest := reason[i+len(key):]
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	n, err := strconv.ParseInt(rest[:end], 10, 64)
	return n, err == nil
}
