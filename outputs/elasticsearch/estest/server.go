// Package estest is a fake Elasticsearch for unit tests: an httptest server
// that speaks the real bulk protocol (NDJSON request, per-item response,
// the X-Elastic-Product header the client checks), stores documents by
// index and id, and answers create for an existing id with a 409 as
// Elasticsearch does. Like Elasticsearch it parses the whole request before
// indexing anything: a malformed line fails the request with a 400 and
// nothing stored. Hooks inject failures per request or per document, and
// MaxContentLength refuses large bodies as http.max_content_length does.
// NewTLS serves HTTPS, and OnAuth refuses credentials with a 401 as
// Elasticsearch's security does.
//
// Hooks run one request at a time, with the server's lock held: they must
// not call the Server's methods.
package estest

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Server is a fake Elasticsearch node.
type Server struct {
	*httptest.Server

	mu               sync.Mutex
	docs             map[string]map[string]json.RawMessage // index -> id -> source
	versions         map[string]int64                      // index/id -> external version
	requests         int                                   // bulk requests received
	gzipped          int                                   // of which with gzip bodies
	maxContentLength int
	bulkHook         func(b Bulk) (status int, body string)
	requestHook      func(n int) (status int, retryAfter string)
	itemHook         func(id string, source []byte) (status int, errType string)
	itemResponseHook func(id string) (raw string, ok bool)
	authHook         func(authorization string) bool
}

// Bulk describes one bulk request to an OnBulk hook.
type Bulk struct {
	N    int      // counts bulk requests from 1, as OnRequest's n
	IDs  []string // the documents' ids, in request order
	Size int      // the request body's length in bytes
}

