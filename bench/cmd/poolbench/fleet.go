package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// A fleet of agents that lost the same node: n Outputs (pools) in this
// process, each with the one node, a local listener this program controls.
// The node is down (its port closed) until every pool has marked it dead;
// then it comes back at one instant, answering GET / with 200 and
// Elasticsearch's product header. Counted at the node: new connections
// (connect probes and full probes) and GET / requests per 100 ms; per
// pool: when it has the node alive again.

type fleetResult struct {
	pools            int
	goroutinesBefore int
	goroutinesDead   int // with every pool's node dead and probed
	markDead         time.Duration
	bucket           time.Duration
	conns, gets      []int // per bucket from the node's return
	alive            []time.Duration
	notAlive         int
	window           time.Duration
	problem          string
}

func runFleet(ctx context.Context, pools int, window time.Duration, progress func(string, ...any)) (*fleetResult, error) {
	r := &fleetResult{pools: pools, bucket: 100 * time.Millisecond, window: window, goroutinesBefore: runtime.NumGoroutine()}
	ln, err := listenLowPort(&net.ListenConfig{})
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close() // the node is down

	outs := make([]*elasticsearch.Output, pools)
	defer func() {
		var wg sync.WaitGroup
		for _, o := range outs {
			if o != nil {
				wg.Add(1)
				go func() { defer wg.Done(); o.Close() }()
			}
		}
		wg.Wait()
	}()
	for i := range outs {
		cfg := elasticsearch.DefaultConfig()
		cfg.URLs, cfg.Index = []string{"http://" + addr}, "poolbench-fleet"
		o, err := elasticsearch.New(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, err
		}
		outs[i] = o
	}
	// Each pool sends once and finds the node refusing: dead, probed.
	t0 := time.Now()
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for i, o := range outs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			rec := &shipper.Record{Topic: "poolbench-fleet", Offset: int64(i), Time: time.Now(), Value: []byte(`{"msg":"fleet"}`)}
			o.Send(sctx, []*shipper.Record{rec}) // fails: refused
		}()
	}
	wg.Wait()
	allDead := func() bool {
		for _, o := range outs {
			if n, _ := o.Nodes(); n[0].State != "dead" {
				return false
			}
		}
		return true
	}
	if !waitUntil(ctx, 10*time.Second, 20*time.Millisecond, allDead) {
		return nil, fmt.Errorf("fleet: not every pool marked the node dead within 10s")
	}
	r.markDead = time.Since(t0)
	time.Sleep(2 * time.Second) // probes in their steady rhythm
	r.goroutinesDead = runtime.NumGoroutine()
	progress("fleet: %d pools have the node dead (%s); %d goroutines in this process; the node comes back now",
		pools, r.markDead.Round(time.Millisecond), r.goroutinesDead)

	nb := int(window / r.bucket)
	r.conns, r.gets = make([]int, nb+1), make([]int, nb+1)
	var mu sync.Mutex
	var back time.Time
	at := func() int {
		return min(int(time.Since(back)/r.bucket), nb)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			mu.Lock()
			r.gets[at()]++
			mu.Unlock()
			io.Copy(io.Discard, req.Body)
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"name":"poolbench-fleet","version":{"number":"8.19.0"},"tagline":"You Know, for Search"}`)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				mu.Lock()
				r.conns[at()]++
				mu.Unlock()
			}
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	var nl net.Listener
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		nl, err = net.Listen("tcp", addr)
		back = time.Now()
		mu.Unlock()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("fleet: listen again on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		srv.Serve(nl)
	}()
	aliveAt := make([]time.Duration, pools)
	left := pools
	for time.Since(back) < window && ctx.Err() == nil {
		for i, o := range outs {
			if aliveAt[i] != 0 {
				continue
			}
			if n, _ := o.Nodes(); n[0].State == "alive" {
				aliveAt[i] = time.Since(back)
				left--
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Close()
	<-serveDone
	for _, d := range aliveAt {
		if d == 0 {
			r.notAlive++
			continue
		}
		r.alive = append(r.alive, d)
	}
	progress("fleet: %d of %d pools have the node alive within %s", pools-left, pools, window)
	return r, nil
}

// peak is the largest count in one bucket, per second.
func peakPerSecond(b []int, bucket time.Duration) float64 {
	m := 0
	for _, v := range b {
		m = max(m, v)
	}
	return float64(m) / bucket.Seconds()
}
