package elasticsearch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// TestMain checks that no test leaves a goroutine behind (a connection of
// an Output not closed, a server not stopped).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newOutput(t *testing.T, srv *estest.Server, mutate func(*elasticsearch.Config)) *elasticsearch.Output {
	t.Helper()
	return newOutputAt(t, srv.URL, mutate)
}

// newOutputAt returns an Output of one node at url, index "test", closed
// with the test.
func newOutputAt(t *testing.T, url string, mutate func(*elasticsearch.Config)) *elasticsearch.Output {
	t.Helper()
	cfg := elasticsearch.DefaultConfig()
	cfg.URLs = []string{url}
	cfg.Index = "test"
	cfg.RequestTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	out, err := elasticsearch.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return out
}

var ts = time.Date(2026, 11, 21, 6, 30, 0, 123e6, time.UTC)

func records(values ...string) []*shipper.Record {
	var out []*shipper.Record
	for i, v := range values {
		out = append(out, &shipper.Record{Topic: "app-logs", Partition: 2, Offset: int64(100 + i), Value: []byte(v), Time: ts})
	}
	return out
}

func TestDocuments(t *testing.T) {
	cases := []struct {
		name, value string
		want        map[string]any
	}{
		{"object gets kafka timestamp", `{"level":"info","msg":"hi"}`,
			map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "level": "info", "msg": "hi"}},
		{"object keeps its own timestamp", `{"@timestamp":"2020-01-01T00:00:00Z","n":1}`,
			map[string]any{"@timestamp": "2020-01-01T00:00:00Z", "n": float64(1)}},
		{"nested @timestamp is not the document's", `{"inner":{"@timestamp":"x"}}`,
			map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "inner": map[string]any{"@timestamp": "x"}}},
		{"empty object", `{}`, map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z"}},
		{"pretty-printed object is compacted", "{\n  \"a\": \"b\"\n}\n",
			map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "a": "b"}},
		{"plain text", `GET /index.html 200 "quoted" \ backslash`,
			map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "message": `GET /index.html 200 "quoted" \ backslash`}},
		{"multi-line text", "panic: boom\n\tat main.go:1",
			map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "message": "panic: boom\n\tat main.go:1"}},
		{"json array is wrapped", `[1,2]`, map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "message": `[1,2]`}},
		{"broken json is wrapped", `{"a":`, map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "message": `{"a":`}},
		{"blank value is text", ` `, map[string]any{"@timestamp": "2026-11-21T06:30:00.123Z", "message": " "}},
	}
	srv := estest.New(t)
	out := newOutput(t, srv, nil)
	var values []string
	for _, c := range cases {
		values = append(values, c.value)
	}
	recs := records(values...)
	res, err := out.Send(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	docs := srv.Docs("test")
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if res[i].Outcome != elasticsearch.Delivered {
				t.Fatalf("outcome %+v", res[i])
			}
			id := fmt.Sprintf("app-logs-2-%d", 100+i)
			var got map[string]any
			if err := json.Unmarshal(docs[id], &got); err != nil {
				t.Fatalf("doc %s: %v (%s)", id, err, docs[id])
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("doc = %v\nwant  %v", got, c.want)
			}
		})
	}
}

func TestSendReplayIsDelivered(t *testing.T) {
	srv := estest.New(t)
	out := newOutput(t, srv, nil)
	recs := records("a", "b", "c")
	for attempt := range 2 {
		res, err := out.Send(context.Background(), recs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			wantStatus := 201
			if attempt == 1 {
				wantStatus = 409
			}
			if r.Outcome != elasticsearch.Delivered || r.Status != wantStatus {
				t.Fatalf("attempt %d item %d: %+v", attempt, i, r)
			}
		}
	}
	if n := len(srv.Docs("test")); n != 3 {
		t.Fatalf("%d documents, want 3", n)
	}
}

func TestSendSplitsLargeChunks(t *testing.T) {
	srv := estest.New(t)
	out := newOutput(t, srv, func(c *elasticsearch.Config) { c.MaxBulkBytes = 64 << 10 })
	var values []string
	for range 50 {
		values = append(values, strings.Repeat("x", 5000))
	}
	values = append(values, strings.Repeat("y", 100<<10)) // alone over the limit: sent by itself
	res, err := out.Send(context.Background(), records(values...))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Outcome != elasticsearch.Delivered {
			t.Fatalf("item %d: %+v", i, r)
		}
	}
	if n := len(srv.Docs("test")); n != 51 {
		t.Fatalf("%d documents, want 51", n)
	}
	if n := srv.Requests(); n < 5 {
		t.Fatalf("%d bulk requests for ~350KB at 64KiB each", n)
	}
}

