package elasticsearch

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/elastic-transport-go/v8/elastictransport"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/shipper-agent/shipper"
)

// Output turns records into Elasticsearch bulk requests and reports the
// outcome of every document. It never waits or retries by time: the caller
// owns retries, backoff and dead letters, so exactly one layer decides when
// to send again. It only splits a request that Elasticsearch refused for
// its size or content. An Output is safe for concurrent use.
type Output struct {
	cfg    Config
	client *elasticsearch.Client
	log    *slog.Logger
	pool   *pool
	stop   context.CancelFunc // stops the watchdog
	wg     sync.WaitGroup
	// learned is the largest request body, in bytes, to send, learned from
	// 413 answers: half the smallest multi-document request refused; 0
	// until one is. It only ever falls: a limit seen once (a node's or a
	// proxy's) is assumed to stay for the life of the process.
	learned atomic.Int64
	// meta adds Kafka metadata to documents (metadata_field).
	meta metadata
	// route names each document's index.
	route indexPattern
	// window bounds and adapts the bulk requests in flight.
	window *window
}

// New creates the output. It does not contact Elasticsearch. Close stops
// its background work: the stall watchdog and the probes of dead nodes.
func New(cfg Config, log *slog.Logger) (*Output, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("elasticsearch config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	route, err := parseIndexPattern(cfg.Index)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch config: index: %w", err)
	}
	tlsCfg, err := cfg.clientTLS(log)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch config: %w", err)
	}
	auth, err := newCredentials(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch config: %w", err)
	}
	cfg.securityWarnings(log)
	o := &Output{cfg: cfg, log: log, meta: metadata{field: cfg.MetadataField, headers: cfg.MetadataHeaders}, route: route,
		window: newWindow(cfg.MaxInFlight, cfg.AdaptiveConcurrency)}
	w := &watchdog{stall: cfg.StallTimeout, lifetime: cfg.ConnMaxLifetime,
		attempts: map[*attempt]struct{}{}, conns: map[*trackedConn]struct{}{}}
	p, err := newPool(cfg, log, newNodeTransports(cfg, w, tlsCfg))
	if err != nil {
		return nil, fmt.Errorf("elasticsearch nodes: %w", err)
	}
	p.tls, p.auth = tlsCfg, auth
	w.onStall = func(a *attempt, layer string) {
		p.count(func(s *PoolStats) { s.Stalls[layer]++ })
		a.node.mu.Lock()
		a.node.stalls++
		a.node.mu.Unlock()
		log.Warn("stalled send caught: closing its connection", "node", a.node.String(), "layer", layer,
			"bytes_sent", a.sent(), "request_bytes", a.size, "elapsed", a.elapsed().Round(time.Millisecond).String(),
			"stall_timeout", cfg.StallTimeout.String())
	}
	client, err := elasticsearch.NewClient(elasticsearch.Config{
		Addresses: cfg.Addresses(),
		// No Username, Password or APIKey: the transport sets the
		// Authorization header of every attempt itself, from the
		// credentials as they are at that moment (auth.go).
		Transport: &poolTransport{p: p, w: w, log: log, auth: auth},
		// The pool decides which node serves a request and whether a node
		// is alive, from what happened on the wire (pool.go).
		ConnectionPoolFunc: func([]*elastictransport.Connection, elastictransport.Selector) elastictransport.ConnectionPool {
			return p
		},
		// The delivery loop owns retries and backoff; the client's own
		// retries would multiply attempts and hide outcomes from it.
		DisableRetry: true,
		// Discovery would replace the configured URLs with the nodes'
		// publish addresses: wrong behind a load balancer or proxy.
		DiscoverNodesOnStart: false,
		// Each body is compressed into a buffer of its own: a pooled one
		// goes back to its pool when the call returns, while a hedge or a
		// 413 answered early may leave the transport still writing it.
		CompressRequestBody:      cfg.Compression == "gzip",
		CompressRequestBodyLevel: gzip.BestSpeed,
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch client: %w", err)
	}
	o.client, o.pool = client, p
	ctx, stop := context.WithCancel(context.Background())
	o.stop = stop
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		w.run(ctx)
	}()
	return o, nil
}

// Close stops the watchdog and the probes and closes idle connections.
// It is safe to call more than once.
func (o *Output) Close() error {
	o.stop()
	o.wg.Wait()
	o.pool.close()
	return nil
}

// Nodes returns the state of every node and what the pool did since start.
func (o *Output) Nodes() ([]NodeStatus, PoolStats) { return o.pool.snapshot() }

// Window returns the state of the window of bulk requests in flight.
func (o *Output) Window() WindowStats { return o.window.snapshot() }

// BulkLimit is the current largest bulk request body, in bytes: the smaller
// of max_bulk_bytes and the limit learned from 413 answers.
func (o *Output) BulkLimit() int64 {
	limit := int64(o.cfg.MaxBulkBytes)
	if l := o.learned.Load(); l > 0 && l < limit {
		return l
	}
	return limit
}

