package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
	"github.com/shipper-agent/shipper/inputs/kafka"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// Agent wires the Kafka input, the buffer and the Elasticsearch output:
//
//	kafka.Input ──Append──▶ buffer.Buffer ──Next/Ack──▶ deliverer ──Send──▶ elasticsearch.Output
//	      ▲                       │
//	      └──── Watermarks ───────┘  (offsets committed only once delivered)
type Agent struct {
	cfg Config
	log *slog.Logger
	buf *buffer.Buffer
	// outp is the Elasticsearch output; a reload of the elasticsearch
	// block replaces it (output, Reload).
	outp    atomic.Pointer[elasticsearch.Output]
	in      *kafka.Input
	deliver *deliverer
	metrics *metrics
	ln      net.Listener
	started time.Time

	replaying sync.Mutex // held while a dead-letter replay runs
	watchdog  *pipelineWatchdog
	flushes   flushLog
	recent    *recentLog // the last warnings and errors
	workers   *workerGroup

	reloadMu sync.Mutex     // serialises reloads with the start and the stop of the workers
	stopping bool           // set when shutdown begins: reloads change nothing
	stopped  chan struct{}  // closed when shutdown begins
	retiring sync.WaitGroup // outputs replaced by a reload, until closed
}

// output returns the Elasticsearch output in use.
func (a *Agent) output() *elasticsearch.Output { return a.outp.Load() }

// currentOutput sends through the output in use at each call, so that the
// delivery workers of a new generation use a reloaded output.
type currentOutput struct{ a *Agent }

func (c currentOutput) Send(ctx context.Context, recs []*shipper.Record) ([]elasticsearch.ItemResult, error) {
	return c.a.output().Send(ctx, recs)
}

// New opens the buffer and binds the API listener, so that a broken
// directory or a busy port fails at start, before anything is consumed.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	recent := &recentLog{}
	log = slog.New(&recentHandler{next: log.Handler(), log: recent})
	buf, err := buffer.Open(cfg.Buffer, log.With("component", "buffer"))
	if err != nil {
		return nil, err
	}
	out, err := elasticsearch.New(cfg.Elasticsearch, log.With("component", "elasticsearch"))
	if err != nil {
		buf.Close()
		return nil, err
	}
	in, err := kafka.New(cfg.Kafka, buf, buf, log.With("component", "kafka"))
	if err != nil {
		buf.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.API.Address)
	if err != nil {
		buf.Close()
		return nil, fmt.Errorf("api listener: %w", err)
	}
	a := &Agent{cfg: cfg, log: log, buf: buf, in: in, ln: ln, started: time.Now(), recent: recent,
		workers: &workerGroup{n: cfg.Elasticsearch.MaxInFlight}, stopped: make(chan struct{})}
	a.outp.Store(out)
	a.metrics = newMetrics(metricSources{consumed: func() float64 { return float64(in.Consumed()) }, buffer: buf.Stats, input: in.Stats,
		held: func() *HoldStatus { return a.deliver.held() }, nodes: func() ([]elasticsearch.NodeStatus, elasticsearch.PoolStats) { return a.output().Nodes() },
		window: func() elasticsearch.WindowStats { return a.output().Window() },
		health: a.health, ready: a.readiness})
	a.deliver = newDeliverer(buf, currentOutput{a}, cfg.Elasticsearch, log.With("component", "deliver"), a.metrics)
	a.watchdog = &pipelineWatchdog{timeout: cfg.Elasticsearch.PipelineStallTimeout, lastProgress: a.deliver.lastProgress,
		waiting: a.deliveryWaiting, log: log.With("component", "watchdog")}
	return a, nil
}

// APIAddr is the address the API listens on.
func (a *Agent) APIAddr() string { return a.ln.Addr().String() }

