package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shipper-agent/shipper/agent"
)

var update = flag.Bool("update", false, "rewrite the golden files of CLI outputs")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestStatusCommand(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The fixture must decode into the agent's Status without losing a
	// field: a renamed field would leave the golden file stale.
	var st agent.Status
	dec := json.NewDecoder(bytes.NewReader(fixture))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("testdata/status.json does not match agent.Status: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/status" {
			w.WriteHeader(404)
			return
		}
		w.Write(fixture)
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range []struct {
		args   []string
		golden string
	}{
		{[]string{"status", "-addr", addr}, "status.golden"},
		{[]string{"status", "-addr", addr, "-json"}, "status-json.golden"},
	} {
		var stdout, stderr bytes.Buffer
		if code := exitCode(Run(context.Background(), c.args, &stdout, &stderr), &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, stderr.String())
		}
		golden(t, c.golden, stdout.String())
	}
}

// The flush command follows a flush to its end, and exits 1 naming what
// remains when it is not done within -wait.
func TestFlushCommand(t *testing.T) {
	var polls atomic.Int32
	doneAfter := int32(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res := agent.FlushResult{ID: "7", Sealed: 800, PendingChunks: 3, PendingRecords: 5300, WaitingChunks: 3, WaitingRecords: 5300}
		switch {
		case r.Method == "POST" && r.URL.Path == "/api/flush":
			w.WriteHeader(http.StatusAccepted)
		case r.Method == "GET" && r.URL.Path == "/api/flush/7":
			if n := polls.Add(1); n >= doneAfter {
				res.Done, res.WaitingChunks, res.WaitingRecords = true, 0, 0
				res.Output = agent.FlushCounters{Indexed: 5290, Duplicates: 4, Skipped: 1, DeadLettered: 5}
			} else {
				res.WaitingChunks, res.WaitingRecords = 1, 1000
				res.Held = "429 es_rejected_execution_exception: queue full"
			}
		default:
			w.WriteHeader(404)
		}
		json.NewEncoder(w).Encode(res)
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	var stdout, stderr bytes.Buffer
	if code := exitCode(Run(context.Background(), []string{"flush", "-addr", addr}, &stdout, &stderr), &stderr); code != 0 {
		t.Fatalf("flush: exit %d: %s", code, stderr.String())
	}
	golden(t, "flush.golden", stdout.String())

	stdout.Reset()
	if code := exitCode(Run(context.Background(), []string{"flush", "-addr", addr, "-wait", "10s"}, &stdout, &stderr), &stderr); code != 0 {
		t.Fatalf("flush -wait: exit %d: %s", code, stderr.String())
	}
	golden(t, "flush-wait.golden", stdout.String())

	polls.Store(0)
	doneAfter = 1 << 30
	stdout.Reset()
	stderr.Reset()
	code := exitCode(Run(context.Background(), []string{"flush", "-addr", addr, "-wait", "600ms"}, &stdout, &stderr), &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "flush 7 not done within 600ms: 1000 records in 1 chunks still to deliver; delivery is held: 429") {
		t.Fatalf("flush -wait past its time: exit %d, stderr %q", code, stderr.String())
	}
}
