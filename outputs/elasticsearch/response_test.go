package elasticsearch

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// bulkBody is a bulk response whose items are the given JSON.
func bulkBody(items ...string) string {
	return `{"errors":true,"items":[` + strings.Join(items, ",") + `]}`
}

// esItem is a create item with a status and, if typ is set, an error.
func esItem(status int, typ string) string {
	if typ == "" {
		return fmt.Sprintf(`{"create":{"status":%d}}`, status)
	}
	return fmt.Sprintf(`{"create":{"status":%d,"error":{"type":%q,"reason":"why %s"}}}`, status, typ, typ)
}

// TestClassification pins every row of the outcome table: per item, and
// for whole-request answers.
func TestClassification(t *testing.T) {
	if o := (ItemResult{}).Outcome; o != Pending || o.String() != "pending" {
		t.Fatalf("zero Outcome is %s, want pending", o)
	}
	for o, name := range map[Outcome]string{Delivered: "delivered", Retry: "retry", DeadLetter: "dead_letter", Hold: "hold", Skipped: "skipped"} {
		if o.String() != name {
			t.Fatalf("%d.String() = %q, want %q", o, o, name)
		}
	}

	type want struct {
		outcome   Outcome
		typ       string
		counted   bool
		duplicate bool
	}
	items := []struct {
		name string
		item string
		want want
	}{
		{"201", esItem(201, ""), want{outcome: Delivered}},
		{"200", `{"index":{"status":200}}`, want{outcome: Delivered}},
		{"409 version conflict", esItem(409, "version_conflict_engine_exception"), want{Delivered, "version_conflict_engine_exception", false, true}},
		{"409 without error", esItem(409, ""), want{outcome: Delivered, duplicate: true}},
		{"409 other", esItem(409, "some_conflict"), want{Retry, "some_conflict", true, false}},
		{"429", esItem(429, "es_rejected_execution_exception"), want{outcome: Retry, typ: "es_rejected_execution_exception"}},
		{"502", esItem(502, ""), want{outcome: Retry}},
		{"503", esItem(503, "unavailable_shards_exception"), want{outcome: Retry, typ: "unavailable_shards_exception"}},
		{"504", esItem(504, ""), want{outcome: Retry}},
		{"500", esItem(500, "exception"), want{Retry, "exception", true, false}},
		{"501", esItem(501, ""), want{outcome: Retry, counted: true}},
		{"505", esItem(505, ""), want{outcome: Retry, counted: true}},
		{"408", esItem(408, ""), want{outcome: Retry}},
		{"401", esItem(401, "security_exception"), want{outcome: Hold, typ: "security_exception"}},
		{"403 write block", esItem(403, "cluster_block_exception"), want{outcome: Hold, typ: "cluster_block_exception"}},
		{"404 no index", esItem(404, "index_not_found_exception"), want{outcome: Hold, typ: "index_not_found_exception"}},
		{"400 invalid index name", esItem(400, "invalid_index_name_exception"), want{outcome: Hold, typ: "invalid_index_name_exception"}},
		{"400 index closed", esItem(400, "index_closed_exception"), want{outcome: Hold, typ: "index_closed_exception"}},
		// As Elasticsearch 8.19 answers a bulk request whose pipeline
		// parameter names no pipeline (recorded from the stack's node).
		{"400 missing pipeline", `{"create":{"_index":"ptest","_id":"x2","status":400,"error":{"type":"illegal_argument_exception","reason":"pipeline with id [nope] does not exist"}}}`,
			want{outcome: Hold, typ: "illegal_argument_exception"}},
		// Recorded from the stack's node with cluster.max_shards_per_node 1.
		{"400 shard limit", `{"create":{"_index":"shardtest-x","_id":"x1","status":400,"error":{"type":"validation_exception","reason":"Validation Failed: 1: this action would add [2] shards, but this cluster currently has [6]/[1] maximum normal shards open; for more information, see https://www.elastic.co/guide/en/elasticsearch/reference/8.19/size-your-shards.html#troubleshooting-max-shards-open;"}}}`,
			want{outcome: Hold, typ: "validation_exception"}},
		{"400 other illegal argument", esItem(400, "illegal_argument_exception"), want{outcome: DeadLetter, typ: "illegal_argument_exception"}},
		{"400 mapping", esItem(400, "mapper_parsing_exception"), want{outcome: DeadLetter, typ: "mapper_parsing_exception"}},
		{"400 without error", esItem(400, ""), want{outcome: DeadLetter}},
		{"413", esItem(413, ""), want{outcome: DeadLetter}},
		{"422", esItem(422, "x"), want{outcome: DeadLetter, typ: "x"}},
		{"100", esItem(100, ""), want{outcome: Pending, typ: "bad_response"}},
		{"302", esItem(302, ""), want{outcome: Pending, typ: "bad_response"}},
		{"0", esItem(0, ""), want{outcome: Pending, typ: "bad_response"}},
		{"700", esItem(700, ""), want{outcome: Pending, typ: "bad_response"}},
		{"empty item", `{}`, want{outcome: Pending, typ: "bad_response"}},
		{"missing status", `{"create":{"error":{"type":"x"}}}`, want{outcome: Pending, typ: "bad_response"}},
		{"string status", `{"create":{"status":"201"}}`, want{outcome: Pending, typ: "bad_response"}},
		{"fractional status", `{"create":{"status":201.5}}`, want{outcome: Pending, typ: "bad_response"}},
		{"status key in capitals", `{"create":{"STATUS":201}}`, want{outcome: Pending, typ: "bad_response"}},
		{"two actions", `{"create":{"status":201},"index":{"status":201}}`, want{outcome: Pending, typ: "bad_response"}},
		{"array item", `[201]`, want{outcome: Pending, typ: "bad_response"}},
		{"null item", `null`, want{outcome: Pending, typ: "bad_response"}},
		{"action not an object", `{"create":201}`, want{outcome: Pending, typ: "bad_response"}},
		{"error as a string", `{"create":{"status":400,"error":"bad"}}`, want{outcome: DeadLetter}},
	}
	es := http.Header{"X-Elastic-Product": {"Elasticsearch"}}
	for _, tc := range items {
		t.Run("item "+tc.name, func(t *testing.T) {
			// The item sits between two delivered ones: positions hold.
			a := readAnswer(200, es, []byte(bulkBody(esItem(201, ""), tc.item, esItem(201, ""))), 3)
			if a.err != nil || a.split || len(a.results) != 3 {
				t.Fatalf("answer %+v", a)
			}
			r := a.results[1]
			got := want{r.Outcome, r.Type, r.Counted, r.Duplicate}
			if got != tc.want {
				t.Fatalf("got %+v (%q), want %+v", got, r.Reason, tc.want)
			}
			if a.results[0].Outcome != Delivered || a.results[2].Outcome != Delivered {
				t.Fatalf("neighbours %+v", a.results)
			}
			if r.Outcome != Delivered && r.Outcome != Pending && !strings.HasPrefix(r.Reason, fmt.Sprint(r.Status)) {
				t.Fatalf("reason %q does not start with the status", r.Reason)
			}
		})
	}

	requests := []struct {
		name       string
		status     int
		esHeader   bool
		retryAfter string
		body       string
		n          int
		outcome    Outcome // of every document
		typ        string
		err        bool // a RequestError
		hold       bool
		wait       time.Duration
		split      bool
	}{
		{name: "not json", status: 200, esHeader: true, body: `{"items":[`, n: 2, outcome: Retry, typ: "bad_response", err: true},
		{name: "empty body", status: 200, esHeader: true, body: ``, n: 1, outcome: Retry, typ: "bad_response", err: true},
		{name: "no items", status: 200, esHeader: true, body: `{"errors":false}`, n: 1, outcome: Retry, typ: "bad_response", err: true},
		{name: "fewer items", status: 200, esHeader: true, body: bulkBody(esItem(201, "")), n: 2, outcome: Retry, typ: "bad_response", err: true},
		{name: "more items", status: 200, esHeader: true, body: bulkBody(esItem(201, ""), esItem(201, "")), n: 1, outcome: Retry, typ: "bad_response", err: true},
		{name: "429", status: 429, esHeader: true, retryAfter: "3", body: `{"error":{"type":"es_rejected_execution_exception","reason":"full"},"status":429}`, n: 2, outcome: Retry, typ: "es_rejected_execution_exception", err: true, wait: 3 * time.Second},
		{name: "503 Retry-After", status: 503, retryAfter: "7", body: "busy", n: 2, outcome: Retry, typ: "http_503", err: true, wait: 7 * time.Second},
		{name: "500 ignores Retry-After", status: 500, retryAfter: "7", body: "oops", n: 2, outcome: Retry, typ: "http_500", err: true},
		{name: "502", status: 502, body: "bad gateway", n: 2, outcome: Retry, typ: "http_502", err: true},
		{name: "408", status: 408, body: "", n: 2, outcome: Retry, typ: "http_408", err: true},
		{name: "413 of many", status: 413, n: 2, split: true},
		{name: "413 of one", status: 413, n: 1, outcome: DeadLetter, typ: "request_too_large"},
		{name: "400 from Elasticsearch, many", status: 400, esHeader: true, body: `{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line [3]"},"status":400}`, n: 5, split: true},
		{name: "400 from Elasticsearch, one", status: 400, esHeader: true, body: `{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line [1]"},"status":400}`, n: 1, outcome: DeadLetter, typ: "illegal_argument_exception"},
		{name: "400 from a proxy", status: 400, body: `{"error":{"type":"illegal_argument_exception","reason":"x"}}`, n: 2, outcome: Hold, typ: "http_400", err: true, hold: true},
		{name: "400 without error body", status: 400, esHeader: true, body: `oops`, n: 2, outcome: Hold, typ: "http_400", err: true, hold: true},
		{name: "400 unrecognized parameter", status: 400, esHeader: true, body: `{"error":{"type":"illegal_argument_exception","reason":"request [/_bulk] contains unrecognized parameter: [include_source_on_error]"},"status":400}`, n: 2, outcome: Hold, typ: "illegal_argument_exception", err: true, hold: true},
		{name: "401", status: 401, esHeader: true, body: `{"error":{"type":"security_exception","reason":"missing credentials"},"status":401}`, n: 2, outcome: Hold, typ: "security_exception", err: true, hold: true},
		{name: "403", status: 403, body: "forbidden", n: 2, outcome: Hold, typ: "http_403", err: true, hold: true},
		{name: "404", status: 404, body: "", n: 2, outcome: Hold, typ: "http_404", err: true, hold: true},
		{name: "405", status: 405, n: 1, outcome: Hold, typ: "http_405", err: true, hold: true},
		{name: "406", status: 406, n: 1, outcome: Hold, typ: "http_406", err: true, hold: true},
		{name: "415", status: 415, n: 1, outcome: Hold, typ: "http_415", err: true, hold: true},
		{name: "422", status: 422, n: 1, outcome: Hold, typ: "http_422", err: true, hold: true},
		{name: "301", status: 301, n: 1, outcome: Hold, typ: "http_301", err: true, hold: true},
	}
	for _, tc := range requests {
		t.Run("request "+tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.esHeader {
				h.Set("X-Elastic-Product", "Elasticsearch")
			}
			if tc.retryAfter != "" {
				h.Set("Retry-After", tc.retryAfter)
			}
			a := readAnswer(tc.status, h, []byte(tc.body), tc.n)
			if len(a.results) != tc.n || a.split != tc.split || (a.err != nil) != tc.err {
				t.Fatalf("answer %+v", a)
			}
			if a.err != nil && (a.err.Hold != tc.hold || a.err.RetryAfter != tc.wait || a.err.Type != tc.typ || a.err.Status != tc.status) {
				t.Fatalf("err %+v", a.err)
			}
			for i, r := range a.results {
				if tc.split {
					if r != (ItemResult{}) {
						t.Fatalf("split: result %d is %+v, want pending", i, r)
					}
					continue
				}
				if r.Outcome != tc.outcome || r.Type != tc.typ || r.Status != tc.status || r.Counted || r.Reason == "" {
					t.Fatalf("result %d: %+v, want %s %s", i, r, tc.outcome, tc.typ)
				}
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes: the cut falls inside a rune
	got := oneLine("a\nb\r\n\tc " + long + "\xff")
	if !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n\t") || len(got) > maxReason+len("…") || !strings.HasPrefix(got, "a b c é") {
		t.Fatalf("oneLine = %q (%d bytes)", got, len(got))
	}
}

// FuzzBulkResponse feeds readAnswer arbitrary answers. For any input it
// must return exactly n results, each a defined Outcome, Delivered only
// where the body says 2xx or 409-conflict for that position, and reasons
// that are single bounded lines.
func FuzzBulkResponse(f *testing.F) {
	seeds := []struct {
		status   int
		esHeader bool
		body     string
		n        uint8
	}{
		{200, true, bulkBody(esItem(201, ""), esItem(409, "version_conflict_engine_exception")), 2},
		{200, true, `{"errors":false,"items":[{"create":{"status":201}}]}`, 1},
		{200, true, bulkBody(esItem(400, "mapper_parsing_exception"), esItem(429, "x"), esItem(503, "")), 3},
		{200, true, bulkBody(`{}`, esItem(201, "")), 2},
		{200, true, bulkBody(`{}`, `[]`, `null`, `1`, `"s"`), 5},
		{200, true, `{"errors":false,"items":[{"create":{"status":201}}`, 1},
		{200, true, `{"errors":false,"items":[{"create":{"status":201}}]}`, 3},
		{200, true, `{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}}]}`, 1},
		{200, false, `{"items":[{"create":{"status":-1}},{"create":{"status":1e2}},{"create":{"status":99999999999999999999}}]}`, 3},
		{200, true, `{"items":[{"create":{"status":201,"status":500}}],"items":[{"index":{"status":200}}]}`, 1},
		{200, true, `{"Items":[{"create":{"status":201}}]}`, 1},
		{200, true, `{"errors":false,"items":[{"create":{"status":201}}],"items":[{"create":{"status":500}}]}`, 1},
		{200, true, `{"errors":false,"items":[{"create":{"status":201}}]}` + "\n", 1},
		{204, false, ``, 0},
		{0, false, ``, 1},
		{1, false, `x`, 1},
		{302, false, `moved`, 2},
		{413, false, ``, 1},
		{413, false, ``, 7},
		{400, true, `{"error":{"type":"illegal_argument_exception","reason":"Malformed"},"status":400}`, 1},
		{400, true, `{"error":{"type":"illegal_argument_exception","reason":"Malformed"},"status":400}`, 9},
		{400, false, `<html>bad</html>`, 2},
		{401, true, `{"error":{"type":"security_exception","reason":"no"},"status":401}`, 2},
		{429, true, `{"error":"string error"}`, 2},
		{503, false, strings.Repeat("\n\xff", 700), 1},
		{999, false, ``, 1},
	}
	for _, s := range seeds {
		f.Add(s.status, s.esHeader, "5", []byte(s.body), s.n)
	}
	f.Fuzz(func(t *testing.T, status int, esHeader bool, retryAfter string, body []byte, n8 uint8) {
		n := int(n8 % 65)
		h := http.Header{"Retry-After": {retryAfter}}
		if esHeader {
			h.Set("X-Elastic-Product", "Elasticsearch")
		}
		a := readAnswer(status, h, body, n)
		if len(a.results) != n {
			t.Fatalf("%d results for %d documents", len(a.results), n)
		}
		if a.split && (n < 2 || status != 413 && status != 400) {
			t.Fatalf("split of %d documents on %d", n, status)
		}
		delivered := deliveredByBody(status, body, n)
		for i, r := range a.results {
			if r.Outcome > Skipped {
				t.Fatalf("result %d: undefined outcome %d", i, r.Outcome)
			}
			if r.Outcome == Delivered && !delivered[i] {
				t.Fatalf("result %d delivered, but the answer does not say so: %+v", i, r)
			}
			if a.err != nil && r != a.err.result() {
				t.Fatalf("result %d: %+v on a failed request %+v", i, r, a.err)
			}
			if a.split && r != (ItemResult{}) {
				t.Fatalf("result %d: %+v on a split", i, r)
			}
			if len(r.Reason) > maxReason+len("…") || strings.ContainsAny(r.Reason, "\r\n") || !utf8.ValidString(r.Reason) {
				t.Fatalf("result %d: reason %q", i, r.Reason)
			}
		}
		if a.err != nil && a.err.RetryAfter < 0 {
			t.Fatalf("negative RetryAfter %s", a.err.RetryAfter)
		}
	})
}

// deliveredByBody is an independent reading of which positions a bulk
// answer reports indexed: a 2xx answer whose items array has n entries,
// the one at that position an object with one key whose "status" is
// 200-299, or 409 with no error or a version conflict.
func deliveredByBody(status int, body []byte, n int) []bool {
	ok := make([]bool, n)
	var top map[string]any
	if status < 200 || status > 299 || json.Unmarshal(body, &top) != nil {
		return ok
	}
	items, _ := top["items"].([]any)
	if len(items) != n {
		return ok
	}
	for i, it := range items {
		obj, _ := it.(map[string]any)
		if len(obj) != 1 {
			continue
		}
		for _, v := range obj {
			fields, _ := v.(map[string]any)
			s, isNum := fields["status"].(float64)
			if !isNum {
				continue
			}
			typ := ""
			if e, _ := fields["error"].(map[string]any); e != nil {
				typ, _ = e["type"].(string)
			}
			ok[i] = s >= 200 && s < 300 || s == 409 && (typ == "" || typ == "version_conflict_engine_exception")
		}
	}
	return ok
}

// BenchmarkReadAnswer reads the answer to a bulk request of 10000
// documents, one in a hundred failed.
func BenchmarkReadAnswer(b *testing.B) {
	items := make([]string, 10000)
	for i := range items {
		items[i] = esItem(201, "")
		if i%100 == 0 {
			items[i] = esItem(400, "mapper_parsing_exception")
		}
	}
	body := []byte(bulkBody(items...))
	h := http.Header{"X-Elastic-Product": {"Elasticsearch"}}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if a := readAnswer(200, h, body, len(items)); a.err != nil {
			b.Fatal(a.err)
		}
	}
}
