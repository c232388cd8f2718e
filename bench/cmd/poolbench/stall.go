package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// Stall detection, layer by layer, with shipper's Output in this process
// against the real Elasticsearch through proxies:
//
//	upload     node A stops reading 1 MiB into a ~7 MiB bulk; B is healthy.
//	           From the moment A stops reading to the Send answered.
//	response   node A reads the whole request and never answers (on a
//	           pooled connection, and on A's first connection); B is
//	           healthy. From the Send's start to its answer.
//	steady     one node behind toxiproxy with latency and bandwidth
//	           toxics; one bulk of tens of MiB: nothing may be declared a
//	           stall.
//
// Every trial has a fresh Output, so no trial spends another's hedge
// budget or inherits its node states.

type stallTrial struct {
	kind   string // "upload", "response (pooled connection)", ...
	stall  time.Duration
	n      int
	bytes  int // request body, about
	answer time.Duration
	// declared: from the stall's start to the pool counting a stall or a
	// hedge (whichever came first); 0 if it did neither.
	declared time.Duration
	what     string // what the pool counted
	stats    elasticsearch.PoolStats
	nodes    []elasticsearch.NodeStatus
	answerBy string // the proxy that saw the request answered ("B", ...)
	outcome  string
	problem  string
}

// stallRecords builds records whose bulk body is about size bytes: JSON
// values of 4 KiB.
func stallRecords(topic string, seq *atomic.Int64, size int) []*shipper.Record {
	pad := strings.Repeat("0123456789abcdef", 256) // 4 KiB
	var recs []*shipper.Record
	for total := 0; total < size; {
		n := seq.Add(1)
		v := fmt.Appendf(nil, `{"msg":"poolbench stall","seq":%d,"pad":%q}`, n, pad)
		recs = append(recs, &shipper.Record{Topic: topic, Offset: n, Time: time.Now(), Value: v})
		// action line, @timestamp added to the document, newlines
		total += len(v) + 2*len(topic) + 90
	}
	return recs
}

func deliveredAll(res []elasticsearch.ItemResult) string {
	counts := map[string]int{}
	for _, r := range res {
		counts[r.Outcome.String()]++
	}
	if counts["delivered"] == len(res) {
		return fmt.Sprintf("all %d delivered", len(res))
	}
	return fmt.Sprint(counts)
}

type stallRunner struct {
	esHost, index string
	seq           atomic.Int64
	topic         string
}

