package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/elastic-transport-go/v8/elastictransport"
	gees "github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// Resurrection latency: two nodes (two proxies in front of the one real
// Elasticsearch), a stream of one-document bulk requests, node A stopped
// (connections refused) until the client has marked it dead, kept down for
// the outage, started again; measured from A's return to the first bulk
// request that reaches A. Each pool runs in lanes, each lane with its own
// two proxies, trials one after another with a fresh client each; all
// lanes run at once, so both pools are measured side by side.

// client is what a lane drives: shipper's Output or the stock client.
type client interface {
	send(ctx context.Context) error
	// alive reports whether the client has node url in rotation.
	alive(url string) bool
	close()
}

type shipperClient struct {
	out   *elasticsearch.Output
	topic string
	seq   atomic.Int64
}

func newShipperClient(urls []string, index, topic string) (*shipperClient, error) {
	cfg := elasticsearch.DefaultConfig()
	cfg.URLs, cfg.Index = urls, index
	out, err := elasticsearch.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return &shipperClient{out: out, topic: topic}, nil
}

func (c *shipperClient) send(ctx context.Context) error {
	n := c.seq.Add(1)
	rec := &shipper.Record{Topic: c.topic, Offset: n, Time: time.Now(),
		Value: fmt.Appendf(nil, `{"msg":"poolbench resurrection","seq":%d}`, n)}
	res, err := c.out.Send(ctx, []*shipper.Record{rec})
	if err != nil {
		return err
	}
	if res[0].Outcome != elasticsearch.Delivered {
		return fmt.Errorf("%s: %s", res[0].Outcome, res[0].Reason)
	}
	return nil
}

func (c *shipperClient) alive(url string) bool {
	nodes, _ := c.out.Nodes()
	for _, n := range nodes {
		if n.URL == url {
			return n.State == "alive"
		}
	}
	return false
}

func (c *shipperClient) close() { c.out.Close() }

// stockClient is go-elasticsearch as it comes: its default connection pool
// (dead on a failed request, back after 60 s × 2^(failures−1), up to 32
// min), its default retries (3, on network errors and 502/503/504), and its
// default transport (a clone of http.DefaultTransport, as the client makes
// when given none; passed here only so that Close can drop its idle
// connections). Metrics are on only to read which node it considers dead.
type stockClient struct {
	es    *gees.Client
	tr    *http.Transport
	index string
	seq   atomic.Int64
}

func newStockClient(urls []string, index string) (*stockClient, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	es, err := gees.NewClient(gees.Config{Addresses: urls, Transport: tr, EnableMetrics: true})
	if err != nil {
		return nil, err
	}
	return &stockClient{es: es, tr: tr, index: index}, nil
}

func (c *stockClient) send(ctx context.Context) error {
	n := c.seq.Add(1)
	// The index in the action line: the request goes to /_bulk, as
	// shipper's do, and the proxies count "POST /_bulk".
	body := fmt.Sprintf("{\"index\":{\"_index\":%q}}\n{\"msg\":\"poolbench resurrection\",\"seq\":%d}\n", c.index, n)
	res, err := esapi.BulkRequest{Body: strings.NewReader(body)}.Do(ctx, c.es)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	if res.IsError() {
		return fmt.Errorf("bulk: %s", res.Status())
	}
	return nil
}

func (c *stockClient) alive(url string) bool {
	m, err := c.es.Metrics()
	if err != nil {
		return false
	}
	for _, s := range m.Connections {
		if cm, ok := s.(elastictransport.ConnectionMetric); ok && cm.URL == url {
			return !cm.IsDead
		}
	}
	return false
}

func (c *stockClient) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.es.Close(ctx)
	c.tr.CloseIdleConnections()
}

// resTrial is one outage of node A.
type resTrial struct {
	pool    string // "shipper" or "stock"
	lane, n int
	nominal time.Duration // the outage asked for
	outage  time.Duration // nominal + a random part of a second
	// markedDead: from A's stop to the client marking it dead.
	markedDead time.Duration
	// latency: from A's return to the first bulk request reaching A.
	latency value
	// inRotation: from A's return to the client showing A alive.
	inRotation        value
	sends, sendErrors int64
	problem           string
}

// resLane is a sequence of trials of one pool on its own two proxies.
type resLane struct {
	pool     string
	id       int
	outages  []time.Duration
	bound    time.Duration // a trial's wait for A's first request
	interval time.Duration // between bulk requests
	delay    time.Duration // before the first trial
}