// Run runs the agent until ctx ends, then shuts down in this order, within
// ShutdownTimeout: stop consuming; seal the open chunk; keep delivering
// until the buffer is empty or the deadline nears; stop deliveries (chunks
// in flight return to the buffer); commit delivered offsets and leave the
// consumer group; stop the API; close the buffer. Undelivered data stays on
// disk, and its offsets uncommitted, so nothing depends on finishing in time.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("shipper starting", "api", a.APIAddr(), "buffer", a.cfg.Buffer.Dir,
		"brokers", a.cfg.Kafka.BrokerList(), "topics", a.cfg.Kafka.Topics,
		"elasticsearch", a.cfg.Elasticsearch.Addresses(), "index", a.cfg.Elasticsearch.Index)
	// No WriteTimeout: a flush or replay may wait minutes, as the caller
	// asked; those handlers bound themselves.
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("api server", "err", err)
		}
	}()

	// Consuming starts at once: the buffer takes what Kafka has while the
	// start-up check waits for Elasticsearch.
	inputCtx, stopInput := context.WithCancel(context.Background())
	inputDone := make(chan error, 1)
	go func() { inputDone <- a.in.Run(inputCtx) }()

	var runErr error
	workers := a.workers
	workers.d = a.deliver
	if err := a.checkElasticsearch(ctx); err != nil {
		runErr = err
	} else {
		a.reloadMu.Lock()
		workers.start()
		a.reloadMu.Unlock()
	}
	a.watchdog.restart = func() { workers.restart() }
	watchCtx, stopWatch := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.watchdog.run(watchCtx)
	}()

	if runErr == nil {
		select {
		case <-ctx.Done():
		case runErr = <-inputDone:
			inputDone <- runErr
			a.log.Error("kafka input stopped", "err", runErr)
		}
	}

	a.reloadMu.Lock()
	a.stopping = true // no reload replaces the output from here on
	close(a.stopped)
	a.reloadMu.Unlock()
	deadline := time.Now().Add(a.cfg.ShutdownTimeout)
	a.log.Info("shutting down", "timeout", a.cfg.ShutdownTimeout.String())
	a.in.StopFetching()
	// Keep a quarter of the time (at most 5s) to commit and close.
	reserve := min(a.cfg.ShutdownTimeout/4, 5*time.Second)
	drainCtx, cancelDrain := context.WithDeadline(context.Background(), deadline.Add(-reserve))
	if errors.Is(runErr, elasticsearch.ErrIncompatible) {
		cancelDrain() // nothing delivers: what is buffered stays on disk
	}
	seq, err := a.buf.Flush(drainCtx)
	if err == nil {
		err = a.buf.WaitDelivered(drainCtx, seq)
	}
	if err != nil {
		st := a.buf.Stats()
		a.log.Warn("shutdown deadline: undelivered chunks stay on disk for the next start",
			"chunks", st.DiskChunks, "records", st.DiskRecords)
	}
	cancelDrain()
	stopWatch()
	if !workers.stop(deadline.Add(-reserve / 2)) {
		a.log.Error("delivery workers did not stop in time; their chunks stay on disk for the next start")
	}
	stopInput()
	commitCtx, cancelCommit := context.WithDeadline(context.Background(), deadline)
	select {
	case <-inputDone:
	case <-commitCtx.Done():
		a.log.Warn("kafka input did not stop in time")
	}
	cancelCommit()
	shutCtx, cancelShut := context.WithTimeout(context.Background(), time.Second)
	_ = srv.Shutdown(shutCtx)
	cancelShut()
	wg.Wait()
	a.retiring.Wait()
	a.output().Close()
	if err := a.buf.Close(); err != nil {
		return fmt.Errorf("close buffer: %w", err)
	}
	a.log.Info("shipper stopped")
	return runErr
}