// lowerLimit records that a request of refused bytes was too large.
//
// The limit becomes half the refused size, not one byte less: the true
// limit lies somewhere below, and one byte less would let every later
// request, packed up to it, be refused again and creep down one document at
// a time, each refusal costing a request and a connection. Halving reaches
// a size that passes in log2 steps, and costs at most half the largest
// request the cluster would take.
func (o *Output) lowerLimit(refused int) {
	limit := int64(refused) / 2
	for {
		cur := o.learned.Load()
		if cur != 0 && cur <= limit {
			return
		}
		if o.learned.CompareAndSwap(cur, limit) {
			o.log.Warn("max_bulk_bytes is above what Elasticsearch accepts (413: http.max_content_length or a proxy's limit); "+
				"sending smaller bulk requests until restart",
				"max_bulk_bytes", int64(o.cfg.MaxBulkBytes), "refused_request_bytes", refused, "bulk_limit_bytes", limit)
			return
		}
	}
}

// Send indexes the records with op_type=create under their deterministic
// ids and returns exactly one result per record, in order.
//
// Records are packed into bulk requests of at most BulkLimit bytes (a
// larger document goes alone), sent one after another. A request refused
// with 413, or with a 400 from Elasticsearch (a document breaks the body),
// is sent again as two halves, recursively, down to the one document to
// dead-letter. The error is nil, or the *RequestError of the first request
// that failed as a whole: sending stops there, its documents are Retry or
// Hold, the documents of requests not sent are Pending, and everything
// decided before keeps its result.
func (o *Output) Send(ctx context.Context, recs []*shipper.Record) ([]ItemResult, error) {
	results := make([]ItemResult, len(recs))
	for i, r := range recs {
		results[i] = o.precheck(r)
	}
	var remaining int64 // what the records not appended yet will add to bodies, about
	for _, r := range recs {
		remaining += itemSize(r)
	}
	b := newBatch(o.BulkLimit(), remaining)
	for i, r := range recs {
		remaining -= itemSize(r)
		if results[i].Outcome != Pending {
			continue
		}
		index, err := o.route.index(r)
		if err != nil {
			results[i] = ItemResult{Outcome: DeadLetter, Type: "index_routing", Reason: err.Error()}
			continue
		}
		start := len(b.body)
		b.body = o.appendItem(b.body, index, r)
		if len(b.idx) > 0 && int64(len(b.body)) > o.BulkLimit() {
			// r does not fit: send the others, start the next request with r.
			next := newBatch(o.BulkLimit(), remaining+int64(len(b.body)-start))
			next.body = append(next.body, b.body[start:]...)
			b.body = b.body[:start]
			if err := o.sendBatch(ctx, b, results); err != nil {
				return results, err
			}
			b = next
		}
		b.idx = append(b.idx, i)
		b.end = append(b.end, len(b.body))
	}
	if len(b.idx) > 0 {
		if err := o.sendBatch(ctx, b, results); err != nil {
			return results, err
		}
	}
	return results, nil
}

// batch is the body of one bulk request and where its documents are.
//
// Each request gets a fresh body rather than reusing the last one: the HTTP
// transport may still be writing a body after the answer arrived (a 413 is
// answered before the body is read), so the bytes must not change.
type batch struct {
	body []byte
	idx  []int // the records' positions in the Send
	end  []int // end[k] is the offset in body just past document k
}

// newBatch makes a batch whose body holds want bytes without growing, and
// at most what a body of limit bytes can reach: the item that overflows it
// is appended before the check, so a body may pass limit by one item, and
// a sixteenth of room takes all but very large documents. Growing by
// append instead copied a 4 MiB chunk's body three times into ever larger
// buffers and left it in one of 8 MiB.
func newBatch(limit, want int64) *batch {
	return &batch{body: make([]byte, 0, max(0, min(want, limit+limit/16)))}
}

// itemSize estimates, from above for the usual index names, what a record
// adds to a bulk body: its value; an action line of about 85 bytes with
// the id (the topic's name and 20 more) and the index (often the topic's
// name again, and a date); an @timestamp of 41 bytes and the newlines. Too
// much is memory the allocation zeroes and holds for nothing; too little, a
// copy of the whole body at its last item.
func itemSize(r *shipper.Record) int64 {
	return int64(len(r.Value) + 2*len(r.Topic) + 160)
}

func (b *batch) span(lo, hi int) []byte {
	start := 0
	if lo > 0 {
		start = b.end[lo-1]
	}
	return b.body[start:b.end[hi-1]]
}