func runResurrection(ctx context.Context, esHost, index string, lanes []resLane, progress func(string, ...any)) ([]resTrial, error) {
	var mu sync.Mutex
	var trials []resTrial
	var wg sync.WaitGroup
	errs := make([]error, len(lanes))
	for i, l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts, err := l.run(ctx, esHost, index, progress)
			mu.Lock()
			trials = append(trials, ts...)
			mu.Unlock()
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return trials, err
		}
	}
	return trials, nil
}

func (l resLane) run(ctx context.Context, esHost, index string, progress func(string, ...any)) ([]resTrial, error) {
	a, b, err := newProxyPair(fmt.Sprintf("%s-%d", l.pool, l.id), esHost, 0)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	defer b.Close()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(l.delay):
	}
	var out []resTrial
	for n, outage := range l.outages {
		t := l.trial(ctx, a, b, index, n+1, outage)
		out = append(out, t)
		note := ""
		if t.problem != "" {
			note = " PROBLEM: " + t.problem
		}
		progress("resurrection %s lane %d trial %d: outage %s, marked dead after %s, first request to A %s after its return, in rotation after %s%s",
			l.pool, l.id, n+1, outage, t.markedDead.Round(time.Millisecond), t.latency, t.inRotation, note)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

func (l resLane) trial(ctx context.Context, a, b *proxy, index string, n int, outage time.Duration) (t resTrial) {
	t = resTrial{pool: l.pool, lane: l.id, n: n, nominal: outage, outage: outage}
	urls := []string{a.URL(), b.URL()}
	var c client
	var err error
	if l.pool == "shipper" {
		c, err = newShipperClient(urls, index, fmt.Sprintf("poolbench-lane%d", l.id))
	} else {
		c, err = newStockClient(urls, index)
	}
	if err != nil {
		t.problem = err.Error()
		return t
	}
	defer c.close()

	// The stream: one bulk request every interval, one at a time.
	sctx, stop := context.WithCancel(ctx)
	var streamWG sync.WaitGroup
	streamWG.Add(1)
	var sends, sendErrors atomic.Int64
	go func() {
		defer streamWG.Done()
		tick := time.NewTicker(l.interval)
		defer tick.Stop()
		for {
			rctx, cancel := context.WithTimeout(sctx, 10*time.Second)
			err := c.send(rctx)
			cancel()
			if sctx.Err() != nil {
				return
			}
			sends.Add(1)
			if err != nil {
				sendErrors.Add(1)
			}
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		stop()
		streamWG.Wait()
		t.sends, t.sendErrors = sends.Load(), sendErrors.Load()
	}()

	// Both nodes take requests before the outage.
	a0, b0 := a.bulks.Load(), b.bulks.Load()
	if !waitUntil(ctx, 5*time.Second, 10*time.Millisecond, func() bool { return a.bulks.Load() > a0 && b.bulks.Load() > b0 }) {
		t.problem = "the nodes took no requests before the outage"
		return t
	}
	time.Sleep(300 * time.Millisecond)

	stopped := time.Now()
	a.Stop()
	if !waitUntil(ctx, 5*time.Second, 5*time.Millisecond, func() bool { return !c.alive(a.URL()) }) {
		t.problem = "the client did not mark A dead within 5s"
		return t
	}
	t.markedDead = time.Since(stopped)
	// The outage ends at a random point of a second past its nominal
	// length: a node's return has no relation to the prober's rhythm,
	// which began when the node was marked dead.
	t.outage = outage + rand.N(time.Second)
	select {
	case <-ctx.Done():
		return t
	case <-time.After(time.Until(stopped.Add(t.outage))):
	}

	back, err := a.Start()
	if err != nil {
		t.problem = err.Error()
		return t
	}
	rot := make(chan value, 1)
	go func() {
		ok := waitUntil(ctx, l.bound, 5*time.Millisecond, func() bool { return c.alive(a.URL()) })
		rot <- value{d: min(time.Since(back), l.bound), capped: !ok}
	}()
	d, ok := a.waitFirstBulk(ctx, l.bound)
	t.latency = value{d: d, capped: !ok}
	t.inRotation = <-rot
	return t
}

// waitUntil polls cond every step until it holds (true) or limit passes.
func waitUntil(ctx context.Context, limit, step time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(step)
	}
}
