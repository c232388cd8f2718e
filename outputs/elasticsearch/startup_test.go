package elasticsearch_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// clusterFake answers the start-up calls as a node of the given version,
// and records the templates put.
type clusterFake struct {
	version  string
	status   int // for every answer; 0 = 200
	mu       sync.Mutex
	template map[string]string
}

func (f *clusterFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	if f.status != 0 {
		w.WriteHeader(f.status)
		io.WriteString(w, `{"error":{"type":"injected","reason":"injected"},"status":`+http.StatusText(f.status)+`}`)
		return
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/_nodes/_local":
		io.WriteString(w, `{"cluster_name":"fake","nodes":{"n1":{"version":"`+f.version+`"}}}`)
	case r.Method == "PUT" && strings.HasPrefix(r.URL.Path, "/_index_template/"):
		if !strings.Contains(string(body), "index_patterns") {
			w.WriteHeader(400)
			io.WriteString(w, `{"error":{"type":"action_request_validation_exception","reason":"index patterns are missing"},"status":400}`)
			return
		}
		f.mu.Lock()
		f.template[strings.TrimPrefix(r.URL.Path, "/_index_template/")] = string(body)
		f.mu.Unlock()
		io.WriteString(w, `{"acknowledged":true}`)
	default:
		w.WriteHeader(404)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(`{"index_patterns":["logs-*"],"template":{"mappings":{"properties":{"seq":{"type":"keyword"}}}}}`), 0o644)
	os.WriteFile(bad, []byte(`{"template":{}}`), 0o644)
	for _, tc := range []struct {
		name     string
		fake     *clusterFake
		template string
		err      string // "" for success
	}{
		{"8.x", &clusterFake{version: "8.19.21"}, "", ""},
		{"8.x with a template", &clusterFake{version: "8.19.21"}, good, ""},
		{"7.x", &clusterFake{version: "7.17.0"}, "", "runs version 7.17.0"},
		{"credentials refused", &clusterFake{version: "8.19.21", status: 401}, "", "check the credentials"},
		{"forbidden", &clusterFake{version: "8.19.21", status: 403}, "", "lacks a privilege this start-up step needs"},
		{"template refused", &clusterFake{version: "8.19.21"}, bad, "index patterns are missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fake.template = map[string]string{}
			srv := httptest.NewServer(tc.fake)
			defer srv.Close()
			out := newOutputAt(t, srv.URL, func(c *elasticsearch.Config) { c.TemplateFile = tc.template })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			info, err := out.Check(ctx)
			if tc.err != "" {
				want := elasticsearch.ErrIncompatible
				if tc.fake.status == 401 || tc.fake.status == 403 {
					want = elasticsearch.ErrCredentials // delivery holds on them; not definitive
				}
				if !errors.Is(err, want) || errors.Is(err, elasticsearch.ErrIncompatible) != (want == elasticsearch.ErrIncompatible) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Check: %v; want %v with %q", err, want, tc.err)
				}
				return
			}
			if err != nil || info.Version != "8.19.21" || info.Name != "fake" {
				t.Fatalf("Check: %+v, %v", info, err)
			}
			tc.fake.mu.Lock()
			defer tc.fake.mu.Unlock()
			if tc.template != "" && !strings.Contains(tc.fake.template["shipper"], "logs-*") {
				t.Fatalf("templates put: %v", tc.fake.template)
			}
		})
	}
}

// TestCheckWaitsForTheCluster: no node listens at first; Check retries
// until one does. With none at all it gives up when its context ends, with
// an error that is not ErrIncompatible.
func TestCheckWaitsForTheCluster(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	out := newOutputAt(t, "http://"+addr, func(c *elasticsearch.Config) { c.RequestTimeout = 2 * time.Second })

	short, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := out.Check(short); err == nil || errors.Is(err, elasticsearch.ErrIncompatible) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Check with nothing listening: %v; want the deadline", err)
	}

	go func() {
		time.Sleep(time.Second)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		srv := &http.Server{Handler: &clusterFake{version: "8.19.21", template: map[string]string{}}}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}()
	ctx, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	start := time.Now()
	info, err := out.Check(ctx)
	if err != nil || info.Version != "8.19.21" {
		t.Fatalf("Check: %+v, %v", info, err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("Check returned after %s, before the node listened", waited)
	}
}
