// Package estest is a fake Elasticsearch for unit tests: an httptest server
// that speaks the real bulk protocol (NDJSON request, per-item response,
// the X-Elastic-Product header the client checks), stores documents by
// index and id, and answers create for an existing id with a 409 as
// Elasticsearch does. Hooks inject failures per request or per document.
package estest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Server is a fake Elasticsearch node.
type Server struct {
	*httptest.Server

	mu   sync.Mutex
	docs map[string]map[string]json.RawMessage // index -> id -> source
	// Requests counts bulk requests received.
	requests int
	// RequestHook, if set, may fail a whole bulk request: a non-zero status
	// is returned with no per-item results. n counts bulk requests from 1.
	requestHook func(n int) (status int, retryAfter string)
	// ItemHook, if set, may fail one document: a non-zero status is
	// returned for the item with the error type.
	itemHook func(id string, source []byte) (status int, errType string)
}

// New starts a fake node; it is closed when the test ends.
func New(t testing.TB) *Server {
	s := &Server{docs: map[string]map[string]json.RawMessage{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// OnRequest sets the whole-request failure hook.
func (s *Server) OnRequest(f func(n int) (status int, retryAfter string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestHook = f
}

// OnItem sets the per-document failure hook.
func (s *Server) OnItem(f func(id string, source []byte) (status int, errType string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.itemHook = f
}

// Docs returns a copy of the documents of an index, by id.
func (s *Server) Docs(index string) map[string]json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]json.RawMessage, len(s.docs[index]))
	for k, v := range s.docs[index] {
		out[k] = v
	}
	return out
}

// Requests returns the number of bulk requests received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		fmt.Fprint(w, `{"name":"estest","cluster_name":"estest","version":{"number":"8.19.0","build_flavor":"default"},"tagline":"You Know, for Search"}`)
	case r.Method == http.MethodPost && r.URL.Path == "/_bulk":
		s.bulk(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"type":"not_found","reason":"no handler for %s %s"},"status":404}`, r.Method, r.URL.Path)
	}
}

type item map[string]any

func (s *Server) bulk(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.requestHook != nil {
		if status, ra := s.requestHook(s.requests); status != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":{"type":"injected","reason":"injected failure"},"status":%d}`, status)
			return
		}
	}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	var items []item
	hasErrors := false
	for sc.Scan() {
		var action map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &action); err != nil || len(action) != 1 {
			http.Error(w, `{"error":{"type":"illegal_argument_exception","reason":"malformed action line"},"status":400}`, 400)
			return
		}
		if !sc.Scan() {
			http.Error(w, `{"error":{"type":"illegal_argument_exception","reason":"missing source line"},"status":400}`, 400)
			return
		}
		source := bytes.Clone(sc.Bytes())
		for op, meta := range action {
			res := item{"_index": meta.Index, "_id": meta.ID}
			status, errType := 201, ""
			if s.itemHook != nil {
				if st, et := s.itemHook(meta.ID, source); st != 0 {
					status, errType = st, et
				}
			}
			if status == 201 && !json.Valid(source) {
				status, errType = 400, "document_parsing_exception"
			}
			if status == 201 && op == "create" && s.docs[meta.Index][meta.ID] != nil {
				status, errType = 409, "version_conflict_engine_exception"
			}
			if status == 201 {
				if s.docs[meta.Index] == nil {
					s.docs[meta.Index] = map[string]json.RawMessage{}
				}
				s.docs[meta.Index][meta.ID] = source
				res["result"] = "created"
			} else {
				hasErrors = true
				res["error"] = map[string]string{"type": errType, "reason": strings.ReplaceAll(errType, "_", " ") + " for [" + meta.ID + "]"}
			}
			res["status"] = status
			items = append(items, item{op: res})
		}
	}
	json.NewEncoder(w).Encode(map[string]any{"took": 1, "errors": hasErrors, "items": items})
}
