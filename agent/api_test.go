package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// newTestAgent builds an agent whose Kafka is unreachable (New does not
// connect) and whose Elasticsearch is a fake; records are appended to its
// buffer directly.
func newTestAgent(t *testing.T) (*Agent, *estest.Server) {
	t.Helper()
	srv := estest.New(t)
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Address = "127.0.0.1:0"
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Kafka.Topics = []string{"t"}
	cfg.Buffer.FlushInterval = time.Hour
	cfg.Elasticsearch.URLs = []string{srv.URL}
	cfg.Elasticsearch.Username, cfg.Elasticsearch.Password = "shipper", "hunter2-secret"
	cfg.Elasticsearch.HedgeAfter = 0 // a slow fake under -race must not be hedged
	cfg.resolve()
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ln.Close(); a.buf.Close() })
	return a, srv
}

func call(t *testing.T, h http.Handler, method, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Code, rec.Body.String()
}

func TestAPIHealthStatusMetrics(t *testing.T) {
	a, _ := newTestAgent(t)
	h := a.handler()
	if code, body := call(t, h, "GET", "/api/health"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("health: %d %s", code, body)
	}
	for i := range 5 {
		a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(i), Value: []byte("x")})
	}
	code, body := call(t, h, "GET", "/api/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.Buffer.OpenRecords != 5 {
		t.Fatalf("status: %d %v %s", code, err, body)
	}
	if strings.Contains(body, "hunter2") {
		t.Fatal("status leaks the password")
	}
	code, body = call(t, h, "GET", "/api/metrics")
	if code != 200 || !strings.Contains(body, "shipper_buffer_open_records 5") || !strings.Contains(body, "go_goroutines") ||
		!strings.Contains(body, `shipper_output_node_up{node="`+a.cfg.Elasticsearch.URLs[0]+`"} 1`) ||
		!strings.Contains(body, `shipper_output_stalls_total{layer="upload"} 0`) ||
		!strings.Contains(body, `shipper_health_status{status="ok"} 1`) || !strings.Contains(body, `shipper_health_status{status="held"} 0`) ||
		!strings.Contains(body, "shipper_ready 0") {
		t.Fatalf("metrics: %d %.500s", code, body)
	}
	if len(st.Output.Nodes) != 1 || st.Output.Nodes[0].State != "alive" {
		t.Fatalf("status nodes: %+v", st.Output.Nodes)
	}
	if code, _ := call(t, h, "GET", "/api/flush"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /api/flush: %d", code)
	}
}

func TestAPIFlush(t *testing.T) {
	a, srv := newTestAgent(t)
	h := a.handler()
	if code, _ := call(t, h, "POST", "/api/flush?wait=soon"); code != http.StatusBadRequest {
		t.Fatalf("bad wait: %d", code)
	}
	for i := range 50 {
		a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(i), Value: fmt.Appendf(nil, `{"i":%d}`, i)})
	}
	// No deliveries running: the flush seals and reports what remains.
	code, body := call(t, h, "POST", "/api/flush")
	var res FlushResult
	json.Unmarshal([]byte(body), &res)
	if code != http.StatusAccepted || res.Sealed != 50 || res.PendingRecords != 50 || res.Done || res.RemainingRecords != 50 ||
		res.ID == "" || res.WaitingRecords != 50 {
		t.Fatalf("flush without deliveries: %d %s", code, body)
	}
	first := res.ID
	// Records appended after the flush are not its business.
	for i := range 7 {
		a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(50 + i), Value: []byte(`{}`)})
	}
	code, body = call(t, h, "GET", "/api/flush/"+first)
	if st := decode[FlushResult](t, body); code != 200 || st.ID != first || st.Done || st.WaitingRecords != 50 || st.WaitingChunks != 1 {
		t.Fatalf("progress of flush %s before any delivery: %d %s", first, code, body)
	}
	for _, path := range []string{"/api/flush/999", "/api/flush/x"} {
		if code, body := call(t, h, "GET", path); code != http.StatusNotFound || !strings.Contains(body, "no such flush") {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.deliver.run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	code, body = call(t, h, "POST", "/api/flush?wait=10s")
	res = FlushResult{}
	json.Unmarshal([]byte(body), &res)
	if code != http.StatusOK || !res.Done || res.RemainingRecords != 0 || res.ID == first || res.DoneAt == nil ||
		res.Output.Indexed != 57 {
		t.Fatalf("flush with wait: %d %s", code, body)
	}
	if n := len(srv.Docs(a.cfg.Elasticsearch.Index)); n != 57 {
		t.Fatalf("%d documents after the flush, want 57", n)
	}
	code, body = call(t, h, "GET", "/api/flush/"+first)
	if st := decode[FlushResult](t, body); code != 200 || !st.Done || st.WaitingChunks != 0 || st.DoneAt == nil || st.Sealed != 50 {
		t.Fatalf("progress of flush %s once delivered: %d %s", first, code, body)
	}
	// The agent remembers the last maxFlushes flushes, no more.
	for range maxFlushes {
		call(t, h, "POST", "/api/flush")
	}
	if code, _ := call(t, h, "GET", "/api/flush/"+first); code != http.StatusNotFound {
		t.Fatalf("flush %s still remembered after %d more: %d", first, maxFlushes, code)
	}
}

// lingerAfterAck returns from Ack only a while after the buffer recorded
// the chunk acknowledged, widening the window in which a flush sees its
// chunks delivered before the deliverer counted them.
type lingerAfterAck struct{ chunkSource }

func (s lingerAfterAck) Ack(ctx context.Context, c *buffer.Chunk, dead []buffer.DeadLetter) error {
	err := s.chunkSource.Ack(ctx, c, dead)
	time.Sleep(50 * time.Millisecond)
	return err
}

// A flush that answers done counts the documents it delivered. CI saw
// "done" with indexed 50 of 57: the answer was read between the chunk's
// acknowledgement and the counting of its documents.
func TestFlushDoneIncludesItsCounts(t *testing.T) {
	a, _ := newTestAgent(t)
	a.deliver.src = lingerAfterAck{a.deliver.src}
	for i := range 20 {
		a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(i), Value: []byte(`{}`)})
	}
	runDeliveries(t, a)
	res := a.Flush(context.Background(), 10*time.Second)
	if !res.Done || res.Output.Indexed != 20 {
		t.Fatalf("flush done %v with %d indexed, want done with 20", res.Done, res.Output.Indexed)
	}
}

