// Package bulksink is a fast stand-in for an Elasticsearch node: it answers
// bulk requests with valid per-document responses without indexing
// anything, so that a benchmark of a sender measures the sender and not the
// cluster. It answers what the agent asks besides (GET / and GET
// /_nodes/_local, as an 8.x node), every response carries the
// X-Elastic-Product header the Go client requires, and gzip request bodies
// are read.
//
// Every create, index or update is answered 201 the first time its _id
// is seen and 409 (version_conflict_engine_exception, as Elasticsearch
// answers a create of an existing id) after, so a document sent twice (a
// hedged request) is counted once; deletes are answered 200. Done is
// closed when Total distinct ids have been answered.
package bulksink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Version is the Elasticsearch version the sink claims.
const Version = "8.19.0"

// Sink is a running fake node.
type Sink struct {
	total int64
	srv   *http.Server
	ln    net.Listener
	wg    sync.WaitGroup
	done  chan struct{}

	mu    sync.Mutex // guards ids and stats
	ids   map[string]struct{}
	stats Stats
}

// Stats is what the sink received.
type Stats struct {
	Requests    int64 // bulk requests answered
	Gzipped     int64 // of which with a gzip body
	WireBytes   int64 // bulk bodies as sent
	BodyBytes   int64 // bulk bodies uncompressed
	SourceBytes int64 // document lines (sources), without the action lines
	Created     int64 // items answered 201: distinct ids
	Repeated    int64 // items answered 409: an id seen before
	Deleted     int64 // delete items, answered 200
	// Arrived is when the first bulk request arrived, before its body was
	// read: how long a starting sender takes to send anything.
	Arrived time.Time
	// When the response that answered the first created item, the
	// Total/10-th, the Total*9/10-th and the Total-th had been written.
	First, P10, P90, Last time.Time
}

// Start listens on a free loopback port and serves until Close. Done is
// closed once total distinct documents were answered 201.
func Start(total int64) (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{total: total, ln: ln, done: make(chan struct{}), ids: make(map[string]struct{}, total)}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "bulksink: %v\n", err)
		}
	}()
	return s, nil
}

// URL is the sink's base URL.
func (s *Sink) URL() string { return "http://" + s.ln.Addr().String() }

// Done is closed when the total was reached.
func (s *Sink) Done() <-chan struct{} { return s.done }

