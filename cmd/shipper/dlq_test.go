package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/agent"
	"github.com/shipper-agent/shipper/buffer"
)

// fakeAPI answers the dead-letter endpoints as the agent does and records
// the requests it got.
func fakeAPI(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var seen []string
	entry := func(id string, off int64) agent.DeadLetterEntry {
		return agent.DeadLetterEntry{DeadLetter: buffer.DeadLetter{ID: id, Type: "strict_dynamic_mapping_exception",
			Reasons: []string{"400 strict_dynamic_mapping_exception: mapping set to strict"}, Attempts: 2, Size: 17},
			Topic: "logs", Offset: off, Value: `{"other":"x"}`, ValueEncoding: "utf-8"}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		var v any
		switch r.URL.Path {
		case "/api/dlq":
			if r.URL.Query().Get("after") == "" {
				v = agent.DeadLetterList{Entries: []agent.DeadLetterEntry{entry("1.0", 4), entry("1.3", 7)}, Next: "1.3"}
			} else {
				v = agent.DeadLetterList{Entries: []agent.DeadLetterEntry{entry("2.0", 9)},
					Store: buffer.DeadLetterStats{Entries: 3, Bytes: 900, MaxBytes: 1 << 30}}
			}
		case "/api/dlq/replay":
			v = agent.ReplayResult{DryRun: r.URL.Query().Get("dry_run") == "true", Matched: 3, Delivered: 2, DeadLettered: 1,
				ByType: map[string]int{"strict_dynamic_mapping_exception": 3}, ByTopic: map[string]int{"logs": 3}, Done: true}
		case "/api/dlq/purge":
			v = agent.PurgeResult{Purged: 3}
		default:
			w.WriteHeader(404)
			v = map[string]string{"error": "no such endpoint"}
		}
		json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

func TestDLQCommands(t *testing.T) {
	srv, seen := fakeAPI(t)
	addr := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "shipper.hcl")
	os.WriteFile(cfgPath, []byte("api {\n  address = \""+addr+"\"\n}\nkafka {\n  topics = [\"logs\"]\n}\n"), 0o644)
	cases := []struct {
		name     string
		args     []string
		code     int
		inStdout []string
		request  string // the last request must contain this
	}{
		{"list as a table, every page", []string{"dlq", "list", "-addr", addr}, 0,
			[]string{"1.0", "logs/0@7", "2.0", "strict_dynamic_mapping_exception", "3 entries listed; the store holds 3"}, "after=1.3"},
		{"list finds the agent from the config", []string{"dlq", "list", "-config", cfgPath, "-topic", "logs"}, 0,
			[]string{"3 entries listed"}, "topic=logs"},
		{"list as JSON lines", []string{"dlq", "list", "-addr", addr, "-json"}, 0,
			[]string{`"id":"1.3"`, `"value":"{\"other\":\"x\"}"`}, "value_bytes=0"},
		{"replay with a filter", []string{"dlq", "replay", "-addr", addr, "-reason", "strict"}, 0,
			[]string{"re-sent 3 entries: 2 delivered and removed, 1 dead-lettered again", "type strict_dynamic_mapping_exception: 3"}, "reason=strict"},
		{"replay dry run", []string{"dlq", "replay", "-addr", addr, "-dry-run"}, 0,
			[]string{"would re-send 3 entries"}, "dry_run=true"},
		{"purge all", []string{"dlq", "purge", "-addr", addr, "-all"}, 0, []string{"purged 3 entries"}, "all=true"},
		{"purge needs a filter", []string{"dlq", "purge", "-addr", addr}, 2, nil, ""},
		{"no subcommand", []string{"dlq"}, 2, nil, ""},
		{"agent not found", []string{"dlq", "list", "-config", filepath.Join(dir, "none.hcl")}, 1, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(seen())
			var stdout, stderr bytes.Buffer
			code := exitCode(Run(context.Background(), tc.args, &stdout, &stderr), &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, want := range tc.inStdout {
				if !strings.Contains(stdout.String(), want) {
					t.Fatalf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			reqs := seen()[before:]
			if tc.request != "" && (len(reqs) == 0 || !strings.Contains(reqs[len(reqs)-1], tc.request)) {
				t.Fatalf("requests %v, want the last with %q", reqs, tc.request)
			}
			if tc.code != 0 && len(reqs) != 0 {
				t.Fatalf("a failed command called the API: %v", reqs)
			}
		})
	}
}

// The CLI waits for an agent that is starting: a refused connection is
// tried again for up to -connect-wait, and then fails naming the API's address.
func TestAPIClientWaitsForStartingAgent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused

	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := exitCode(Run(context.Background(), []string{"dlq", "list", "-addr", addr, "-connect-wait", "0"}, &stdout, &stderr), &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "connection refused") || !strings.Contains(stderr.String(), addr) {
		t.Fatalf("-connect-wait 0 against no agent: exit %d, stderr %q", code, stderr.String())
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("-connect-wait 0 took %s: it retried", took)
	}

	// The agent's API comes up after 500 ms, on the same address.
	srv, seen := fakeAPI(t)
	srv.Listener.Close()
	srv.Config.Addr = addr
	served := make(chan net.Listener, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			close(served)
			return
		}
		served <- l
		srv.Config.Serve(l)
	}()
	t.Cleanup(func() {
		if l, ok := <-served; ok {
			l.Close()
		}
	})
	stdout.Reset()
	stderr.Reset()
	code = exitCode(Run(context.Background(), []string{"dlq", "purge", "-addr", addr, "-all", "-connect-wait", "10s"}, &stdout, &stderr), &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "purged 3 entries") {
		t.Fatalf("against an agent starting: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	if reqs := seen(); len(reqs) != 1 {
		t.Fatalf("the agent got %v, want the purge once", reqs)
	}
}

// The CLI sends the api.token of its configuration file, or
// $SHIPPER_API_TOKEN with -addr, as a bearer token.
func TestAPIClientSendsToken(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
		json.NewEncoder(w).Encode(agent.PurgeResult{Purged: 1})
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	cfgPath := filepath.Join(t.TempDir(), "shipper.hcl")
	os.WriteFile(cfgPath, []byte("api {\n  address = \""+addr+"\"\n  token = \"from-file\"\n}\nkafka {\n  topics = [\"logs\"]\n}\n"), 0o644)
	t.Setenv("SHIPPER_API_TOKEN", "from-env")
	for _, args := range [][]string{
		{"dlq", "purge", "-all", "-config", cfgPath},
		{"dlq", "purge", "-all", "-addr", addr},
	} {
		var stdout, stderr bytes.Buffer
		if code := exitCode(Run(context.Background(), args, &stdout, &stderr), &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
	}
	if want := []string{"Bearer from-file", "Bearer from-env"}; !slices.Equal(got, want) {
		t.Fatalf("Authorization headers %q, want %q", got, want)
	}
}