// sendBatch sends the documents of one batch and records their results. A
// part that Elasticsearch refuses for its size or content is split into
// halves, sent in order. Splitting is iterative and bounded: each split
// halves a part, so there are at most log2(documents) levels, and the stack
// holds at most one waiting part per level.
func (o *Output) sendBatch(ctx context.Context, b *batch, results []ItemResult) error {
	type part struct{ lo, hi int }
	todo := []part{{0, len(b.idx)}} // the next part to send is last
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		n, body := p.hi-p.lo, b.span(p.lo, p.hi)
		// A part over a limit learned meanwhile (here or by another
		// worker) is split without asking.
		split := n > 1 && int64(len(body)) > o.BulkLimit()
		var a answer
		if !split {
			a = o.bulk(ctx, body, n)
			if a.split && a.tooLarge {
				o.lowerLimit(len(body))
			}
			split = a.split
		}
		if split {
			mid := p.lo + n/2
			todo = append(todo, part{mid, p.hi}, part{p.lo, mid})
			continue
		}
		if n == 1 && a.results[0].Type == "request_too_large" {
			source := len(body) - bytes.IndexByte(body, '\n') - 2 // less the action line and the final newline
			a.results[0].Reason = fmt.Sprintf("document of %d bytes (request of %d bytes): %s", source, len(body), a.results[0].Reason)
		}
		for k, r := range a.results {
			results[b.idx[p.lo+k]] = r
		}
		if a.err != nil {
			return a.err
		}
	}
	return nil
}

// appendItem appends a record's bulk action and document. With offset ids
// (and for records without a key) it is a create of the record's own
// document; with key ids an index of the key's document, or a delete for a
// tombstone, versioned by the offset so that an earlier record never
// overwrites a later one.
func (o *Output) appendItem(dst []byte, index string, r *shipper.Record) []byte {
	keyed := o.cfg.DocumentID == "key" && r.Key != nil
	switch {
	case !keyed:
		dst = append(dst, `{"create":{"_index":`...)
	case r.Value == nil:
		dst = append(dst, `{"delete":{"_index":`...)
	default:
		dst = append(dst, `{"index":{"_index":`...)
	}
	dst = appendJSONString(dst, index)
	dst = append(dst, `,"_id":`...)
	if !keyed {
		var id [96]byte // offset ids of topics up to 50 characters without allocating
		dst = appendJSONString(dst, r.AppendDocumentID(id[:0]))
		dst = append(dst, "}}\n"...)
	} else {
		dst = appendJSONString(dst, keyDocumentID(r))
		dst = append(dst, `,"version":`...)
		dst = strconv.AppendInt(dst, r.Offset, 10)
		dst = append(dst, `,"version_type":"external_gte"}}`+"\n"...)
		if r.Value == nil {
			return dst
		}
	}
	start := len(dst)
	dst = appendDocument(dst, r)
	dst = o.meta.add(dst, start, r)
	return append(dst, '\n')
}

var bulkFilterPath = []string{"errors", "items.*.status", "items.*.error.type", "items.*.error.reason"}

// maxResponseBytes bounds the answer read into memory. A filtered bulk
// answer is tens of bytes per document; a longer one is not Elasticsearch's.
const maxResponseBytes = 64 << 20

// bulk sends one bulk request of n documents and reads what its answer
// means for each.
func (o *Output) bulk(ctx context.Context, body []byte, n int) answer {
	// While every node is dead, wait here for a probe to bring one
	// back: the buffer holds the data, nothing spins.
	if err := o.pool.waitAlive(ctx); err != nil {
		return failAll(n, &RequestError{Type: "network", Err: fmt.Errorf("waiting for a live node: %w", err)})
	}
	s, err := o.window.acquire(ctx)
	if err != nil {
		return failAll(n, &RequestError{Type: "network", Err: fmt.Errorf("waiting for a slot in the in-flight window: %w", err)})
	}
	a := o.send(ctx, body, n)
	o.window.release(s, congestionOf(a), len(body))
	return a
}

// send sends one bulk request and reads its answer.
func (o *Output) send(ctx context.Context, body []byte, n int) answer {
	// request_timeout bounds each attempt's wait for an answer (the
	// transport's response layer, which counts against the node); this
	// bound covers an attempt with its hedges or its one re-route.
	ctx, cancel := context.WithTimeout(ctx, 2*o.cfg.RequestTimeout)
	defer cancel()
	includeSource := false
	res, err := esapi.BulkRequest{
		Body:       bytes.NewReader(body),
		FilterPath: bulkFilterPath,
		// Keeps document contents out of error reasons, which end up in
		// logs and the dead-letter store.
		IncludeSourceOnError: &includeSource,
		Pipeline:             o.cfg.Pipeline,
	}.Do(ctx, o.client)
	if err != nil {
		return failAll(n, &RequestError{Type: "network", Err: err})
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes+1))
	switch {
	case err != nil:
		return failAll(n, &RequestError{Status: res.StatusCode, Type: "network", Err: fmt.Errorf("read response: %w", err)})
	case len(raw) > maxResponseBytes:
		return failAll(n, &RequestError{Status: res.StatusCode, Type: "bad_response",
			Err: fmt.Errorf("response longer than %d bytes", maxResponseBytes)})
	}
	return readAnswer(res.StatusCode, res.Header, raw, n)
}
