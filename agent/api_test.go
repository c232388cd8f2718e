package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
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
	cfg.Elasticsearch.Password = "hunter2-secret"
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
	if code != 200 || !strings.Contains(body, "shipper_buffer_open_records 5") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics: %d %.500s", code, body)
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
	if code != http.StatusAccepted || res.Sealed != 50 || res.PendingRecords != 50 || res.Done || res.RemainingRecords != 50 {
		t.Fatalf("flush without deliveries: %d %s", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.deliver.run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	code, body = call(t, h, "POST", "/api/flush?wait=10s")
	res = FlushResult{}
	json.Unmarshal([]byte(body), &res)
	if code != http.StatusOK || !res.Done || res.RemainingRecords != 0 {
		t.Fatalf("flush with wait: %d %s", code, body)
	}
	if n := len(srv.Docs(a.cfg.Elasticsearch.Index)); n != 50 {
		t.Fatalf("%d documents after the flush, want 50", n)
	}
}