// Stats returns the counters so far.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close stops serving and closes every connection; it waits for the
// server's goroutine. Safe to call more than once.
func (s *Sink) Close() error {
	err := s.srv.Close()
	s.wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Sink) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		fmt.Fprintf(w, `{"name":"bulksink","cluster_name":"bulksink","version":{"number":%q,"build_flavor":"default"},"tagline":"You Know, for Search"}`, Version)
	case r.URL.Path == "/_nodes/_local" && r.Method == http.MethodGet:
		fmt.Fprintf(w, `{"cluster_name":"bulksink","nodes":{"bulksink":{"version":%q}}}`, Version)
	case (r.URL.Path == "/_bulk" || strings.HasSuffix(r.URL.Path, "/_bulk")) &&
		(r.Method == http.MethodPost || r.Method == http.MethodPut):
		s.bulk(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"type":"illegal_argument_exception","reason":"bulksink: no handler for %s %s"},"status":404}`,
			r.Method, strconv.Quote(r.URL.Path))
	}
}

func badRequest(w http.ResponseWriter, reason string) {
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `{"error":{"type":"illegal_argument_exception","reason":%s},"status":400}`, strconv.Quote(reason))
}

// item is one action of a bulk body.
type item struct {
	op string // create, index, update, delete
	id string
}

func (s *Sink) bulk(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	s.mu.Lock()
	if s.stats.Arrived.IsZero() {
		s.stats.Arrived = arrived
	}
	s.mu.Unlock()
	wire, err := io.ReadAll(r.Body)
	if err != nil {
		badRequest(w, "reading the body: "+err.Error())
		return
	}
	body := wire
	gzipped := r.Header.Get("Content-Encoding") == "gzip"
	if gzipped {
		zr, err := gzip.NewReader(bytes.NewReader(wire))
		if err == nil {
			body, err = io.ReadAll(zr)
		}
		if err != nil {
			badRequest(w, "gzip body: "+err.Error())
			return
		}
	}
	items, sources, err := parse(body)
	if err != nil {
		badRequest(w, err.Error())
		return
	}

	// Decide each item's status under the lock, answer outside it.
	statuses := make([]int, len(items))
	var created, repeated, deleted int64
	s.mu.Lock()
	for i, it := range items {
		switch {
		case it.op == "delete":
			statuses[i] = http.StatusOK
			deleted++
		case it.id == "":
			statuses[i] = http.StatusCreated // an automatic id: always new
			created++
		default:
			if _, seen := s.ids[it.id]; seen {
				statuses[i] = http.StatusConflict
				repeated++
			} else {
				s.ids[it.id] = struct{}{}
				statuses[i] = http.StatusCreated
				created++
			}
		}
	}
	s.mu.Unlock()

	out := make([]byte, 0, 32+len(items)*32)
	errs := repeated > 0
	out = append(out, `{"errors":`...)
	out = strconv.AppendBool(out, errs)
	out = append(out, `,"items":[`...)
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"`...)
		out = append(out, it.op...)
		out = append(out, `":{"status":`...)
		out = strconv.AppendInt(out, int64(statuses[i]), 10)
		if statuses[i] == http.StatusConflict {
			out = append(out, `,"error":{"type":"version_conflict_engine_exception","reason":"document already exists"}`...)
		}
		out = append(out, `}}`...)
	}
	out = append(out, `]}`...)
	_, _ = w.Write(out)

	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.stats
	st.Requests++
	if gzipped {
		st.Gzipped++
	}
	st.WireBytes += int64(len(wire))
	st.BodyBytes += int64(len(body))
	st.SourceBytes += sources
	before := st.Created
	st.Created += created
	st.Repeated += repeated
	st.Deleted += deleted
	now := time.Now()
	crossed := func(mark int64) bool { return before < mark && st.Created >= mark }
	if crossed(1) {
		st.First = now
	}
	if crossed(max(1, s.total/10)) {
		st.P10 = now
	}
	if crossed(max(1, s.total*9/10)) {
		st.P90 = now
	}
	if crossed(s.total) {
		st.Last = now
		close(s.done)
	}
}

// parse reads a bulk body: an action line per item, followed by a source
// line except for delete. It returns the items and the bytes of their
// source lines.
func parse(body []byte) ([]item, int64, error) {
	var items []item
	var sources int64
	for len(body) > 0 {
		line, rest := cutLine(body)
		body = rest
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		it, err := action(line)
		if err != nil {
			return nil, 0, fmt.Errorf("item %d: %w", len(items), err)
		}
		if it.op != "delete" {
			if len(body) == 0 {
				return nil, 0, fmt.Errorf("item %d (%s): no source line", len(items), it.op)
			}
			var src []byte
			src, body = cutLine(body)
			sources += int64(len(src))
		}
		items = append(items, it)
	}
	return items, sources, nil
}

func cutLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// action reads an action line, {"<op>":{..."_id":"<id>"...}}, without a
// full JSON parse: the sink must cost little beside what it measures.
func action(line []byte) (item, error) {
	l := bytes.TrimSpace(line)
	if len(l) < 4 || l[0] != '{' || l[1] != '"' {
		return item{}, fmt.Errorf("action line %.80q: want {\"<op>\":{...}}", l)
	}
	end := bytes.IndexByte(l[2:], '"')
	if end < 0 {
		return item{}, fmt.Errorf("action line %.80q", l)
	}
	it := item{op: string(l[2 : 2+end])}
	switch it.op {
	case "create", "index", "update", "delete":
	default:
		return item{}, fmt.Errorf("unknown action %q", it.op)
	}
	if i := bytes.Index(l, []byte(`"_id":"`)); i >= 0 {
		id := l[i+len(`"_id":"`):]
		j := bytes.IndexByte(id, '"')
		if j < 0 {
			return item{}, fmt.Errorf("action line %.80q: unterminated _id", l)
		}
		it.id = string(id[:j])
	}
	return it, nil
}
