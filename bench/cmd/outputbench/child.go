package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/bench/internal/cputime"
	"github.com/shipper-agent/shipper/bench/internal/plainconsumer"
)

// childArgs is what a child process runs.
type childArgs struct {
	contender          string
	brokers, topic     string // plain
	group              string // plain
	esURL, index, docs string // loader
	bulkBytes          int64  // loader
	concurrency        int    // loader
	records            int
	timeout            time.Duration
}

// runChild runs one contender and writes its result as JSON.
func runChild(ctx context.Context, c childArgs, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var r runResult
	var err error
	switch c.contender {
	case "plain":
		r, err = runPlainChild(ctx, c)
	case "loader":
		r, err = runLoaderChild(ctx, c)
	default:
		err = fmt.Errorf("unknown contender %q", c.contender)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.contender, err)
	}
	r.Contender, r.MaxRSS = c.contender, cputime.MaxRSS()
	return json.NewEncoder(out).Encode(r)
}

func runPlainChild(ctx context.Context, c childArgs) (runResult, error) {
	res, err := plainconsumer.Consume(ctx, plainconsumer.Config{Brokers: []string{c.brokers}, Topic: c.topic,
		Group: c.group, Records: c.records})
	if err != nil {
		return runResult{}, err
	}
	r := runResult{Docs: res.Records, Bytes: res.Bytes, First: res.First.At.Sub(res.Start.At), Last: res.Last.At.Sub(res.Start.At)}
	r.User, r.Sys = res.Last.CPU(res.Start)
	return r, nil
}

// loaderSettings are the loader's knobs.
type loaderSettings struct {
	bulkBytes   int64 // a request holds documents while its body stays within this
	concurrency int   // requests in flight
}

func (s loaderSettings) String() string {
	return fmt.Sprintf("%s requests × %d in flight", shipper.ByteSize(s.bulkBytes), s.concurrency)
}

// bulkFilterPath and the include_source_on_error parameter are what the
// agent's output sends (outputs/elasticsearch/output.go), so Elasticsearch
// does the same work for both.
const bulkQuery = "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason&include_source_on_error=false"

// bulkRequest is one prebuilt request: its body and where each document
// ends in it.
type bulkRequest struct {
	body []byte
	ends []int
}

// readDocuments reads the first n documents of the documents file.
func readDocuments(path string, n int) (ids, sources [][]byte, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	for len(ids) < n {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		id := data[:i]
		data = data[i+1:]
		j := bytes.IndexByte(data, '\n')
		if j < 0 {
			return nil, nil, fmt.Errorf("%s: document %d has no source line", path, len(ids))
		}
		ids, sources = append(ids, id), append(sources, data[:j])
		data = data[j+1:]
	}
	if len(ids) < n {
		return nil, nil, fmt.Errorf("%s holds %d documents, want %d", path, len(ids), n)
	}
	return ids, sources, nil
}

// buildRequests packs the documents into bulk create requests of at most
// limit bytes each (a larger document goes alone), as the agent's output
// packs a chunk: the same action line, the same source line.
func buildRequests(index string, ids, sources [][]byte, limit int64) []bulkRequest {
	var reqs []bulkRequest
	cur := bulkRequest{}
	qIndex := strconv.Quote(index)
	for k := range ids {
		start := len(cur.body)
		cur.body = append(cur.body, `{"create":{"_index":`...)
		cur.body = append(cur.body, qIndex...)
		cur.body = append(cur.body, `,"_id":`...)
		cur.body = strconv.AppendQuote(cur.body, string(ids[k]))
		cur.body = append(cur.body, "}}\n"...)
		cur.body = append(cur.body, sources[k]...)
		cur.body = append(cur.body, '\n')
		if len(cur.ends) > 0 && int64(len(cur.body)) > limit {
			item := bytes.Clone(cur.body[start:])
			cur.body = cur.body[:start]
			reqs = append(reqs, cur)
			cur = bulkRequest{body: item}
		}
		cur.ends = append(cur.ends, len(cur.body))
	}
	if len(cur.ends) > 0 {
		reqs = append(reqs, cur)
	}
	return reqs
}

