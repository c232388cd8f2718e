package elasticsearch_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// TestSendRoutesEachRecord: one Send puts records of two topics and two
// days into their own indices; a record that cannot be routed is
// dead-lettered with the reason, and the others are not held back by it.
func TestSendRoutesEachRecord(t *testing.T) {
	srv := estest.New(t)
	out := newOutput(t, srv, func(c *elasticsearch.Config) { c.Index = "logs-{topic}-{[env]}-{+yyyy.MM.dd}" })
	day := time.Date(2026, 11, 29, 23, 59, 59, 0, time.UTC)
	recs := []*shipper.Record{
		{Topic: "App", Offset: 1, Value: []byte(`{"env":"prod","m":1}`), Time: day},
		{Topic: "App", Offset: 2, Value: []byte(`{"env":"prod","m":2}`), Time: day.Add(2 * time.Second)},
		{Topic: "db", Offset: 3, Value: []byte(`{"env":"dev","m":3}`), Time: day},
		{Topic: "db", Offset: 4, Value: []byte(`{"m":4}`), Time: day},
	}
	res, err := out.Send(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []elasticsearch.Outcome{elasticsearch.Delivered, elasticsearch.Delivered, elasticsearch.Delivered, elasticsearch.DeadLetter} {
		if res[i].Outcome != want {
			t.Fatalf("record %d: %+v, want %s", i, res[i], want)
		}
	}
	if res[3].Type != "index_routing" || !strings.Contains(res[3].Reason, "{[env]}") {
		t.Fatalf("unroutable record: %+v", res[3])
	}
	for index, id := range map[string]string{
		"logs-app-prod-2026.11.29": recs[0].DocumentID(),
		"logs-app-prod-2026.11.30": recs[1].DocumentID(),
		"logs-db-dev-2026.11.29":   recs[2].DocumentID(),
	} {
		if docs := srv.Docs(index); len(docs) != 1 || docs[id] == nil {
			t.Errorf("index %s holds %d documents, want %s", index, len(docs), id)
		}
	}
}

// TestPipelineParameter: pipeline is sent as the bulk request's pipeline
// parameter.
func TestPipelineParameter(t *testing.T) {
	var mu sync.Mutex
	var got []string
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, r.URL.Path+"?pipeline="+r.URL.Query().Get("pipeline"))
		mu.Unlock()
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"errors":false,"items":[{"create":{"status":201}}]}`)
	}))
	defer fake.Close()
	cfg := elasticsearch.DefaultConfig()
	cfg.URLs, cfg.Index, cfg.Pipeline = []string{fake.URL}, "logs", "parse-logs"
	out, err := elasticsearch.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	res, err := out.Send(context.Background(), []*shipper.Record{{Topic: "t", Value: []byte("x")}})
	if err != nil || res[0].Outcome != elasticsearch.Delivered {
		t.Fatalf("Send: %+v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "/_bulk?pipeline=parse-logs" {
		t.Fatalf("requests %q, want one /_bulk with pipeline=parse-logs", got)
	}
}
