package agent

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// A reload applies log.level and the elasticsearch block (here: another
// node), and reports what needs a restart; documents flushed after it go
// to the new node, through workers restarted on the new output.
func TestReload(t *testing.T) {
	a, first := newTestAgent(t)
	level := new(slog.LevelVar)
	level.Set(slog.LevelInfo)
	a.workers.d = a.deliver
	a.workers.start()
	t.Cleanup(func() {
		a.reloadMu.Lock()
		a.stopping = true
		close(a.stopped)
		a.reloadMu.Unlock()
		a.workers.stop(time.Now().Add(10 * time.Second))
		a.retiring.Wait()
		a.output().Close()
	})
	flush := func(from int) {
		t.Helper()
		for i := range 10 {
			a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(from + i), Value: []byte(`{"a":1}`)})
		}
		if res := a.Flush(context.Background(), 10*time.Second); !res.Done {
			t.Fatalf("flush: %+v", res)
		}
	}
	flush(0)
	second := estest.New(t)

	next := a.cfg
	next.Log.Level = "debug"
	next.Elasticsearch.URLs = []string{second.URL}
	next.Elasticsearch.Password = shipper.Secret("new-secret")
	next.Elasticsearch.MaxInFlight = 8
	next.Buffer.ChunkSize = 8 << 20
	applied, restart, err := a.Reload(next, level)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"log.level", "elasticsearch.password", "elasticsearch.urls"}; !slices.Equal(applied, want) || level.Level() != slog.LevelDebug {
		t.Fatalf("applied %v (want %v), level %v", applied, want, level.Level())
	}
	if want := []string{"buffer.chunk_size", "elasticsearch.max_in_flight"}; !slices.Equal(restart, want) {
		t.Fatalf("needs restart: %v, want %v", restart, want)
	}
	flush(10)
	index := a.cfg.Elasticsearch.Index
	if n, m := len(first.Docs(index)), len(second.Docs(index)); n != 10 || m != 10 {
		t.Fatalf("documents: %d on the first node (want 10, before the reload), %d on the second (want 10, after)", n, m)
	}
	if nodes, _ := a.output().Nodes(); len(nodes) != 1 || nodes[0].URL != second.URL {
		t.Fatalf("nodes after the reload: %+v", nodes)
	}

	// The same file again: nothing applied, the same restart list. A
	// block the output refuses changes nothing.
	if applied, restart, err := a.Reload(next, level); err != nil || len(applied) != 0 || len(restart) != 2 {
		t.Fatalf("reload of the same file: applied %v, restart %v, %v", applied, restart, err)
	}
	bad := next
	bad.Elasticsearch.URLs = []string{"https://x:9200"}
	bad.Elasticsearch.TLS.CAFile = "/nonexistent/ca.pem"
	if _, _, err := a.Reload(bad, level); err == nil {
		t.Fatal("a reload with an unreadable CA file was applied")
	}
	if nodes, _ := a.output().Nodes(); nodes[0].URL != second.URL {
		t.Fatalf("a refused reload changed the nodes: %+v", nodes)
	}
}
