package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/shipper-agent/shipper"
)

// Outcome is what became of one document of a bulk request.
type Outcome uint8

const (
	// Delivered: indexed now, or already present (409 on create: a replay).
	Delivered Outcome = iota
	// Retry: rejected for now (429, 5xx): send the document again later.
	Retry
	// Rejected: can never be indexed as is (e.g. a mapping error): the
	// document belongs in the dead-letter store.
	Rejected
)

// ItemResult is the outcome of one document.
type ItemResult struct {
	Outcome Outcome
	Status  int
	// Reason explains a Retry or Rejected outcome ("400 mapper_parsing_exception: ...").
	Reason string
}

// RequestError is a bulk request that failed as a whole: no document of it
// was (known to be) indexed. Every RequestError is worth retrying: the data
// stays in the buffer. RetryAfter is the server's requested delay, if any.
type RequestError struct {
	Status     int // 0 when no response arrived
	RetryAfter time.Duration
	Err        error
}

func (e *RequestError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("bulk request: status %d: %v", e.Status, e.Err)
	}
	return "bulk request: " + e.Err.Error()
}
func (e *RequestError) Unwrap() error { return e.Err }

// Output turns records into Elasticsearch bulk requests and reports the
// outcome of every document. It does not retry: the caller owns retries, so
// exactly one layer decides when to send again.
type Output struct {
	cfg    Config
	client *elasticsearch.Client
	log    *slog.Logger
}

// New creates the output. It does not contact Elasticsearch.
func New(cfg Config, log *slog.Logger) (*Output, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("elasticsearch config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client, err := elasticsearch.NewClient(elasticsearch.Config{
		Addresses: cfg.Addresses(),
		Username:  cfg.Username,
		Password:  cfg.Password.Reveal(),
		APIKey:    cfg.APIKey.Reveal(),
		Transport: newTransport(cfg),
		// The delivery loop owns retries and backoff; the client's own
		// retries would multiply attempts and hide outcomes from it.
		DisableRetry: true,
		// Discovery would replace the configured URLs with the nodes'
		// publish addresses: wrong behind a load balancer or proxy.
		DiscoverNodesOnStart: false,
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch client: %w", err)
	}
	return &Output{cfg: cfg, client: client, log: log}, nil
}

// newTransport bounds every stage of a connection: dial, TLS handshake,
// idle lifetime, and keeps TCP keepalive probing idle connections, so that a
// middlebox's idle timeout never kills a pooled connection unnoticed.
func newTransport(cfg Config) *http.Transport {
	d := &net.Dialer{
		Timeout: cfg.DialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: cfg.KeepAlive, Interval: max(cfg.KeepAlive/3, time.Second), Count: 3,
		},
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		MaxIdleConnsPerHost:   cfg.Workers,
		MaxConnsPerHost:       cfg.Workers + 1,
		ResponseHeaderTimeout: cfg.RequestTimeout,
		ExpectContinueTimeout: time.Second,
		// One TCP connection carries one request at a time, so a stalled
		// connection stalls one bulk request, not all of them.
		ForceAttemptHTTP2: false,
	}
}

// Close releases idle connections.
func (o *Output) Close() error {
	if t, ok := o.client.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return nil
}

// Send indexes the records with op_type=create under their deterministic
// ids and returns one result per record, in order. Records are split into
// several bulk requests when they exceed MaxBulkBytes; on a RequestError the
// results of earlier requests are returned alongside and the rest are Retry.
func (o *Output) Send(ctx context.Context, recs []*shipper.Record) ([]ItemResult, error) {
	results := make([]ItemResult, len(recs))
	body := make([]byte, 0, min(int(o.cfg.MaxBulkBytes), 1<<20))
	start := 0
	var doc []byte
	for i := 0; i <= len(recs); i++ {
		if i < len(recs) {
			doc = appendItem(doc[:0], o.cfg.Index, recs[i])
			if len(body)+len(doc) <= int(o.cfg.MaxBulkBytes) || i == start {
				body = append(body, doc...)
				continue
			}
		}
		if err := o.bulk(ctx, body, results[start:i]); err != nil {
			for j := start; j < len(recs); j++ {
				results[j] = ItemResult{Outcome: Retry, Reason: err.Error()}
			}
			return results, err
		}
		if i == len(recs) {
			break
		}
		start = i
		body = append(body[:0], doc...)
	}
	return results, nil
}

func appendItem(dst []byte, index string, r *shipper.Record) []byte {
	dst = append(dst, `{"create":{"_index":`...)
	dst = strconv.AppendQuote(dst, index)
	dst = append(dst, `,"_id":`...)
	dst = strconv.AppendQuote(dst, r.DocumentID())
	dst = append(dst, "}}\n"...)
	dst = appendDocument(dst, r)
	return append(dst, '\n')
}

var bulkFilterPath = []string{"errors", "items.*.status", "items.*.error.type", "items.*.error.reason"}

type bulkResponse struct {
	Errors bool `json:"errors"`
	Items  []map[string]struct {
		Status int `json:"status"`
		Error  *struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		} `json:"error"`
	} `json:"items"`
}

func (o *Output) bulk(ctx context.Context, body []byte, results []ItemResult) error {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.RequestTimeout)
	defer cancel()
	includeSource := false
	res, err := esapi.BulkRequest{
		Body:       bytes.NewReader(body),
		FilterPath: bulkFilterPath,
		// Keeps document contents out of error reasons, which end up in
		// logs and the dead-letter store.
		IncludeSourceOnError: &includeSource,
	}.Do(ctx, o.client)
	if err != nil {
		return &RequestError{Err: err}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return &RequestError{Status: res.StatusCode, Err: fmt.Errorf("read response: %w", err)}
	}
	if res.StatusCode != http.StatusOK {
		return &RequestError{Status: res.StatusCode, RetryAfter: retryAfter(res.Header),
			Err: errors.New(truncate(string(raw), 512))}
	}
	var br bulkResponse
	if err := json.Unmarshal(raw, &br); err != nil {
		return &RequestError{Status: res.StatusCode, Err: fmt.Errorf("decode response: %w", err)}
	}
	if len(br.Items) != len(results) {
		return &RequestError{Status: res.StatusCode,
			Err: fmt.Errorf("response has %d items for %d documents", len(br.Items), len(results))}
	}
	for i, item := range br.Items {
		for _, it := range item { // one entry, keyed by the action ("create")
			results[i] = classify(it.Status, it.Error)
		}
	}
	return nil
}

func classify(status int, e *struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}) ItemResult {
	r := ItemResult{Status: status}
	if e != nil {
		r.Reason = fmt.Sprintf("%d %s: %s", status, e.Type, e.Reason)
	}
	switch {
	case status >= 200 && status < 300:
		r.Outcome = Delivered
	case status == http.StatusConflict && (e == nil || e.Type == "version_conflict_engine_exception"):
		// create found the id already indexed: an earlier attempt or a
		// replay delivered it.
		r.Outcome = Delivered
	case status == http.StatusTooManyRequests || status >= 500:
		r.Outcome = Retry
	default:
		r.Outcome = Rejected
	}
	return r
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
