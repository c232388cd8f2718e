package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/bench/internal/agentlog"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// The two scenarios and the throughput comparison run the real
// agent binary against the real Kafka and Elasticsearch; the index's
// document count, read from Elasticsearch directly, is the measure of
// progress.

type env struct {
	bin, tmp, broker string
	es               es
	esHost           string
	progress         func(string, ...any)
	cleanup          []func()
	mu               sync.Mutex
}

// newTopic creates a topic (and names the index after it); both are
// deleted at the end of the run.
func (e *env) newTopic(ctx context.Context, name string, partitions int) (string, error) {
	topic := fmt.Sprintf("poolbench-%s-%d", name, time.Now().UnixNano())
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := loggen.CreateTopic(cctx, e.broker, topic, partitions); err != nil {
		return "", err
	}
	e.mu.Lock()
	e.cleanup = append(e.cleanup, func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := loggen.DeleteTopic(dctx, e.broker, topic); err != nil {
			e.progress("delete topic %s: %v (delete it by hand)", topic, err)
		}
	})
	e.mu.Unlock()
	e.dropIndexAtEnd(topic)
	return topic, nil
}

func (e *env) dropIndexAtEnd(index string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanup = append(e.cleanup, func() { e.es.deleteIndex(index) })
}

// agentReport is what the agent said about its pool when a scenario ended.
type agentReport struct {
	counters map[string]float64
	nodes    []elasticsearch.NodeStatus
	log      string
	exit     string
}

func finish(a *agentProc) agentReport {
	r := agentReport{counters: a.poolCounters(), nodes: a.nodes()}
	r.exit = a.stop()
	r.log = poolLog(agentlog.Count(a.logPath, func(string) bool { return true }))
	return r
}

// ---- S1: a silent stall ----

type s1Result struct {
	topic            string
	rate             int
	produced         int64
	produceRate      float64
	stallAfter       time.Duration // since the stream started
	window           time.Duration
	baselineGap      time.Duration // longest gap before the stall
	gap              value         // longest gap in the window after the stall
	gapFrom, gapTo   time.Duration // since the stall
	firstAfter       time.Duration // first growth after the stall
	allIndexed       value         // from the stream's end to every record indexed
	indexedAtEnd     int64
	agent            agentReport
	samplesInWindow  int
	countAtStall     int64
	countAtWindowEnd int64
}