// runDeliveries runs one delivery worker until the test ends.
func runDeliveries(t *testing.T, a *Agent) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.deliver.run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// grepLines returns the lines of text that contain any of words.
func grepLines(text string, words ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return v
}

// The dead-letter endpoints: list in pages, filter, replay after the cause
// is fixed (dry run first), purge.
func TestAPIDeadLetters(t *testing.T) {
	a, srv := newTestAgent(t)
	h := a.handler()
	var broken atomic.Bool
	broken.Store(true)
	srv.OnItem(func(id string, _ []byte) (int, string) {
		var off int
		fmt.Sscanf(id, "t-0-%d", &off)
		if broken.Load() && off%2 == 1 {
			return 400, "strict_dynamic_mapping_exception"
		}
		return 0, ""
	})
	for i := range 20 {
		v := fmt.Appendf(nil, `{"i":%d}`, i)
		if i == 1 {
			v = []byte{0xff, 0xfe, 'x'} // not UTF-8: wrapped with message_base64, rejected here anyway
		}
		a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(i), Value: v,
			Headers: []shipper.Header{{Key: "h", Value: []byte("v")}}})
	}
	runDeliveries(t, a)
	if code, body := call(t, h, "POST", "/api/flush?wait=10s"); code != 200 {
		t.Fatalf("flush: %d %s", code, body)
	}
	var ids []string
	var entries []DeadLetterEntry
	after := ""
	for pages := 0; ; pages++ {
		code, body := call(t, h, "GET", "/api/dlq?limit=4&after="+after)
		page := decode[DeadLetterList](t, body)
		if code != 200 || len(page.Entries) > 4 || pages > 3 {
			t.Fatalf("page %d: %d %s", pages, code, body)
		}
		for _, e := range page.Entries {
			ids = append(ids, e.ID)
			entries = append(entries, e)
		}
		if after = page.Next; after == "" {
			break
		}
	}
	if len(ids) != 10 || entries[0].Offset != 1 || entries[0].ValueEncoding != "base64" || entries[0].Value != "//54" ||
		entries[1].Value != `{"i":3}` || entries[1].ValueEncoding != "utf-8" || entries[1].Type != "strict_dynamic_mapping_exception" ||
		len(entries[1].Headers) != 1 || entries[1].Attempts != 1 {
		t.Fatalf("listed %d: %+v", len(ids), entries[:2])
	}
	if code, body := call(t, h, "GET", "/api/dlq?topic=other"); code != 200 || len(decode[DeadLetterList](t, body).Entries) != 0 {
		t.Fatalf("topic filter: %d %s", code, body)
	}
	if code, _ := call(t, h, "GET", "/api/dlq?limit=many"); code != 400 {
		t.Fatalf("bad limit: %d", code)
	}

	// A dry run sends nothing.
	requests := srv.Requests()
	code, body := call(t, h, "POST", "/api/dlq/replay?dry_run=true")
	dry := decode[ReplayResult](t, body)
	if code != 200 || dry.Matched != 10 || dry.Delivered != 0 || dry.ByType["strict_dynamic_mapping_exception"] != 10 || srv.Requests() != requests {
		t.Fatalf("dry run: %d %s", code, body)
	}
	// Replaying before the fix keeps the entries, with one more attempt.
	code, body = call(t, h, "POST", "/api/dlq/replay?reason=strict_dynamic")
	if res := decode[ReplayResult](t, body); code != 200 || res.DeadLettered != 10 || res.Delivered != 0 {
		t.Fatalf("replay before the fix: %d %s", code, body)
	}
	if page := decode[DeadLetterList](t, func() string { _, b := call(t, h, "GET", "/api/dlq"); return b }()); len(page.Entries) != 10 || page.Entries[0].Attempts != 2 {
		t.Fatalf("after a failed replay: %+v", page.Entries[0])
	}
	broken.Store(false) // the mapping is relaxed
	code, body = call(t, h, "POST", "/api/dlq/replay")
	if res := decode[ReplayResult](t, body); code != 200 || res.Delivered != 10 || res.DeadLettered != 0 || !res.Done {
		t.Fatalf("replay: %d %s", code, body)
	}
	if n := len(srv.Docs(a.cfg.Elasticsearch.Index)); n != 20 || a.buf.Stats().DeadLetters != 0 {
		t.Fatalf("after replay: %d documents, %d dead letters", n, a.buf.Stats().DeadLetters)
	}
	if got := counterValue(a.metrics.replayed.WithLabelValues("delivered")); got != 10 {
		t.Fatalf("replayed metric = %v", got)
	}

	// Purge needs to be told what.
	if code, _ := call(t, h, "POST", "/api/dlq/purge"); code != 400 {
		t.Fatalf("purge without a filter: %d", code)
	}
	broken.Store(true)
	for i := 20; i < 24; i++ {
		a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(i), Value: []byte(`{}`)})
	}
	call(t, h, "POST", "/api/flush?wait=10s")
	code, body = call(t, h, "POST", "/api/dlq/purge?all=true")
	if res := decode[PurgeResult](t, body); code != 200 || res.Purged != 2 || a.buf.Stats().DeadLetters != 0 {
		t.Fatalf("purge: %d %s", code, body)
	}
}

