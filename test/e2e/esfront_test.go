//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// esFront is an HTTP reverse proxy, in the test process, in front of the
// stack's Elasticsearch. It forwards every request and answer unchanged,
// except what a test asks it to change: a smaller http.max_content_length,
// documents failed with an error of the test's choosing, security on. The
// settings may change while the agent runs.
type esFront struct {
	URL string // what the agent uses as elasticsearch.urls

	t      *testing.T
	target *url.URL
	proxy  *httputil.ReverseProxy

	mu       sync.Mutex
	maxLen   int64                    // 0: no limit
	fails    map[string]injectedError // by _id
	answered map[string]int           // injected answers by _id
	user     string                   // "": security off
	password string

	tooLarge     atomic.Int64 // 413s answered
	unauthorized atomic.Int64 // 401s answered
	bulks        atomic.Int64 // bulk requests received
}

type injectedError struct {
	status  int
	errType string
}

func newESFront(t *testing.T) *esFront {
	t.Helper()
	target, err := url.Parse(stack.ESURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &esFront{t: t, target: target, fails: map[string]injectedError{}, answered: map[string]int{}}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) },
	}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// maxContentLength makes the front refuse a request body over n bytes as
// Elasticsearch does over http.max_content_length: 413, an empty body,
// Content-Length 0, no X-Elastic-Product, and the connection closed.
func (f *esFront) maxContentLength(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxLen = int64(n)
}

// failDocument makes every bulk request's document with this _id fail with
// the status and error type: the front takes it out of the request and
// puts the error into the answer's items at its place.
func (f *esFront) failDocument(id string, status int, errType string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fails[id] = injectedError{status, errType}
}

// failures returns how many answers carried the injected error of id.
func (f *esFront) failures(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.answered[id]
}

// requireBasicAuth turns security on: only these Basic credentials pass,
// others are answered 401 as Elasticsearch answers them. Called again, it
// changes the accepted password, as an operator changing the cluster's.
func (f *esFront) requireBasicAuth(user, password string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.user, f.password = user, password
}

func (f *esFront) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	maxLen, user, password, failing := f.maxLen, f.user, f.password, len(f.fails) > 0
	f.mu.Unlock()
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/_bulk") {
		f.bulks.Add(1)
	}

	if maxLen > 0 && r.ContentLength > maxLen {
		// Nothing of the body is read; the server closes the connection
		// after the answer (Connection: close). Elasticsearch sends no Date.
		f.tooLarge.Add(1)
		w.Header()["Date"] = nil
		w.Header().Set("Content-Length", "0")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return
	}
	if user != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			f.unauthorized.Add(1)
			reason := fmt.Sprintf("unable to authenticate user [%s] for REST request [%s]", user, r.URL.Path)
			w.Header()["Date"] = nil
			w.Header().Set("WWW-Authenticate", `Basic realm="security" charset="UTF-8"`)
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"root_cause":[{"type":"security_exception","reason":%q}],"type":"security_exception","reason":%q},"status":401}`,
				reason, reason)
			return
		}
	}
	if failing && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/_bulk") {
		f.bulkWithFailures(w, r)
		return
	}
	f.proxy.ServeHTTP(w, r)
}

// bulkWithFailures forwards a bulk request without the documents to fail
// and answers with Elasticsearch's items and the injected errors, each at
// its document's place.
func (f *esFront) bulkWithFailures(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	if len(lines)%2 != 0 {
		f.t.Errorf("esFront: a bulk body of %d lines: not action/source pairs", len(lines))
		http.Error(w, "odd bulk body", http.StatusBadRequest)
		return
	}
	var (
		kept     bytes.Buffer
		nKept    int
		injected = map[int]json.RawMessage{} // by position in the request
		ids      []string                    // of the injected items
		total    = len(lines) / 2
	)
	f.mu.Lock()
	for i := range total {
		var action map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if err := json.Unmarshal(lines[2*i], &action); err != nil || len(action) != 1 {
			f.mu.Unlock()
			f.t.Errorf("esFront: bulk action line %q: %v", lines[2*i], err)
			http.Error(w, "bad action line", http.StatusBadRequest)
			return
		}
		for op, meta := range action {
			if e, ok := f.fails[meta.ID]; ok {
				ids = append(ids, meta.ID)
				injected[i], _ = json.Marshal(map[string]any{op: map[string]any{
					"_index": meta.Index, "_id": meta.ID, "status": e.status,
					"error": map[string]string{"type": e.errType, "reason": "injected by the test proxy"},
				}})
				continue
			}
			kept.Write(lines[2*i])
			kept.WriteByte('\n')
			kept.Write(lines[2*i+1])
			kept.WriteByte('\n')
			nKept++
		}
	}
	f.mu.Unlock()

	status, header := http.StatusOK, http.Header{"X-Elastic-Product": {"Elasticsearch"}, "Content-Type": {"application/json"}}
	top := map[string]json.RawMessage{}
	var items []json.RawMessage
	if nKept > 0 {
		res, err := f.forward(r, kept.Bytes())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		raw, err := io.ReadAll(res.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if res.StatusCode != http.StatusOK {
			// The request failed as a whole: no document is answered.
			copyHeader(w.Header(), res.Header)
			w.WriteHeader(res.StatusCode)
			w.Write(raw)
			return
		}
		status, header = res.StatusCode, res.Header
		if err := json.Unmarshal(raw, &top); err != nil {
			f.t.Errorf("esFront: bulk answer: %v: %.300s", err, raw)
		}
		if err := json.Unmarshal(top["items"], &items); err != nil || len(items) != nKept {
			f.t.Errorf("esFront: bulk answer has %d items for %d documents (%v): %.300s", len(items), nKept, err, raw)
		}
	}
	all := make([]json.RawMessage, 0, total)
	for i := range total {
		if it, ok := injected[i]; ok {
			all = append(all, it)
		} else if len(items) > 0 {
			all = append(all, items[0])
			items = items[1:]
		}
	}
	top["items"], _ = json.Marshal(all)
	top["errors"] = json.RawMessage("true")
	out, _ := json.Marshal(top)
	f.mu.Lock()
	for _, id := range ids {
		f.answered[id]++
	}
	f.mu.Unlock()
	copyHeader(w.Header(), header)
	w.Header().Del("Content-Encoding") // forward decompressed it
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(status)
	w.Write(out)
}

// forward sends the request to Elasticsearch with another body. The
// transport asks for and decompresses gzip itself, so the answer's body
// can be read and changed.
func (f *esFront) forward(r *http.Request, body []byte) (*http.Response, error) {
	u := *f.target
	u.Path, u.RawQuery = r.URL.Path, r.URL.RawQuery
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	copyHeader(req.Header, r.Header)
	req.Header.Del("Accept-Encoding")
	req.Header.Del("Content-Length")
	return http.DefaultTransport.RoundTrip(req)
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = append([]string(nil), vs...)
	}
}