// TestSendRequestFailure proves that a whole-request failure mid-Send stops
// sending: earlier requests keep their results, the failed request's
// documents are Retry with its status and the rest are Pending (not sent,
// not an attempt).
func TestSendRequestFailure(t *testing.T) {
	cases := []struct {
		name      string
		fail      func(srv *estest.Server)
		status    int
		typ       string
		retryWait time.Duration
		requests  int // the failing one's tries included; none after it
	}{
		{"429 with Retry-After", func(srv *estest.Server) {
			srv.OnRequest(func(n int) (int, string) {
				if n == 2 {
					return 429, "7"
				}
				return 0, ""
			})
		}, 429, "injected", 7 * time.Second, 2},
		{"connection dropped", func(srv *estest.Server) {
			// Every time: a connection dropped once is replayed on a
			// fresh one (transport.go).
			srv.OnBulk(func(b estest.Bulk) (int, string) {
				if b.N >= 2 {
					panic(http.ErrAbortHandler)
				}
				return 0, ""
			})
		}, 0, "network", 0, 4}, // net/http's replay on a fresh connection, then the pool's re-route
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := estest.New(t)
			tc.fail(srv)
			out := newOutput(t, srv, func(c *elasticsearch.Config) { c.MaxBulkBytes = 64 << 10 })
			var values []string
			for range 40 {
				values = append(values, strings.Repeat("x", 5000))
			}
			res, err := out.Send(context.Background(), records(values...))
			var reqErr *elasticsearch.RequestError
			if !errors.As(err, &reqErr) || reqErr.Status != tc.status || reqErr.Type != tc.typ ||
				reqErr.RetryAfter != tc.retryWait || reqErr.Hold {
				t.Fatalf("err = %#v", err)
			}
			if len(res) != len(values) {
				t.Fatalf("%d results for %d records", len(res), len(values))
			}
			// The results run Delivered..., Retry..., Pending...
			var got []string
			for i, r := range res {
				if len(got) == 0 || got[len(got)-1] != r.Outcome.String() {
					got = append(got, r.Outcome.String())
				}
				if r.Outcome == elasticsearch.Retry && (r.Status != tc.status || r.Type != tc.typ || r.Counted || r.Reason == "") {
					t.Fatalf("item %d: %+v", i, r)
				}
			}
			if fmt.Sprint(got) != "[delivered retry pending]" {
				t.Fatalf("outcomes run %v, want [delivered retry pending]", got)
			}
			delivered := 0
			for _, r := range res {
				if r.Outcome == elasticsearch.Delivered {
					delivered++
				}
			}
			if delivered != len(srv.Docs("test")) || srv.Requests() != tc.requests {
				t.Fatalf("delivered %d, stored %d, %d requests", delivered, len(srv.Docs("test")), srv.Requests())
			}
		})
	}
}

