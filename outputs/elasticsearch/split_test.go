package elasticsearch_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// TestSend413LearnsLimit proves that a node refusing bodies over its
// http.max_content_length (413, empty body, connection closed) neither
// loses nor wedges anything: requests are halved until they pass, the
// learned limit keeps later requests under it, and only a document too
// large on its own is dead-lettered, with its size in the reason.
func TestSend413LearnsLimit(t *testing.T) {
	const maxContent = 64 << 10
	for _, withHuge := range []bool{false, true} {
		t.Run(fmt.Sprintf("huge=%v", withHuge), func(t *testing.T) {
			srv := estest.New(t)
			srv.MaxContentLength(maxContent)
			out := newOutput(t, srv, func(c *elasticsearch.Config) { c.MaxBulkBytes = 8 << 20 })
			var values []string
			for i := range 500 {
				values = append(values, fmt.Sprintf("%04d %s", i, strings.Repeat("x", 1000)))
			}
			huge := -1
			if withHuge {
				huge = 250
				values = slices.Insert(values, huge, strings.Repeat("y", 100<<10))
			}
			res, err := out.Send(context.Background(), records(values...))
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if i == huge {
					continue
				}
				if r.Outcome != elasticsearch.Delivered {
					t.Fatalf("item %d: %+v", i, r)
				}
			}
			if n := len(srv.Docs("test")); n != 500 {
				t.Fatalf("%d documents stored, want 500", n)
			}
			if l := out.BulkLimit(); l >= maxContent {
				t.Fatalf("BulkLimit() = %d, want below %d", l, maxContent)
			}
			// Once learned, the limit holds: the next Send is refused no more
			// (but for the huge document, alone).
			var accepted atomic.Int64
			srv.OnBulk(func(estest.Bulk) (int, string) { accepted.Add(1); return 0, "" })
			before := srv.Requests()
			recs := records(values...)
			for _, r := range recs {
				r.Offset += 10000
			}
			if _, err := out.Send(context.Background(), recs); err != nil {
				t.Fatal(err)
			}
			wantRefused := 0
			if withHuge {
				wantRefused = 1
			}
			if refused := srv.Requests() - before - int(accepted.Load()); refused != wantRefused {
				t.Fatalf("second Send: %d requests refused with 413, %d accepted", refused, accepted.Load())
			}
			if !withHuge {
				return
			}
			r := res[huge]
			m := regexp.MustCompile(`^document of (\d+) bytes`).FindStringSubmatch(r.Reason)
			if r.Outcome != elasticsearch.DeadLetter || r.Type != "request_too_large" || r.Status != 413 || m == nil {
				t.Fatalf("huge document: %+v", r)
			}
			if size, _ := strconv.Atoi(m[1]); size < 100<<10 || size > 100<<10+100 {
				t.Fatalf("reason names %d bytes for a value of %d: %q", size, 100<<10, r.Reason)
			}
		})
	}
}

// TestSendPoison400 proves that a document that breaks the whole bulk body
// (Elasticsearch answers the request with a 400) is found by halving in
// O(log n) requests and dead-lettered alone, with Elasticsearch's reason.
func TestSendPoison400(t *testing.T) {
	const n, poison = 1000, 617
	poisonID := fmt.Sprintf("app-logs-2-%d", 100+poison)
	srv := estest.New(t)
	srv.OnBulk(func(b estest.Bulk) (int, string) {
		if slices.Contains(b.IDs, poisonID) {
			return 400, `{"error":{"root_cause":[],"type":"illegal_argument_exception","reason":"Malformed action/metadata line [3], expected START_OBJECT but found [VALUE_STRING]"},"status":400}`
		}
		return 0, ""
	})
	out := newOutput(t, srv, nil)
	var values []string
	for i := range n {
		values = append(values, fmt.Sprintf("line %d", i))
	}
	res, err := out.Send(context.Background(), records(values...))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		want := elasticsearch.Delivered
		if i == poison {
			want = elasticsearch.DeadLetter
		}
		if r.Outcome != want {
			t.Fatalf("item %d: %+v, want %s", i, r, want)
		}
	}
	if r := res[poison]; r.Type != "illegal_argument_exception" || r.Status != 400 || !strings.Contains(r.Reason, "Malformed action/metadata line") {
		t.Fatalf("poison: %+v", r)
	}
	if got := len(srv.Docs("test")); got != n-1 {
		t.Fatalf("%d documents stored, want %d", got, n-1)
	}
	bound := 2*int(math.Ceil(math.Log2(n))) + 2
	if got := srv.Requests(); got > bound {
		t.Fatalf("%d requests to find one poison document among %d, want at most %d", got, n, bound)
	}
}