// checkElasticsearch runs the output's start-up check, bounded by
// startup_timeout. It returns an error only when the cluster rules
// delivery out; a cluster that did not answer in time is logged, and
// delivery starts anyway: the pool probes the nodes and sends wait.
func (a *Agent) checkElasticsearch(ctx context.Context) error {
	checkCtx, cancel := context.WithTimeout(ctx, a.cfg.Elasticsearch.StartupTimeout)
	defer cancel()
	info, err := a.output().Check(checkCtx)
	switch {
	case errors.Is(err, elasticsearch.ErrIncompatible):
		a.log.Error("elasticsearch start-up check failed; not delivering, stopping", "err", err)
		return fmt.Errorf("elasticsearch start-up check: %w", err)
	case errors.Is(err, elasticsearch.ErrCredentials):
		a.log.Error("elasticsearch refused the start-up check (401: delivery holds until the credentials are accepted; "+
			"403: a privilege the check needs is missing, and the template, if any, was not installed)", "err", err)
	case errors.Is(err, elasticsearch.ErrTLS):
		a.log.Error("elasticsearch TLS failed at start; sends wait until a node's certificate verifies "+
			"(tls.ca_file and server_name are read at start: after fixing them, restart)", "err", err)
	case err != nil && ctx.Err() == nil:
		a.log.Error("elasticsearch did not answer the start-up check in time; delivering as nodes answer",
			"startup_timeout", a.cfg.Elasticsearch.StartupTimeout.String(), "err", err)
	case err == nil:
		a.log.Info("elasticsearch cluster", "name", info.Name, "version", info.Version)
	}
	return nil
}

// deliveryWaiting reports chunks waiting for delivery while a node looks
// alive: what the pipeline watchdog expects to move.
func (a *Agent) deliveryWaiting() bool {
	if a.buf.Stats().DiskChunks == 0 {
		return false
	}
	nodes, _ := a.output().Nodes()
	for _, n := range nodes {
		if n.State == "alive" {
			return true
		}
	}
	return false
}

// Status is the agent's state, served at /api/status.
type Status struct {
	Version  string                   `json:"version"`
	Uptime   string                   `json:"uptime"`
	Consumed int64                    `json:"consumed_records"`
	Assigned []shipper.TopicPartition `json:"assigned_partitions"`
	// Input is the Kafka input's generation, counters and, per assigned
	// partition, position, committed and delivered offsets, end and lag.
	Input  kafka.Stats  `json:"input"`
	Buffer buffer.Stats `json:"buffer"`
	Output OutputStatus `json:"output"`
	// RecentErrors are the last warnings and errors logged, newest first
	// (a message repeated in a row is one entry with its count).
	RecentErrors []LogEntry `json:"recent_errors"`
}

// OutputStatus counts documents by final outcome since start, once each,
// and says whether delivery is held.
type OutputStatus struct {
	Indexed      int64 `json:"indexed"`
	Duplicates   int64 `json:"duplicates"`
	Skipped      int64 `json:"skipped"`
	DeadLettered int64 `json:"dead_lettered"`
	// Retries counts documents scheduled to be sent again (per attempt).
	Retries int64 `json:"retries"`
	// Held says why delivery is held (401, 403, a write block, a missing
	// index): nil when it is not.
	Held *HoldStatus `json:"held,omitempty"`
	// BulkLimit is the largest bulk request body sent, in bytes:
	// max_bulk_bytes, or less once Elasticsearch answered 413.
	BulkLimit int64 `json:"bulk_limit_bytes"`
	// Window is the window of bulk requests in flight: its limit now,
	// what cut and grew it.
	Window elasticsearch.WindowStats `json:"window"`
	// Nodes is each Elasticsearch node's state in the connection pool.
	Nodes []elasticsearch.NodeStatus `json:"nodes"`
}

// Version is set at build time with -ldflags "-X ...agent.Version=...".
var Version = "dev"

// Status returns the agent's current state.
func (a *Agent) Status() Status {
	nodes, _ := a.output().Nodes()
	return Status{
		Version:  Version,
		Uptime:   time.Since(a.started).Round(time.Second).String(),
		Consumed: a.in.Consumed(),
		Assigned: a.in.Assigned(),
		Input:    a.in.Stats(),
		Buffer:   a.buf.Stats(),
		Output: OutputStatus{
			Indexed:      int64(counterValue(a.metrics.indexed)),
			Duplicates:   int64(counterValue(a.metrics.duplicates)),
			Skipped:      int64(counterValue(a.metrics.skipped)),
			DeadLettered: int64(counterValue(a.metrics.deadLettered)),
			Retries:      int64(counterValue(a.metrics.retries)),
			Held:         a.deliver.held(),
			BulkLimit:    a.output().BulkLimit(),
			Window:       a.output().Window(),
			Nodes:        nodes,
		},
		RecentErrors: a.recent.list(),
	}
}