// New starts a fake node; it is closed when the test ends.
func New(t testing.TB) *Server {
	s := &Server{docs: map[string]map[string]json.RawMessage{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// NewTLS starts a fake node on HTTPS with httptest's certificate (valid
// for 127.0.0.1 and example.com, its own CA: Certificate returns it).
// configure, if not nil, changes the server's TLS configuration before it
// starts, e.g. to require a client certificate. It is closed when the test
// ends.
func NewTLS(t testing.TB, configure func(*tls.Config)) *Server {
	s := &Server{docs: map[string]map[string]json.RawMessage{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	// Handshake failures are the tests' subject, not noise for the log.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Server.TLS = &tls.Config{}
	if configure != nil {
		configure(s.Server.TLS)
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// CertificatePEM returns the server's certificate as PEM, to trust as a CA.
func (s *Server) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// Serve starts a fake node on ln, for a test that needs a node on a given
// address (one that comes back where it was); it is closed when the test
// ends.
func Serve(t testing.TB, ln net.Listener) *Server {
	s := &Server{docs: map[string]map[string]json.RawMessage{}}
	s.Server = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(s.serve)}}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// MaxContentLength makes the node refuse a bulk body over n bytes as
// Elasticsearch does for http.max_content_length: 413, an empty body,
// Content-Length 0, no X-Elastic-Product header, and the connection closed.
// 0 (the default) sets no limit.
func (s *Server) MaxContentLength(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxContentLength = n
}

// OnBulk sets a hook that may fail a whole bulk request, knowing its
// documents: a non-zero status answers the request with that status and
// body, with the X-Elastic-Product header (as Elasticsearch sends on its
// JSON errors), and nothing is stored. It runs before the OnRequest hook.
// A hook may panic(http.ErrAbortHandler) to drop the connection without an
// answer, as a network failure would.
func (s *Server) OnBulk(f func(b Bulk) (status int, body string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bulkHook = f
}

// OnRequest sets a hook that may fail a whole bulk request: a non-zero
// status is returned, with Retry-After if retryAfter is not empty and an
// Elasticsearch error body, and nothing is stored. n counts bulk requests
// from 1.
func (s *Server) OnRequest(f func(n int) (status int, retryAfter string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestHook = f
}

// OnItem sets a hook that may fail one document: a non-zero status is
// returned for the item with the error type, and the document is not
// stored.
func (s *Server) OnItem(f func(id string, source []byte) (status int, errType string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.itemHook = f
}

// OnItemResponse sets a hook that may replace one item of the bulk
// response with arbitrary JSON (such as {}), as a broken proxy or node
// might. The document itself is handled as usual (stored if it would be);
// only its answer changes, and the response's errors flag is set.
func (s *Server) OnItemResponse(f func(id string) (raw string, ok bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.itemResponseHook = f
}

// OnAuth sets a hook that decides whether a request's Authorization header
// ("" without one) is accepted. A refused request, of any kind, is answered
// as Elasticsearch answers unknown credentials: 401 with a
// security_exception and a WWW-Authenticate header; nothing is stored.
func (s *Server) OnAuth(f func(authorization string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authHook = f
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

// Requests returns the number of bulk requests received, including those
// refused.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Gzipped returns how many bulk requests came with gzip bodies.
func (s *Server) Gzipped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gzipped
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	s.mu.Lock()
	auth := s.authHook
	s.mu.Unlock()
	if auth != nil && !auth(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Basic realm="security", charset="UTF-8"`)
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"type":"security_exception","reason":"unable to authenticate user for REST request [%s]"},"status":401}`, r.URL.Path)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		fmt.Fprint(w, `{"name":"estest","cluster_name":"estest","version":{"number":"8.19.0","build_flavor":"default"},"tagline":"You Know, for Search"}`)
	case r.Method == http.MethodGet && r.URL.Path == "/_nodes/_local":
		fmt.Fprint(w, `{"cluster_name":"estest","nodes":{"n1":{"version":"8.19.0"}}}`)
	case r.Method == http.MethodPost && r.URL.Path == "/_bulk":
		s.bulk(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"type":"not_found","reason":"no handler for %s %s"},"status":404}`, r.Method, r.URL.Path)
	}
}

// op is one action and its source line.
type op struct {
	action, index, id string
	source            []byte
	// version is the external version of an index or delete with
	// version_type external_gte; -1 without one.
	version int64
}

func (s *Server) bulk(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	limit := int64(s.maxContentLength)
	if limit > 0 && r.ContentLength > limit {
		// Refused from the header, before reading the body, as
		// Elasticsearch does.
		tooLarge(w)
		return
	}
	var rd io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		// Like Elasticsearch, decompress before the length limit applies.
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"type":"parse_exception","reason":%q},"status":400}`, err.Error())
			return
		}
		s.gzipped++
		rd = zr
	}
	body, err := io.ReadAll(rd)
	if err != nil {
		return
	}
	if limit > 0 && int64(len(body)) > limit { // a chunked or compressed body
		tooLarge(w)
		return
	}
	ops, err := parseBulk(body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"type":"illegal_argument_exception","reason":%q},"status":400}`, err.Error())
		return
	}
	if s.bulkHook != nil {
		ids := make([]string, len(ops))
		for i, o := range ops {
			ids[i] = o.id
		}
		if status, body := s.bulkHook(Bulk{N: s.requests, IDs: ids, Size: len(body)}); status != 0 {
			w.WriteHeader(status)
			io.WriteString(w, body)
			return
		}
	}
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
	var out bytes.Buffer
	hasErrors := false
	for i, o := range ops {
		item, ok := s.index(o)
		if s.itemResponseHook != nil {
			if raw, replaced := s.itemResponseHook(o.id); replaced {
				item, ok = []byte(raw), false
			}
		}
		hasErrors = hasErrors || !ok
		if i > 0 {
			out.WriteByte(',')
		}
		out.Write(item) // as is: a hook may write any bytes
	}
	fmt.Fprintf(w, `{"took":1,"errors":%t,"items":[%s]}`, hasErrors, out.Bytes())
}

// index applies one operation and returns its response item, and whether
// it succeeded.
func (s *Server) index(o op) (json.RawMessage, bool) {
	res := map[string]any{"_index": o.index, "_id": o.id}
	status, errType := 201, ""
	if s.itemHook != nil {
		if st, et := s.itemHook(o.id, o.source); st != 0 {
			status, errType = st, et
		}
	}
	key := o.index + "/" + o.id
	if s.versions == nil {
		s.versions = map[string]int64{}
	}
	if v, seen := s.versions[key]; status == 201 && o.version >= 0 && seen && v > o.version {
		// external_gte: an earlier version than the document's.
		status, errType = 409, "version_conflict_engine_exception"
	}
	if status == 201 && o.action == "delete" {
		if s.docs[o.index][o.id] == nil {
			res["result"], res["status"] = "not_found", 404
		} else {
			delete(s.docs[o.index], o.id)
			res["result"], res["status"] = "deleted", 200
		}
		s.versions[key] = o.version
		raw, _ := json.Marshal(map[string]any{o.action: res})
		return raw, true
	}
	if status == 201 && !json.Valid(o.source) {
		status, errType = 400, "document_parsing_exception"
	}
	if status == 201 && o.action == "create" && s.docs[o.index][o.id] != nil {
		status, errType = 409, "version_conflict_engine_exception"
	}
	if status == 201 {
		if s.docs[o.index] == nil {
			s.docs[o.index] = map[string]json.RawMessage{}
		}
		s.docs[o.index][o.id] = o.source
		res["result"] = "created"
		if o.version >= 0 {
			s.versions[key] = o.version
		}
	} else {
		res["error"] = map[string]string{"type": errType, "reason": strings.ReplaceAll(errType, "_", " ") + " for [" + o.id + "]"}
	}
	res["status"] = status
	raw, _ := json.Marshal(map[string]any{o.action: res})
	return raw, status == 201
}

// parseBulk reads a whole NDJSON bulk body, as Elasticsearch does before
// executing any of it.
func parseBulk(body []byte) ([]op, error) {
	if len(body) > 0 && body[len(body)-1] != '\n' {
		return nil, fmt.Errorf("The bulk request must be terminated by a newline [\\n]")
	}
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	var ops []op
	for i := 0; i < len(lines); {
		var action map[string]struct {
			Index       string `json:"_index"`
			ID          string `json:"_id"`
			Version     *int64 `json:"version"`
			VersionType string `json:"version_type"`
		}
		if err := json.Unmarshal(lines[i], &action); err != nil || len(action) != 1 {
			return nil, fmt.Errorf("Malformed action/metadata line [%d], expected a single action object", i+1)
		}
		for name, meta := range action {
			o := op{action: name, index: meta.Index, id: meta.ID, version: -1}
			if meta.Version != nil {
				if meta.VersionType != "external_gte" {
					return nil, fmt.Errorf("estest: version_type %q not supported", meta.VersionType)
				}
				o.version = *meta.Version
			}
			if name != "delete" {
				if i+1 >= len(lines) {
					return nil, fmt.Errorf("Malformed action/metadata line [%d], missing source line", i+1)
				}
				i++
				o.source = bytes.Clone(lines[i])
			}
			ops = append(ops, o)
		}
		i++
	}
	return ops, nil
}

// tooLarge answers as Elasticsearch does to a body over
// http.max_content_length (measured on 8.19): 413, an empty body,
// Content-Length 0, no X-Elastic-Product, and it closes the connection.
func tooLarge(w http.ResponseWriter) {
	h := w.Header()
	h.Del("X-Elastic-Product")
	h.Del("Content-Type")
	h.Set("Content-Length", "0")
	h.Set("Connection", "close")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
}