// TestSendHold proves that answers blaming the cluster, the credentials or
// something in between hold every document of the request, and report it
// as a Hold RequestError, instead of dead-lettering documents.
func TestSendHold(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		esBody    string // answered by the fake node, with X-Elastic-Product
		proxyBody string // answered by a plain HTTP server in its place
		typ       string
		reason    string
	}{
		{name: "401 security_exception", status: 401,
			esBody: `{"error":{"type":"security_exception","reason":"missing authentication credentials for REST request [/_bulk]"},"status":401}`,
			typ:    "security_exception", reason: "401 security_exception: missing authentication credentials"},
		{name: "403", status: 403,
			esBody: `{"error":{"type":"security_exception","reason":"action [indices:data/write/bulk] is unauthorized"},"status":403}`,
			typ:    "security_exception", reason: "403 security_exception: action"},
		{name: "400 from a proxy", status: 400, proxyBody: "<html><body>400 Bad Request</body></html>\n",
			typ: "http_400", reason: "400 http_400: <html><body>400 Bad Request</body></html>"},
		{name: "400 unrecognized parameter", status: 400,
			esBody: `{"error":{"type":"illegal_argument_exception","reason":"request [/_bulk] contains unrecognized parameter: [include_source_on_error]"},"status":400}`,
			typ:    "illegal_argument_exception", reason: "unrecognized parameter"},
		{name: "405 from a proxy", status: 405, proxyBody: "method not allowed", typ: "http_405", reason: "405 http_405: method not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := ""
			if tc.esBody != "" {
				srv := estest.New(t)
				srv.OnBulk(func(estest.Bulk) (int, string) { return tc.status, tc.esBody })
				url = srv.URL
			} else {
				proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(tc.status)
					fmt.Fprint(w, tc.proxyBody)
				}))
				t.Cleanup(proxy.Close)
				url = proxy.URL
			}
			cfg := elasticsearch.DefaultConfig()
			cfg.URLs = []string{url}
			out, err := elasticsearch.New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			res, err := out.Send(context.Background(), records("a", "b", "c"))
			var reqErr *elasticsearch.RequestError
			if !errors.As(err, &reqErr) || !reqErr.Hold || reqErr.Status != tc.status || reqErr.Type != tc.typ {
				t.Fatalf("err = %#v", err)
			}
			for i, r := range res {
				if r.Outcome != elasticsearch.Hold || r.Status != tc.status || r.Type != tc.typ || !strings.Contains(r.Reason, tc.reason) {
					t.Fatalf("item %d: %+v, want hold, reason containing %q", i, r, tc.reason)
				}
			}
		})
	}
}

// TestSend503RetryAfter proves that a 503 answer to the whole request is a
// retry-later, uncounted, with the server's Retry-After.
func TestSend503RetryAfter(t *testing.T) {
	srv := estest.New(t)
	srv.OnRequest(func(int) (int, string) { return 503, "7" })
	out := newOutput(t, srv, nil)
	res, err := out.Send(context.Background(), records("a", "b"))
	var reqErr *elasticsearch.RequestError
	if !errors.As(err, &reqErr) || reqErr.Status != 503 || reqErr.RetryAfter.Seconds() != 7 || reqErr.Hold {
		t.Fatalf("err = %#v", err)
	}
	for _, r := range res {
		if r.Outcome != elasticsearch.Retry || r.Counted || r.Status != 503 {
			t.Fatalf("res = %+v", res)
		}
	}
}