// While Elasticsearch refuses every request with 401, health says so and
// nothing is dead-lettered.
func TestAPIHealthWhileHeld(t *testing.T) {
	a, srv := newTestAgent(t)
	a.deliver.initial, a.deliver.maxWait = time.Millisecond, 10*time.Millisecond
	h := a.handler()
	srv.OnRequest(func(int) (int, string) { return 401, "" })
	a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Value: []byte("x")})
	a.buf.Flush(context.Background())
	runDeliveries(t, a)
	waitState(t, "delivery held", func() bool { return a.deliver.held() != nil })
	code, body := call(t, h, "GET", "/api/health")
	health := decode[Health](t, body)
	if code != 503 || health.Status != "held" || !strings.Contains(health.Held.Reason, "401") {
		t.Fatalf("health: %d %s", code, body)
	}
	if _, body := call(t, h, "GET", "/metrics"); !strings.Contains(body, `shipper_health_status{status="held"} 1`) ||
		!strings.Contains(body, `shipper_health_status{status="ok"} 0`) {
		t.Fatalf("metrics while held: %s", grepLines(body, "shipper_health_status"))
	}
	st := decode[Status](t, func() string { _, b := call(t, h, "GET", "/api/status"); return b }())
	if st.Output.Held == nil || st.Output.DeadLettered != 0 || st.Buffer.DeadLetters != 0 || st.Buffer.DiskRecords != 1 {
		t.Fatalf("status: %+v", st.Output)
	}
	if code, body := call(t, h, "POST", "/api/flush?wait=100ms"); code != 202 || !strings.Contains(body, "delivery is held") {
		t.Fatalf("flush while held: %d %s", code, body)
	}
	srv.OnRequest(nil)
	a.deliver.retryNow()
	waitState(t, "delivery resumed", func() bool { return a.deliver.held() == nil })
	if code, _ := call(t, h, "GET", "/api/health"); code != 200 {
		t.Fatalf("health after the fix: %d", code)
	}
}