// watchPool polls the Output's counters and returns when it first counts a
// stall or a hedge, and which.
func watchPool(ctx context.Context, out *elasticsearch.Output) (func() (time.Time, string), func()) {
	var at atomic.Int64
	var what atomic.Value
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_, st := out.Nodes()
			var s []string
			for _, layer := range []string{"upload", "body", "response"} {
				if st.Stalls[layer] > 0 {
					s = append(s, "stall ("+layer+")")
				}
			}
			if st.Hedges > 0 {
				s = append(s, "hedge")
			}
			if len(s) > 0 {
				at.Store(time.Now().UnixNano())
				what.Store(strings.Join(s, ", "))
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return func() (time.Time, string) {
			<-done
			if at.Load() == 0 {
				return time.Time{}, ""
			}
			return time.Unix(0, at.Load()), what.Load().(string)
		}, func() {
			cancel()
			<-done
		}
}

func (r *stallRunner) newOutput(urls []string, mod func(*elasticsearch.Config)) (*elasticsearch.Output, error) {
	cfg := elasticsearch.DefaultConfig()
	cfg.URLs, cfg.Index = urls, r.index
	if mod != nil {
		mod(&cfg)
	}
	return elasticsearch.New(cfg, slog.New(slog.DiscardHandler))
}

// primeToward sends one-record bulks until the last went to B, so that the
// next request goes to A (the pool takes live nodes in turn). With pooled,
// A has served one first and holds a pooled connection.
func (r *stallRunner) primeToward(ctx context.Context, out *elasticsearch.Output, a, b *proxy, pooled bool) error {
	for range 6 {
		a0, b0 := a.bulks.Load(), b.bulks.Load()
		if _, err := out.Send(ctx, stallRecords(r.topic, &r.seq, 1)); err != nil {
			return err
		}
		wentB := b.bulks.Load() > b0 && a.bulks.Load() == a0
		if wentB && (!pooled || a.bulks.Load() > 0) {
			return nil
		}
	}
	return fmt.Errorf("could not line up a request for node A")
}

// upload: A stops reading mid-upload.
func (r *stallRunner) upload(ctx context.Context, stall time.Duration, n int) stallTrial {
	t := stallTrial{kind: "upload", stall: stall, n: n}
	a, b, err := newProxyPair("stall", r.esHost, 256<<10)
	if err != nil {
		t.problem = err.Error()
		return t
	}
	defer a.Close()
	defer b.Close()
	out, err := r.newOutput([]string{a.URL(), b.URL()}, func(c *elasticsearch.Config) { c.StallTimeout = stall })
	if err != nil {
		t.problem = err.Error()
		return t
	}
	defer out.Close()
	if err := r.primeToward(ctx, out, a, b, true); err != nil {
		t.problem = err.Error()
		return t
	}
	recs := stallRecords(r.topic, &r.seq, 7<<20)
	t.bytes = len(recs) * (len(recs[0].Value) + 2*len(r.topic) + 90)
	a.SetMode(modeStallUpload, 1<<20)
	b0 := b.bulks.Load()
	wait, stopWatch := watchPool(ctx, out)
	defer stopWatch()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	res, err := out.Send(sctx, recs)
	done := time.Now()
	if err != nil {
		t.problem = "send: " + err.Error()
	}
	t.outcome = deliveredAll(res)
	stallAt := a.stallAt.Load()
	if stallAt == 0 {
		t.problem += " A never stopped reading (the request went elsewhere)"
		return t
	}
	t.answer = done.Sub(time.Unix(0, stallAt))
	if b.bulks.Load() > b0 {
		t.answerBy = "B"
	}
	stopWatch()
	if at, what := wait(); !at.IsZero() {
		t.declared, t.what = at.Sub(time.Unix(0, stallAt)), what
	}
	t.nodes, t.stats = out.Nodes()
	return t
}

// response: A takes the request and never answers.
func (r *stallRunner) response(ctx context.Context, pooled bool, n int) stallTrial {
	t := stallTrial{kind: "response, A's first connection", stall: elasticsearch.DefaultConfig().StallTimeout, n: n}
	if pooled {
		t.kind = "response, pooled connection"
	}
	a, b, err := newProxyPair("resp", r.esHost, 0)
	if err != nil {
		t.problem = err.Error()
		return t
	}
	defer a.Close()
	defer b.Close()
	out, err := r.newOutput([]string{a.URL(), b.URL()}, nil)
	if err != nil {
		t.problem = err.Error()
		return t
	}
	defer out.Close()
	if err := r.primeToward(ctx, out, a, b, pooled); err != nil {
		t.problem = err.Error()
		return t
	}
	recs := stallRecords(r.topic, &r.seq, 1<<20)
	t.bytes = len(recs) * (len(recs[0].Value) + 2*len(r.topic) + 90)
	a.SetMode(modeBlackhole, 0)
	a0, b0 := a.bulks.Load(), b.bulks.Load()
	wait, stopWatch := watchPool(ctx, out)
	defer stopWatch()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := out.Send(sctx, recs)
	t.answer = time.Since(start)
	if err != nil {
		t.problem = "send: " + err.Error()
	}
	t.outcome = deliveredAll(res)
	if a.bulks.Load() == a0 {
		t.problem += " the request did not go to A"
	}
	if b.bulks.Load() > b0 {
		t.answerBy = "B"
	}
	stopWatch()
	if at, what := wait(); !at.IsZero() {
		t.declared, t.what = at.Sub(start), what
	}
	t.nodes, t.stats = out.Nodes()
	return t
}

// steady: one node behind toxiproxy, slow but always moving.
func (r *stallRunner) steady(ctx context.Context, stall time.Duration, size int, rateKBs int, latency time.Duration, n int) stallTrial {
	t := stallTrial{kind: fmt.Sprintf("slow but steady (%d KB/s up, %s latency)", rateKBs, latency), stall: stall, n: n}
	zerolog.SetGlobalLevel(zerolog.Disabled)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "steady", "127.0.0.1:0", r.esHost)
	if err := srv.Collection.Add(p, true); err != nil {
		t.problem = err.Error()
		return t
	}
	defer srv.Collection.Clear()
	out, err := r.newOutput([]string{"http://" + p.Listen}, func(c *elasticsearch.Config) {
		c.StallTimeout = stall
		c.MaxBulkBytes = shipper.ByteSize(size + 8<<20) // one request
	})
	if err != nil {
		t.problem = err.Error()
		return t
	}
	defer out.Close()
	// A small request first: the node has answered before, as in an
	// agent that has been running.
	if _, err := out.Send(ctx, stallRecords(r.topic, &r.seq, 1)); err != nil {
		t.problem = "warm-up: " + err.Error()
		return t
	}
	for _, js := range []string{
		fmt.Sprintf(`{"name":"bw","type":"bandwidth","stream":"upstream","attributes":{"rate":%d}}`, rateKBs),
		fmt.Sprintf(`{"name":"lat_up","type":"latency","stream":"upstream","attributes":{"latency":%d,"jitter":%d}}`, latency.Milliseconds(), latency.Milliseconds()/5),
		fmt.Sprintf(`{"name":"lat_down","type":"latency","stream":"downstream","attributes":{"latency":%d,"jitter":%d}}`, latency.Milliseconds(), latency.Milliseconds()/5),
	} {
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.problem = "toxic: " + err.Error()
			return t
		}
	}
	recs := stallRecords(r.topic, &r.seq, size)
	t.bytes = len(recs) * (len(recs[0].Value) + 2*len(r.topic) + 90)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := out.Send(sctx, recs)
	t.answer = time.Since(start)
	if err != nil {
		t.problem = "send: " + err.Error()
	}
	t.outcome = deliveredAll(res)
	t.nodes, t.stats = out.Nodes()
	return t
}

func esHostOf(esURL string) (string, error) {
	u, err := url.Parse(esURL)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

func (t stallTrial) stallCount() int64 {
	var n int64
	for _, v := range t.stats.Stalls {
		n += v
	}
	return n
}

func (t stallTrial) counters() string {
	var s []string
	for _, layer := range []string{"upload", "body", "response"} {
		if v := t.stats.Stalls[layer]; v > 0 {
			s = append(s, "stalls "+layer+" "+strconv.FormatInt(v, 10))
		}
	}
	s = append(s, fmt.Sprintf("hedges %d (won %d)", t.stats.Hedges, t.stats.HedgeWins),
		fmt.Sprintf("deaths %d", t.stats.Deaths), fmt.Sprintf("reroutes %d", t.stats.Reroutes))
	return strings.Join(s, ", ")
}