// TestSendItemAnswers covers per-item answers end to end: counted and
// uncounted retries, a 409 that is not a conflict, a hold, and an item the
// response garbles ({}), which stays Pending and is delivered when sent
// again.
func TestSendItemAnswers(t *testing.T) {
	srv := estest.New(t)
	srv.OnItem(func(id string, _ []byte) (int, string) {
		switch id {
		case "app-logs-2-100":
			return 500, "internal_server_error"
		case "app-logs-2-101":
			return 503, "unavailable_shards_exception"
		case "app-logs-2-102":
			return 409, "some_other_conflict"
		case "app-logs-2-103":
			return 403, "cluster_block_exception"
		case "app-logs-2-104":
			return 400, "index_closed_exception"
		case "app-logs-2-106":
			return 429, "es_rejected_execution_exception"
		case "app-logs-2-107":
			return 400, "mapper_parsing_exception"
		}
		return 0, ""
	})
	var garble atomic.Bool
	garble.Store(true)
	srv.OnItemResponse(func(id string) (string, bool) { return "{}", garble.Load() && id == "app-logs-2-105" })
	out := newOutput(t, srv, nil)
	recs := records("a", "b", "c", "d", "e", "f", "g", "h", "i")
	res, err := out.Send(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	want := []elasticsearch.ItemResult{
		{Outcome: elasticsearch.Retry, Status: 500, Type: "internal_server_error", Counted: true},
		{Outcome: elasticsearch.Retry, Status: 503, Type: "unavailable_shards_exception"},
		{Outcome: elasticsearch.Retry, Status: 409, Type: "some_other_conflict", Counted: true},
		{Outcome: elasticsearch.Hold, Status: 403, Type: "cluster_block_exception"},
		{Outcome: elasticsearch.Hold, Status: 400, Type: "index_closed_exception"},
		{Outcome: elasticsearch.Pending, Type: "bad_response"},
		{Outcome: elasticsearch.Retry, Status: 429, Type: "es_rejected_execution_exception"},
		{Outcome: elasticsearch.DeadLetter, Status: 400, Type: "mapper_parsing_exception"},
		{Outcome: elasticsearch.Delivered, Status: 201},
	}
	for i, r := range res {
		reason := r.Reason
		r.Reason = ""
		if r != want[i] {
			t.Errorf("item %d: %+v, want %+v", i, r, want[i])
		}
		if r.Outcome == elasticsearch.DeadLetter && !strings.Contains(reason, "400 mapper_parsing_exception") {
			t.Errorf("item %d: reason %q", i, reason)
		}
	}
	// The garbled item was indexed all the same: sent again, it is found.
	garble.Store(false)
	res, err = out.Send(context.Background(), recs[5:])
	if err != nil || res[0].Outcome != elasticsearch.Delivered || !res[0].Duplicate || res[0].Status != 409 {
		t.Fatalf("resend: %+v, %v", res, err)
	}
}

// A 429 that says the request alone is over the node's indexing-pressure
// limit is not throttling: retried as it is, it would be refused for ever.
// It is split like a 413, and a document over the limit alone is
// dead-lettered; a 429 from a node busy with other requests stays a retry.
func TestSendOverIndexingPressure(t *testing.T) {
	const limit = 64 << 10
	pressure := func(size, maxBytes int) string {
		return fmt.Sprintf(`{"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=%d, max_coordinating_bytes=%d]"},"status":429}`, size, maxBytes)
	}
	srv := estest.New(t)
	srv.OnBulk(func(b estest.Bulk) (int, string) {
		if b.Size > limit {
			return 429, pressure(b.Size, limit)
		}
		return 0, ""
	})
	out := newOutput(t, srv, func(c *elasticsearch.Config) { c.MaxBulkBytes = 8 << 20 })
	var values []string
	for i := range 300 {
		values = append(values, fmt.Sprintf("%04d %s", i, strings.Repeat("x", 1000)))
	}
	values = append(values, strings.Repeat("z", 100<<10)) // over the limit alone
	res, err := out.Send(context.Background(), records(values...))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		want := elasticsearch.Delivered
		if i == len(values)-1 {
			want = elasticsearch.DeadLetter
		}
		if r.Outcome != want {
			t.Fatalf("record %d: %+v, want %s", i, r, want)
		}
	}
	last := res[len(res)-1]
	if last.Type != "request_too_large" || last.Status != 429 || !strings.Contains(last.Reason, "indexing pressure") {
		t.Fatalf("the oversized document: %+v", last)
	}
	if n := len(srv.Docs("test")); n != 300 || out.BulkLimit() >= limit {
		t.Fatalf("%d documents stored; bulk limit %d", n, out.BulkLimit())
	}

	// Busy with others: the request's own bytes are under the limit.
	busy := estest.New(t)
	busy.OnBulk(func(b estest.Bulk) (int, string) { return 429, pressure(1000, limit) })
	out2 := newOutput(t, busy, nil)
	res, err = out2.Send(context.Background(), records("a", "b"))
	var reqErr *elasticsearch.RequestError
	if !errors.As(err, &reqErr) || reqErr.Status != 429 || res[0].Outcome != elasticsearch.Retry || busy.Requests() != 1 {
		t.Fatalf("a busy node: %v %+v (%d requests)", err, res, busy.Requests())
	}
}
