package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
)

// Shutdown keeps its deadline whatever Elasticsearch does: here every bulk
// request hangs, a chunk is in flight, records wait in the open chunk, and
// Kafka is unreachable. Undelivered records stay on disk.
func TestShutdownKeepsDeadlineWhileElasticsearchHangs(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.API.Address = "127.0.0.1:0"
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Kafka.Topics = []string{"t"}
	cfg.Elasticsearch.URLs = []string{hang.URL}
	// The start-up check hangs too; past its bound, delivery starts.
	cfg.Elasticsearch.StartupTimeout = 200 * time.Millisecond
	cfg.resolve()
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: int64(i), Value: []byte("x")})
	}
	a.buf.Flush(context.Background())
	a.buf.Append(context.Background(), &shipper.Record{Topic: "t", Offset: 100, Value: []byte("x")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitState(t, "a chunk in flight", func() bool { return a.buf.Stats().InFlightChunks == 1 })
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(cfg.ShutdownTimeout + 3*time.Second):
		t.Fatalf("Run did not return within shutdown_timeout (%s) + 3s", cfg.ShutdownTimeout)
	}
	took := time.Since(start)
	// Everything is still there for the next start.
	a2, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a2.ln.Close(); a2.buf.Close() }()
	if s := a2.buf.Stats(); s.DiskRecords != 101 {
		t.Fatalf("after shutdown in %s: %d records on disk, want 101", took, s.DiskRecords)
	}
}
