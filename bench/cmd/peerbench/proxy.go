package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/esadmin"
)

// proxy is the pass-through HTTP proxy every contender sends to, in front
// of the Elasticsearch node. It answers GET / (and HEAD /) itself, as a
// full node does, with the node's real version and cluster: the stack's
// minimal node answers that call 405, and Filebeat's connect check needs
// it. Everything else goes to the node unchanged, over keep-alive
// connections, except that responses are asked for uncompressed (the
// Accept-Encoding header is dropped) so that the proxy can read them.
//
// It also counts: in every 200 answer to a _bulk request it reads each
// item's status, so that it knows when the 201s (documents created) reach
// the run's total, and when the first, the 10 %th and the 90 %th were
// created. Runs are one at a time; arm starts the count of a new one.
type proxy struct {
	srv  *http.Server
	ln   net.Listener
	root []byte
	cur  atomic.Pointer[proxyRun]
	wg   sync.WaitGroup
}

// proxyRun is the count of one run.
type proxyRun struct {
	total int64
	start time.Time
	done  chan struct{}
	once  sync.Once

	requests, bulks, bodyBytes, root      atomic.Int64
	created, updated, conflicts, rejected atomic.Int64 // items: 201, 200, 409, 429
	otherItems, throttled, failed         atomic.Int64 // items of another status; whole requests 429/503; transport errors
	first, p10, p90, last                 atomic.Int64 // ns since start
	otherStatus                           atomic.Value // string: the last other item status seen
}

// proxyCounts is what a run's proxyRun counted.
type proxyCounts struct {
	Requests, Bulks, BodyBytes, Root              int64
	Created, Updated, Conflicts, Rejected, Others int64
	Throttled, Failed                             int64
	OtherStatus                                   string
}

// startProxy listens on a free loopback port and forwards to target; node
// describes the node for the answer to GET /.
func startProxy(target string, node esadmin.Node) (*proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	root, err := json.Marshal(map[string]any{
		"name":         node.Name,
		"cluster_name": node.ClusterName,
		"cluster_uuid": node.ClusterUUID,
		"version": map[string]any{
			"number":                              node.Version,
			"build_flavor":                        "default",
			"build_type":                          "tar",
			"build_snapshot":                      false,
			"minimum_wire_compatibility_version":  "7.17.0",
			"minimum_index_compatibility_version": "7.0.0",
		},
		"tagline": "You Know, for Search",
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, root: root}
	p.cur.Store(&proxyRun{done: make(chan struct{}), start: time.Now(), total: -1})
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = u.Host
			r.Out.Header.Del("Accept-Encoding")
		},
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		ModifyResponse: p.count,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.cur.Load().failed.Add(1)
			if !errors.Is(err, context.Canceled) {
				http.Error(w, "peerbench proxy: "+err.Error(), http.StatusBadGateway)
			}
		},
	}
	p.srv = &http.Server{Handler: p.handler(rp), ReadHeaderTimeout: 10 * time.Second}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// URL is where contenders send.
func (p *proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy and waits for its server.
func (p *proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	p.wg.Wait()
	return err
}

// arm starts counting a new run that ends at total documents created; its
// done channel is closed then.
func (p *proxy) arm(total int64) *proxyRun {
	r := &proxyRun{total: total, start: time.Now(), done: make(chan struct{})}
	p.cur.Store(r)
	return r
}

func (p *proxy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		run := p.cur.Load()
		run.requests.Add(1)
		if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			run.root.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.Header().Set("Content-Length", strconv.Itoa(len(p.root)))
			if r.Method == http.MethodGet {
				_, _ = w.Write(p.root)
			}
			return
		}
		if isBulk(r) {
			run.bulks.Add(1)
			if r.ContentLength > 0 {
				run.bodyBytes.Add(r.ContentLength)
			}
		}
		next.ServeHTTP(w, r)
	})
}

func isBulk(r *http.Request) bool {
	return (r.Method == http.MethodPost || r.Method == http.MethodPut) && strings.HasSuffix(r.URL.Path, "/_bulk")
}

// count reads a bulk answer's item statuses.
func (p *proxy) count(res *http.Response) error {
	if !isBulk(res.Request) {
		return nil
	}
	run := p.cur.Load()
	if res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable {
		run.throttled.Add(1)
		return nil
	}
	if res.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	res.ContentLength = int64(len(body))
	res.Header.Set("Content-Length", strconv.Itoa(len(body)))
	var created int64
	for _, st := range itemStatuses(body) {
		switch st {
		case http.StatusCreated:
			created++
		case http.StatusOK:
			run.updated.Add(1)
		case http.StatusConflict:
			run.conflicts.Add(1)
		case http.StatusTooManyRequests:
			run.rejected.Add(1)
		default:
			run.otherItems.Add(1)
			run.otherStatus.Store(strconv.Itoa(st))
		}
	}
	if created > 0 {
		run.add(created)
	}
	return nil
}

// add counts n documents created now.
func (r *proxyRun) add(n int64) {
	now := int64(time.Since(r.start))
	after := r.created.Add(n)
	before := after - n
	if before == 0 {
		r.first.Store(now)
	}
	if r.total <= 0 {
		return
	}
	if before < r.total/10 && after >= r.total/10 {
		r.p10.Store(now)
	}
	if before < r.total*9/10 && after >= r.total*9/10 {
		r.p90.Store(now)
	}
	if after >= r.total {
		r.once.Do(func() {
			r.last.Store(now)
			close(r.done)
		})
	}
}

// itemStatuses returns the value of every "status" key in a bulk answer:
// one per item (a 200 answer's top level has none). The answer is
// Elasticsearch's compact JSON, with or without filter_path.
func itemStatuses(body []byte) []int {
	const key = `"status":`
	var out []int
	for {
		i := bytes.Index(body, []byte(key))
		if i < 0 {
			return out
		}
		body = body[i+len(key):]
		n, k := 0, 0
		for k < len(body) && body[k] >= '0' && body[k] <= '9' {
			n = n*10 + int(body[k]-'0')
			k++
		}
		if k > 0 {
			out = append(out, n)
		}
		body = body[k:]
	}
}

func (r *proxyRun) counts() proxyCounts {
	c := proxyCounts{Requests: r.requests.Load(), Bulks: r.bulks.Load(), BodyBytes: r.bodyBytes.Load(), Root: r.root.Load(),
		Created: r.created.Load(), Updated: r.updated.Load(), Conflicts: r.conflicts.Load(), Rejected: r.rejected.Load(),
		Others: r.otherItems.Load(), Throttled: r.throttled.Load(), Failed: r.failed.Load()}
	if s, ok := r.otherStatus.Load().(string); ok {
		c.OtherStatus = s
	}
	return c
}

// at returns a mark (ns since the run's start) as a duration; 0 if unset.
func at(v *atomic.Int64) time.Duration { return time.Duration(v.Load()) }