// With api.token set, the mutating endpoints and the dead-letter listing
// need it as a bearer token; health, status and metrics stay open.
func TestAPIToken(t *testing.T) {
	a, _ := newTestAgent(t)
	a.cfg.API.Token = "s3cret-token"
	h := a.handler()
	send := func(method, target, auth string) (int, string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(method, target, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	for _, target := range []string{"POST /api/flush", "GET /api/dlq", "POST /api/dlq/replay?dry_run=true", "POST /api/dlq/purge?all=true"} {
		method, path, _ := strings.Cut(target, " ")
		for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret-token-longer", "Basic czNjcmV0LXRva2Vu", "s3cret-token"} {
			if code, body := send(method, path, auth); code != http.StatusUnauthorized || !strings.Contains(body, "api.token") ||
				strings.Contains(body, "s3cret") {
				t.Errorf("%s with %q: %d %s, want 401 naming api.token and not the token", target, auth, code, body)
			}
		}
		if code, body := send(method, path, "Bearer s3cret-token"); code == http.StatusUnauthorized {
			t.Errorf("%s with the token: %d %s", target, code, body)
		}
	}
	for _, path := range []string{"/api/health", "/api/status", "/api/metrics"} {
		if code, body := send("GET", path, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s", path, code, body)
		}
	}
}

// Liveness fails only when the pipeline is wedged; readiness waits for the
// input to join its group.
func TestAPILiveAndReady(t *testing.T) {
	a, _ := newTestAgent(t) // its Kafka is unreachable: it never joins
	h := a.handler()
	if code, body := call(t, h, "GET", "/api/health/live"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Fatalf("live: %d %s", code, body)
	}
	if code, body := call(t, h, "GET", "/api/health/ready"); code != 503 || !strings.Contains(body, `"starting"`) ||
		!strings.Contains(body, "consumer group") {
		t.Fatalf("ready before joining: %d %s", code, body)
	}
	reason := "delivery pipeline wedged: test"
	a.watchdog.wedged.Store(&reason)
	for _, path := range []string{"/api/health/live", "/api/health"} {
		if code, body := call(t, h, "GET", path); code != 503 || !strings.Contains(body, `"wedged"`) {
			t.Fatalf("%s when wedged: %d %s", path, code, body)
		}
	}
	if _, body := call(t, h, "GET", "/metrics"); !strings.Contains(body, `shipper_health_status{status="wedged"} 1`) ||
		!strings.Contains(body, `shipper_health_status{status="ok"} 0`) || !strings.Contains(body, "shipper_ready 0") {
		t.Fatalf("metrics when wedged: %s", grepLines(body, "shipper_health_status", "shipper_ready"))
	}
}

// /metrics is where Prometheus looks by default; profiles are served only
// when api.pprof is on, and behind the token.
func TestAPIMetricsAliasAndPprof(t *testing.T) {
	a, _ := newTestAgent(t)
	if code, body := call(t, a.handler(), "GET", "/metrics"); code != 200 || !strings.Contains(body, "shipper_output_in_flight_limit") {
		t.Fatalf("GET /metrics: %d %.200s", code, body)
	}
	if code, _ := call(t, a.handler(), "GET", "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof off: %d, want 404", code)
	}
	a.cfg.API.Pprof, a.cfg.API.Token = true, "tok"
	h := a.handler()
	if code, _ := call(t, h, "GET", "/debug/pprof/"); code != http.StatusUnauthorized {
		t.Fatalf("pprof without the token: %d, want 401", code)
	}
	req := httptest.NewRequest("GET", "/debug/pprof/", nil)
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "goroutine") {
		t.Fatalf("pprof with the token: %d %.200s", rec.Code, rec.Body.String())
	}
}

// TestAPIHealthUntrustedCertificate: with the only node's certificate not
// trusted, health answers 503 output_failing naming the setting to check.
func TestAPIHealthUntrustedCertificate(t *testing.T) {
	srv := estest.NewTLS(t, nil)
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Address = "127.0.0.1:0"
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Kafka.Topics = []string{"t"}
	cfg.Elasticsearch.URLs = []string{srv.URL} // https, and no tls.ca_file: the system's roots
	cfg.resolve()
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.output().Close(); a.ln.Close(); a.buf.Close() })
	h := a.handler()
	if code, body := call(t, h, "GET", "/api/health"); code != 200 {
		t.Fatalf("health before any request: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.output().Send(ctx, []*shipper.Record{{Topic: "t", Value: []byte("x")}}); err == nil {
		t.Fatal("a send to an untrusted node succeeded")
	}
	code, body := call(t, h, "GET", "/api/health")
	health := decode[Health](t, body)
	if code != 503 || health.Status != "output_failing" || !strings.Contains(health.Reason, "elasticsearch.tls.ca_file") {
		t.Fatalf("health: %d %s", code, body)
	}
}

// Every shipper_ metric the agent exports is documented in
// docs/operations.md, so an operator never meets one the docs do not name.
func TestEveryMetricDocumented(t *testing.T) {
	a, _ := newTestAgent(t)
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, body := call(t, a.handler(), "GET", "/metrics")
	names := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if name, ok := strings.CutPrefix(l, "# TYPE "); ok && strings.HasPrefix(name, "shipper_") {
			names[strings.Fields(name)[0]] = true
		}
	}
	if len(names) < 40 {
		t.Fatalf("only %d shipper_ metrics exported: the scrape did not work as this test expects", len(names))
	}
	for name := range names {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("metric %s is not documented in docs/operations.md", name)
		}
	}
}