func runS1(ctx context.Context, e *env, rate int, stallAfter, window time.Duration) (*s1Result, error) {
	r := &s1Result{rate: rate, stallAfter: stallAfter, window: window}
	topic, err := e.newTopic(ctx, "s1", 4)
	if err != nil {
		return nil, err
	}
	r.topic = topic
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	defer srv.Collection.Clear()
	var urls []string
	var proxies []*toxiproxy.Proxy
	for _, name := range []string{"s1-A", "s1-B"} {
		p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", e.esHost)
		if err := srv.Collection.Add(p, true); err != nil {
			return nil, err
		}
		proxies = append(proxies, p)
		urls = append(urls, "http://"+p.Listen)
	}
	a, err := startAgent(ctx, e.bin, e.tmp, "s1", e.broker, topic, topic, topic, urls)
	if err != nil {
		return nil, err
	}
	defer func() {
		if a.running() {
			a.stop()
		}
	}()

	sctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	samples := make(chan countSample, 1024)
	go e.es.pollCount(sctx, topic, 250*time.Millisecond, samples)

	// The stream: rate records/s, topped up every 100 ms.
	w := loggen.Writer(e.broker, topic)
	defer w.Close()
	var produced atomic.Int64
	pctx, stopProduce := context.WithCancel(ctx)
	defer stopProduce()
	streamStart := time.Now()
	prodErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			want := int64(time.Since(streamStart).Seconds() * float64(rate))
			if n := want - produced.Load(); n > 0 {
				if err := loggen.Produce(pctx, w, int(produced.Load()), int(n)); err != nil {
					if pctx.Err() == nil {
						prodErr <- err
					} else {
						prodErr <- nil
					}
					return
				}
				produced.Add(n)
			}
			select {
			case <-pctx.Done():
				prodErr <- nil
				return
			case <-tick.C:
			}
		}
	}()

	var all []countSample
	collect := func(until time.Time) {
		for time.Now().Before(until) {
			select {
			case s := <-samples:
				all = append(all, s)
			case <-time.After(time.Until(until)):
			}
		}
	}
	collect(streamStart.Add(stallAfter))
	// One node stops carrying data and keeps its connections open.
	stallAt := time.Now()
	for _, stream := range []string{"upstream", "downstream"} {
		js := fmt.Sprintf(`{"name":"silent_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, stream, stream)
		if _, err := proxies[0].Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			return nil, fmt.Errorf("add toxic: %w", err)
		}
	}
	e.progress("S1: node A silent at %s into the stream (%d records produced, %d indexed)",
		stallAfter, produced.Load(), lastCount(all))
	collect(stallAt.Add(window))
	stopProduce()
	if err := <-prodErr; err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}
	streamEnd := time.Now()
	r.produced = produced.Load()
	r.produceRate = float64(r.produced) / streamEnd.Sub(streamStart).Seconds()
	const bound = 120 * time.Second
	for {
		if n := lastCount(all); n >= r.produced {
			r.allIndexed = value{d: all[len(all)-1].at.Sub(streamEnd)}
			break
		}
		if time.Since(streamEnd) > bound {
			r.allIndexed = value{d: bound, capped: true}
			break
		}
		collect(time.Now().Add(250 * time.Millisecond))
	}
	r.indexedAtEnd = lastCount(all)
	stopPoll()
	r.agent = finish(a)

	// The longest stretch without growth: the stall's window, and before.
	var incs []time.Time // samples where the count grew
	var prev int64
	for _, s := range all {
		if s.n > prev {
			incs = append(incs, s.at)
		}
		prev = s.n
		if !s.at.After(stallAt) {
			r.countAtStall = s.n
		}
	}
	end := stallAt.Add(window)
	lastInc := stallAt
	for i, t := range incs {
		if t.After(stallAt) {
			break
		}
		if i > 0 {
			r.baselineGap = max(r.baselineGap, t.Sub(incs[i-1]))
		}
		lastInc = t
	}
	for _, s := range all {
		if s.at.After(stallAt) && !s.at.After(end) {
			r.samplesInWindow++
			r.countAtWindowEnd = s.n
		}
	}
	for _, t := range incs {
		if !t.After(stallAt) || t.After(end) {
			continue
		}
		if r.firstAfter == 0 {
			r.firstAfter = t.Sub(stallAt)
		}
		if g := t.Sub(lastInc); g > r.gap.d {
			r.gap = value{d: g}
			r.gapFrom, r.gapTo = lastInc.Sub(stallAt), t.Sub(stallAt)
		}
		lastInc = t
	}
	if g := end.Sub(lastInc); g > r.gap.d {
		r.gap = value{d: g, capped: true}
		r.gapFrom, r.gapTo = lastInc.Sub(stallAt), window
	}
	return r, nil
}

func lastCount(s []countSample) int64 {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1].n
}

// ---- S2: a middlebox that silently drops idle connections ----

type burst struct {
	i        int
	produced time.Duration // since the first burst: when Kafka had acknowledged it
	took     value         // from then to all of it indexed
}

type s2Result struct {
	topic      string
	size       int
	gap, idle  time.Duration
	bound      time.Duration // a burst's wait to be indexed
	bursts     []burst
	blackholed int64 // connections the middlebox dropped
	agent      agentReport
}

func runS2(ctx context.Context, e *env, bursts, size int, gap, idle, bound time.Duration) (*s2Result, error) {
	r := &s2Result{size: size, gap: gap, idle: idle, bound: bound}
	// One partition: burst i is offsets [i×size, (i+1)×size), so its
	// documents are known by id and each burst is timed on its own even
	// when a later one overtakes it.
	topic, err := e.newTopic(ctx, "s2", 1)
	if err != nil {
		return nil, err
	}
	r.topic = topic
	tid, err := topicID(ctx, e.broker, topic)
	if err != nil {
		return nil, err
	}
	mb, err := newProxy("middlebox", e.esHost, 0, idle)
	if err != nil {
		return nil, err
	}
	defer mb.Close()
	a, err := startAgent(ctx, e.bin, e.tmp, "s2", e.broker, topic, topic, topic, []string{mb.URL()})
	if err != nil {
		return nil, err
	}
	defer func() {
		if a.running() {
			a.stop()
		}
	}()
	w := loggen.Writer(e.broker, topic)
	defer w.Close()

	type produced struct {
		i  int
		at time.Time
	}
	acks := make(chan produced, bursts)
	prodErr := make(chan error, 1)
	start := time.Now()
	go func() {
		for i := range bursts {
			select {
			case <-ctx.Done():
				prodErr <- ctx.Err()
				return
			case <-time.After(time.Until(start.Add(time.Duration(i) * gap))):
			}
			if err := loggen.Produce(ctx, w, i*size, size); err != nil {
				prodErr <- err
				return
			}
			acks <- produced{i, time.Now()}
		}
		prodErr <- nil
	}()
	at := make([]time.Time, bursts)
	ids := make([][]string, bursts)
	r.bursts = make([]burst, bursts)
	done := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for done < bursts {
		select {
		case p := <-acks:
			at[p.i] = p.at
			r.bursts[p.i] = burst{i: p.i + 1, produced: p.at.Sub(start)}
			for off := p.i * size; off < (p.i+1)*size; off++ {
				rec := shipper.Record{Topic: topic, TopicID: tid, Partition: 0, Offset: int64(off)}
				ids[p.i] = append(ids[p.i], rec.DocumentID())
			}
		case err := <-prodErr:
			if err != nil {
				return nil, fmt.Errorf("produce: %w", err)
			}
			prodErr = nil
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		for i := range bursts {
			b := &r.bursts[i]
			if at[i].IsZero() || b.took.d != 0 || b.took.capped {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			n, err := e.es.countIDs(cctx, topic, ids[i])
			cancel()
			switch {
			case err == nil && n >= int64(size):
				b.took = value{d: time.Since(at[i])}
				done++
				e.progress("S2: burst %d of %d indexed %s after it was produced", i+1, bursts, b.took)
			case time.Since(at[i]) > bound:
				b.took = value{d: bound, capped: true}
				done++
				e.progress("S2: burst %d of %d not indexed within %s", i+1, bursts, bound)
			}
		}
	}
	r.blackholed = mb.blackholed.Load()
	r.agent = finish(a)
	return r, nil
}

// topicID is the id the broker gave topic, as the agent puts it in document
// ids (Metadata v10, which kafka-go cannot send).
func topicID(ctx context.Context, broker, topic string) (string, error) {
	c, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		return "", err
	}
	defer c.Close()
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 10
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := req.RequestWith(mctx, c)
	if err != nil {
		return "", fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(res.Topics) != 1 || res.Topics[0].ErrorCode != 0 {
		return "", fmt.Errorf("metadata of %s: %+v", topic, res.Topics)
	}
	return shipper.TopicIDOf(res.Topics[0].TopicID), nil
}

// ---- throughput with one node down vs both up ----

type tpRun struct {
	i        int
	outage   bool
	took     value         // agent start to the agent reporting every record indexed
	counted  int64         // the index's _count after the run
	first    time.Duration // agent start to the first records indexed
	rate     float64       // records/s over took
	steady   float64       // records/s from the first to the last record indexed
	agent    agentReport
	problems string
}

type tpResult struct {
	topic    string
	records  int
	prodTook time.Duration
	runs     []tpRun
}

func runThroughput(ctx context.Context, e *env, records, reps int) (*tpResult, error) {
	r := &tpResult{records: records}
	topic, err := e.newTopic(ctx, "tp", 4)
	if err != nil {
		return nil, err
	}
	r.topic = topic
	t0 := time.Now()
	if err := produceRange(ctx, e.broker, topic, records, 4); err != nil {
		return nil, err
	}
	r.prodTook = time.Since(t0)
	e.progress("throughput: %d records in Kafka (%s)", records, r.prodTook.Round(time.Millisecond))
	a, b, err := newProxyPair("tp", e.esHost, 0)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	defer b.Close()
	// healthy, outage, outage, healthy, …: drift in the machine's load
	// weighs on both alike.
	var order []bool
	for i := range reps {
		if i%2 == 0 {
			order = append(order, false, true)
		} else {
			order = append(order, true, false)
		}
	}
	for i, outage := range order {
		index := fmt.Sprintf("%s-run%d", topic, i+1)
		e.dropIndexAtEnd(index)
		if outage {
			a.Stop()
		}
		run := tpRun{i: i + 1, outage: outage}
		ag, err := startAgent(ctx, e.bin, e.tmp, "tp", e.broker, topic, index, index, []string{a.URL(), b.URL()})
		if err != nil {
			return nil, err
		}
		const bound = 5 * time.Minute
		var firstAt time.Time
		for {
			n, err := ag.indexed()
			now := time.Now()
			if err == nil && n > 0 && firstAt.IsZero() {
				firstAt = now
				run.first = now.Sub(ag.started)
			}
			if err == nil && n >= int64(records) {
				run.took = value{d: now.Sub(ag.started)}
				run.rate = float64(records) / run.took.d.Seconds()
				if d := now.Sub(firstAt); d > 0 {
					run.steady = float64(records) / d.Seconds()
				}
				break
			}
			if now.Sub(ag.started) > bound || !ag.running() || ctx.Err() != nil {
				run.took = value{d: now.Sub(ag.started), capped: true}
				run.problems = fmt.Sprintf("%d of %d indexed when it stopped (agent running: %v)", n, records, ag.running())
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		run.counted, _ = e.es.refreshedCount(cctx, index)
		cancel()
		run.agent = finish(ag)
		e.es.deleteIndex(index)
		if outage {
			if _, err := a.Start(); err != nil {
				return nil, err
			}
		}
		r.runs = append(r.runs, run)
		what := "both nodes up"
		if outage {
			what = "node A down"
		}
		e.progress("throughput run %d (%s): %d records in %s, %.0f records/s", i+1, what, records, run.took, run.rate)
		if run.problems != "" {
			return r, errors.New("throughput run " + fmt.Sprint(i+1) + ": " + run.problems)
		}
	}
	return r, nil
}

// produceRange writes loggen records 0..n-1 from several goroutines, in
// ranges of 10,000.
func produceRange(ctx context.Context, broker, topic string, n, producers int) error {
	w := loggen.Writer(broker, topic)
	defer w.Close()
	const rangeLen = 10_000
	var next atomic.Int64
	errs := make([]error, producers)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				from := int(next.Add(rangeLen) - rangeLen)
				if from >= n {
					return
				}
				if err := loggen.Produce(ctx, w, from, min(rangeLen, n-from)); err != nil {
					errs[p] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