func TestSendUnreachable(t *testing.T) {
	srv := estest.New(t)
	url := srv.URL
	srv.Close()
	cfg := elasticsearch.DefaultConfig()
	cfg.URLs = []string{url}
	out, err := elasticsearch.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	res, err := out.Send(context.Background(), records("a", "b"))
	var reqErr *elasticsearch.RequestError
	if !errors.As(err, &reqErr) || reqErr.Status != 0 || reqErr.Type != "network" || reqErr.Hold {
		t.Fatalf("err = %#v", err)
	}
	for _, r := range res {
		if r.Outcome != elasticsearch.Retry || r.Type != "network" || r.Counted {
			t.Fatalf("res = %+v", res)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*elasticsearch.Config)
		key    string
	}{
		{"no urls", func(c *elasticsearch.Config) { c.URLs = nil }, "urls"},
		{"bad scheme", func(c *elasticsearch.Config) { c.URLs = []string{"ftp://x"} }, "urls"},
		{"credentials in url", func(c *elasticsearch.Config) { c.URLs = []string{"http://u:secret@x:9200"} }, "urls"},
		{"uppercase index", func(c *elasticsearch.Config) { c.Index = "Logs" }, "index"},
		{"max_in_flight", func(c *elasticsearch.Config) { c.MaxInFlight = 0 }, "max_in_flight"},
		{"compression", func(c *elasticsearch.Config) { c.Compression = "zstd" }, "compression"},
		{"bulk bytes", func(c *elasticsearch.Config) { c.MaxBulkBytes = 10 }, "max_bulk_bytes"},
		{"bulk bytes over 100MiB", func(c *elasticsearch.Config) { c.MaxBulkBytes = 100<<20 + 1 }, "max_bulk_bytes"},
		{"tombstones", func(c *elasticsearch.Config) { c.Tombstones = "drop" }, "tombstones"},
		{"invalid utf8", func(c *elasticsearch.Config) { c.InvalidUTF8 = "" }, "invalid_utf8"},
		{"document id", func(c *elasticsearch.Config) { c.DocumentID = "hash" }, "document_id"},
		{"tombstones delete with offset ids", func(c *elasticsearch.Config) { c.Tombstones = "delete" }, "tombstones"},
		{"metadata headers without a field", func(c *elasticsearch.Config) { c.MetadataHeaders = []string{"trace"} }, "metadata_headers"},
		{"metadata field with a dot", func(c *elasticsearch.Config) { c.MetadataField = "kafka.meta" }, "metadata_field"},
		{"metadata field @timestamp", func(c *elasticsearch.Config) { c.MetadataField = "@timestamp" }, "metadata_field"},
		{"no attempts", func(c *elasticsearch.Config) { c.MaxItemAttempts = 0 }, "max_item_attempts"},
		{"too many attempts", func(c *elasticsearch.Config) { c.MaxItemAttempts = 1001 }, "max_item_attempts"},
		{"timeout", func(c *elasticsearch.Config) { c.RequestTimeout = 0 }, "request_timeout"},
		{"backoff order", func(c *elasticsearch.Config) { c.RetryMaxBackoff = time.Millisecond }, "retry_max_backoff"},
	}
	if err := elasticsearch.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := elasticsearch.DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			var fe *shipper.FieldError
			if !errors.As(err, &fe) || fe.Path != tc.key {
				t.Fatalf("err = %v, want a FieldError for %s", err, tc.key)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error leaks a password: %v", err)
			}
		})
	}
	c := elasticsearch.DefaultConfig()
	c.URLs = []string{"http://a:9200, http://b:9200/", "https://c"}
	if got := fmt.Sprint(c.Addresses()); got != "[http://a:9200 http://b:9200 https://c]" {
		t.Fatalf("Addresses = %s", got)
	}
}

func TestGzipBodies(t *testing.T) {
	srv := estest.New(t)
	out := newOutput(t, srv, func(c *elasticsearch.Config) { c.Compression = "gzip" })
	recs := records(`{"a":1}`, `plain text`, `{"b":"c"}`)
	results, err := out.Send(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Outcome != elasticsearch.Delivered {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	if got := len(srv.Docs("test")); got != 3 {
		t.Fatalf("%d documents indexed, want 3", got)
	}
	if srv.Gzipped() != srv.Requests() || srv.Requests() == 0 {
		t.Fatalf("%d of %d requests gzipped", srv.Gzipped(), srv.Requests())
	}
}

// Whole-request 429s shrink the window of requests in flight to 1; good
// answers grow it again.
func TestWindowFollowsAnswers(t *testing.T) {
	srv := estest.New(t)
	srv.OnRequest(func(n int) (int, string) {
		if n <= 3 {
			return http.StatusTooManyRequests, ""
		}
		return 0, ""
	})
	out := newOutput(t, srv, func(c *elasticsearch.Config) { c.MaxInFlight = 4 })
	if st := out.Window(); !st.Adaptive || st.Limit != 2 || st.Max != 4 {
		t.Fatalf("window at start: %+v", st)
	}
	for i := range 3 {
		if _, err := out.Send(context.Background(), records(`{"a":1}`)); err == nil {
			t.Fatalf("send %d: no error on a 429", i)
		}
	}
	if st := out.Window(); st.Limit != 1 || st.Cuts["429"] != 3 || st.InFlight != 0 {
		t.Fatalf("after three 429s: %+v", st)
	}
	if _, err := out.Send(context.Background(), records(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if st := out.Window(); st.Limit != 2 || st.Growths != 1 {
		t.Fatalf("after a good answer on a full window: %+v", st)
	}
}
