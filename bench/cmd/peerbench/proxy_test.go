package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/esadmin"
)

func TestItemStatuses(t *testing.T) {
	for _, c := range []struct {
		body string
		want []int
	}{
		{`{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}}]}`, []int{201, 409}},
		// Benthos's answers are unfiltered.
		{`{"took":3,"errors":false,"items":[{"index":{"_index":"i","_id":"t-0-1","_version":1,"result":"created","_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}}]}`, []int{201}},
		// An escaped "status" inside a reason is not a key.
		{`{"errors":true,"items":[{"create":{"status":400,"error":{"reason":"field [\"status\":5] bad"}}}]}`, []int{400}},
		{`{"errors":false}`, nil},
	} {
		if got := itemStatuses([]byte(c.body)); !slices.Equal(got, c.want) {
			t.Errorf("itemStatuses(%s) = %v, want %v", c.body, got, c.want)
		}
	}
}

// The proxy answers GET / itself, forwards the rest, and ends a run when
// the bulk answers count every document created.
func TestProxy(t *testing.T) {
	var mu sync.Mutex
	var sawEncoding []string
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sawEncoding = append(sawEncoding, r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		switch {
		case r.URL.Path == "/":
			http.Error(w, "no", http.StatusMethodNotAllowed)
		case strings.HasSuffix(r.URL.Path, "/_bulk"):
			body, _ := io.ReadAll(r.Body)
			n := strings.Count(string(body), "\n") / 2
			items := strings.Repeat(`{"create":{"status":201}},`, n)
			_, _ = io.WriteString(w, `{"errors":false,"items":[`+strings.TrimSuffix(items, ",")+`]}`)
		default:
			_, _ = io.WriteString(w, `{}`)
		}
	}))
	defer node.Close()
	p, err := startProxy(node.URL, esadmin.Node{Name: "n", Version: "8.19.0", ClusterName: "c", ClusterUUID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	res, err := http.Get(p.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	var root struct {
		Version struct {
			Number string `json:"number"`
		} `json:"version"`
	}
	if err := json.NewDecoder(res.Body).Decode(&root); err != nil || res.StatusCode != 200 || root.Version.Number != "8.19.0" {
		t.Fatalf("GET /: %d %v %+v", res.StatusCode, err, root)
	}
	res.Body.Close()

	run := p.arm(4)
	bulk := func(docs int) {
		t.Helper()
		body := strings.Repeat("{\"create\":{}}\n{}\n", docs)
		req, _ := http.NewRequest(http.MethodPost, p.URL()+"/_bulk", strings.NewReader(body))
		req.Header.Set("Accept-Encoding", "gzip")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || strings.Count(string(b), "201") != docs {
			t.Fatalf("bulk: %d %s", res.StatusCode, b)
		}
	}
	bulk(3)
	select {
	case <-run.done:
		t.Fatal("done after 3 of 4")
	default:
	}
	bulk(1)
	select {
	case <-run.done:
	case <-time.After(time.Second):
		t.Fatal("not done after 4 of 4")
	}
	c := run.counts()
	if c.Created != 4 || c.Bulks != 2 || c.Root != 0 || at(&run.last) <= 0 || at(&run.first) <= 0 {
		t.Errorf("counts %+v, first %v, last %v", c, at(&run.first), at(&run.last))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range sawEncoding {
		if e != "" {
			t.Errorf("the node was sent Accept-Encoding %q", e)
		}
	}
}