// runLoaderChild loads the documents into the index: every request built
// before the clock starts, then c.concurrency workers POST them in turn.
// A request answered 429 or 503 as a whole is sent again after 100 ms, as
// are the documents of an answer that failed them with 429; any other
// failure fails the run.
func runLoaderChild(ctx context.Context, c childArgs) (runResult, error) {
	ids, sources, err := readDocuments(c.docs, c.records)
	if err != nil {
		return runResult{}, err
	}
	reqs := buildRequests(c.index, ids, sources, c.bulkBytes)
	var sourceBytes int64
	for _, s := range sources {
		sourceBytes += int64(len(s))
	}
	ids, sources = nil, nil
	client := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConnsPerHost: c.concurrency,
		DisableCompression:  true,
		IdleConnTimeout:     30 * time.Second,
	}}
	url := c.esURL + "/_bulk?" + bulkQuery

	var (
		next, requests, retried atomic.Int64
		mu                      sync.Mutex // guards created, the marks and firstErr
		created                 int64
		first, p10, p90         time.Time
		firstErr                error
	)
	total := int64(c.records)
	answered := func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		before := created
		created += n
		now := time.Now()
		if before == 0 {
			first = now
		}
		if before < total/10 && created >= total/10 {
			p10 = now
		}
		if before < total*9/10 && created >= total*9/10 {
			p90 = now
		}
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	start := cputime.Self()
	var wg sync.WaitGroup
	for range c.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(reqs) || runCtx.Err() != nil {
					return
				}
				if err := send(runCtx, client, url, reqs[i], &requests, &retried, answered); err != nil {
					fail(err)
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	end := cputime.Self()
	if firstErr != nil {
		return runResult{}, firstErr
	}
	if created != total {
		return runResult{}, fmt.Errorf("%d of %d documents created (%v)", created, total, ctx.Err())
	}
	r := runResult{Docs: created, Bytes: sourceBytes, First: first.Sub(start.At), Last: end.At.Sub(start.At),
		P10: p10.Sub(start.At), P90: p90.Sub(start.At), Requests: requests.Load(), Retried: retried.Load()}
	r.User, r.Sys = end.CPU(start)
	return r, nil
}

// send sends one request until every document in it is created.
func send(ctx context.Context, client *http.Client, url string, req bulkRequest, requests, retried *atomic.Int64, answered func(int64)) error {
	for {
		requests.Add(1)
		status, body, err := post(ctx, client, url, req.body)
		if err != nil {
			return err
		}
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			retried.Add(int64(len(req.ends)))
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		if status != http.StatusOK {
			return fmt.Errorf("bulk: %d %.300s", status, body)
		}
		var ans struct {
			Errors bool `json:"errors"`
			Items  []map[string]struct {
				Status int `json:"status"`
				Error  struct {
					Type   string `json:"type"`
					Reason string `json:"reason"`
				} `json:"error"`
			} `json:"items"`
		}
		if err := json.Unmarshal(body, &ans); err != nil {
			return fmt.Errorf("bulk answer: %w: %.300s", err, body)
		}
		if len(ans.Items) != len(req.ends) {
			return fmt.Errorf("bulk answer: %d items for %d documents", len(ans.Items), len(req.ends))
		}
		if !ans.Errors {
			answered(int64(len(req.ends)))
			return nil
		}
		// Send again the documents refused with 429; anything else is
		// not what a fresh index answers.
		var again bulkRequest
		var ok int64
		for k, it := range ans.Items {
			st := it["create"]
			switch st.Status {
			case http.StatusCreated:
				ok++
			case http.StatusTooManyRequests:
				lo := 0
				if k > 0 {
					lo = req.ends[k-1]
				}
				again.body = append(again.body, req.body[lo:req.ends[k]]...)
				again.ends = append(again.ends, len(again.body))
			default:
				return fmt.Errorf("document %d: %d %s: %s", k, st.Status, st.Error.Type, st.Error.Reason)
			}
		}
		answered(ok)
		retried.Add(int64(len(again.ends)))
		req = again
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func post(ctx context.Context, client *http.Client, url string, body []byte) (int, []byte, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	hreq.Header.Set("Content-Type", "application/x-ndjson")
	res, err := client.Do(hreq)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	return res.StatusCode, b, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errors.Join(errors.New("interrupted"), ctx.Err())
	case <-t.C:
		return nil
	}
}
