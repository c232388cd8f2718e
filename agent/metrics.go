package agent

import (
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/shipper-agent/shipper/buffer"
	"github.com/shipper-agent/shipper/inputs/kafka"
	es "github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// metrics are the agent's Prometheus metrics, on a registry of its own (no
// global state: two agents in one process do not collide). Document
// counters move once per document, when its outcome is final (its chunk
// acknowledged), never per attempt.
type metrics struct {
	reg          *prometheus.Registry
	indexed      prometheus.Counter
	duplicates   prometheus.Counter
	skipped      prometheus.Counter
	deadLettered prometheus.Counter
	deadByType   *prometheus.CounterVec
	retries      prometheus.Counter
	sendOK       prometheus.Counter
	sendFailed   prometheus.Counter
	replayed     *prometheus.CounterVec

	mu      sync.Mutex
	reasons map[string]bool // reason label values in use
}

// maxReasonLabels bounds the reason label's values: error types come from
// Elasticsearch, a set shipper does not control.
const maxReasonLabels = 50

// metricSources are where the gauges and the pool's counters are read.
type metricSources struct {
	consumed func() float64
	buffer   func() buffer.Stats
	held     func() *HoldStatus
	// nodes is nil where there is no output (tests of the delivery loop
	// with a fake sender).
	nodes func() ([]es.NodeStatus, es.PoolStats)
	// window is nil where nodes is.
	window func() es.WindowStats
	// input is nil where there is no Kafka input (tests of the delivery
	// loop).
	input func() kafka.Stats
	// health and ready are what /api/health and /api/health/ready answer;
	// nil where there is no agent (tests of the delivery loop).
	health, ready func() Health
}

func newMetrics(src metricSources) *metrics {
	consumed, stats, held := src.consumed, src.buffer, src.held
	reg := prometheus.NewRegistry()
	docs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shipper_output_documents_total",
		Help: "Documents by final outcome, once each: indexed, duplicate (found already indexed: a replay after a restart, or the loser of a hedged request), skipped (tombstones), dead_lettered.",
	}, []string{"outcome"})
	bulk := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shipper_output_send_attempts_total",
		Help: "Attempts to send a chunk's pending documents (one or more bulk requests), by result: ok (per-document outcomes came back) or error (a request failed as a whole).",
	}, []string{"result"})
	m := &metrics{
		reg:          reg,
		reasons:      map[string]bool{},
		indexed:      docs.WithLabelValues("indexed"),
		duplicates:   docs.WithLabelValues("duplicate"),
		skipped:      docs.WithLabelValues("skipped"),
		deadLettered: docs.WithLabelValues("dead_lettered"),
		deadByType: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shipper_deadletter_documents_total",
			Help: "Documents stored in the dead-letter store, by reason: Elasticsearch's error type or shipper's code (request_too_large, invalid_utf8, tombstone); \"other\" past 50 distinct reasons.",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shipper_output_document_retries_total",
			Help: "Documents scheduled to be sent again after an attempt that did not settle them.",
		}),
		sendOK:     bulk.WithLabelValues("ok"),
		sendFailed: bulk.WithLabelValues("error"),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shipper_deadletter_replayed_total",
			Help: "Dead letters re-sent by a replay, by result: delivered (removed from the store) or dead_lettered (kept, with the new reason).",
		}, []string{"result"}),
	}
	gauge := func(name, help string, f func(buffer.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(stats()) })
	}
	counter := func(name, help string, f func(buffer.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(stats()) })
	}
	reg.MustRegister(docs, bulk, m.retries, m.deadByType, m.replayed,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shipper_input_records_total", Help: "Records consumed from Kafka and appended to the buffer.",
		}, consumed),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shipper_output_held_documents",
			Help: "Documents held because Elasticsearch refuses them for a reason that is not theirs (401, 403, a write block, a missing index); /api/status says why. 0 when delivery is not held.",
		}, func() float64 {
			if h := held(); h != nil {
				return float64(h.Documents)
			}
			return 0
		}),
		gauge("shipper_buffer_memory_bytes", "Chunk bytes held in memory (open, being written, loaded for delivery).", func(s buffer.Stats) float64 { return float64(s.MemoryBytes) }),
		gauge("shipper_buffer_memory_limit_bytes", "Memory ceiling for chunk bytes.", func(s buffer.Stats) float64 { return float64(s.MemoryLimit) }),
		gauge("shipper_buffer_memory_chunks", "Chunks held in memory.", func(s buffer.Stats) float64 { return float64(s.MemoryChunks) }),
		gauge("shipper_buffer_disk_bytes", "Stored bytes of undelivered chunks.", func(s buffer.Stats) float64 { return float64(s.DiskBytes) }),
		gauge("shipper_buffer_disk_usage_bytes", "Bytes the buffer directory occupies, deleted chunks not yet reclaimed and the dead-letter store included.", func(s buffer.Stats) float64 { return float64(s.DiskUsage) }),
		gauge("shipper_buffer_disk_limit_bytes", "Disk ceiling of the buffer.", func(s buffer.Stats) float64 { return float64(s.DiskLimit) }),
		gauge("shipper_buffer_filesystem_free_bytes", "Free bytes on the buffer's filesystem.", func(s buffer.Stats) float64 { return float64(s.FilesystemFree) }),
		gauge("shipper_buffer_disk_chunks", "Chunks stored on disk awaiting delivery.", func(s buffer.Stats) float64 { return float64(s.DiskChunks) }),
		gauge("shipper_buffer_disk_records", "Records stored on disk awaiting delivery.", func(s buffer.Stats) float64 { return float64(s.DiskRecords) }),
		gauge("shipper_buffer_open_records", "Records in the open chunk.", func(s buffer.Stats) float64 { return float64(s.OpenRecords) }),
		gauge("shipper_buffer_sealed_records", "Records of the sealed chunk not yet written to disk.", func(s buffer.Stats) float64 { return float64(s.SealedRecords) }),
		gauge("shipper_buffer_in_flight_chunks", "Chunks being delivered.", func(s buffer.Stats) float64 { return float64(s.InFlightChunks) }),
		gauge("shipper_buffer_oldest_chunk_age_seconds", "Age of the oldest undelivered chunk; 0 when none.", func(s buffer.Stats) float64 { return s.OldestChunkSeconds }),
		gauge("shipper_buffer_blocked", "1 while appends wait for memory or disk (the Kafka input is paused); /api/status says why.", func(s buffer.Stats) float64 {
			if s.Blocked != "" {
				return 1
			}
			return 0
		}),
		counter("shipper_buffer_blocked_seconds_total", "Time appends spent waiting for memory or disk.", func(s buffer.Stats) float64 { return s.BlockedSeconds }),
		counter("shipper_buffer_gc_runs_total", "Value-log files rewritten or removed to reclaim deleted chunks.", func(s buffer.Stats) float64 { return float64(s.GCRuns) }),
		counter("shipper_buffer_gc_reclaimed_bytes_total", "Disk bytes given back by value-log GC.", func(s buffer.Stats) float64 { return float64(s.GCReclaimed) }),
		gauge("shipper_buffer_quarantined_chunks", "Corrupt chunks set aside.", func(s buffer.Stats) float64 { return float64(s.Quarantined) }),
		gauge("shipper_deadletter_records", "Records in the dead-letter store.", func(s buffer.Stats) float64 { return float64(s.DeadLetter.Entries) }),
		gauge("shipper_deadletter_bytes", "Bytes the dead-letter store holds.", func(s buffer.Stats) float64 { return float64(s.DeadLetter.Bytes) }),
		gauge("shipper_deadletter_max_bytes", "Size bound of the dead-letter store (dead_letter.max_bytes).", func(s buffer.Stats) float64 { return float64(s.DeadLetter.MaxBytes) }),
		counter("shipper_deadletter_dropped_total", "Dead letters deleted to make room (dead_letter.when_full = \"drop_oldest\").", func(s buffer.Stats) float64 { return float64(s.DeadLetter.Dropped) }),
		gauge("shipper_deadletter_blocked", "1 while new dead letters wait for room (dead_letter.when_full = \"block\").", func(s buffer.Stats) float64 {
			if s.DeadLetter.Blocked != "" {
				return 1
			}
			return 0
		}),
	)
	if src.nodes != nil {
		reg.MustRegister(poolCollector{src.nodes}, windowCollector{src.window})
	}
	if src.input != nil {
		reg.MustRegister(inputCollector{src.input})
	}
	if src.health != nil {
		reg.MustRegister(healthCollector{health: src.health, ready: src.ready})
	}
	return m
}

// healthCollector exports the health endpoints' answers, so that an alert
// can say which state the agent is in without probing it.
type healthCollector struct {
	health, ready func() Health
}

var (
	descHealth = prometheus.NewDesc("shipper_health_status",
		"1 for the state /api/health reports (ok, wedged, held, output_failing, input_failing), 0 for the others.", []string{"status"}, nil)
	descReady = prometheus.NewDesc("shipper_ready",
		"1 while /api/health/ready answers 200: the input joined its group, a node is alive and the health is ok.", nil, nil)
)

func (c healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHealth
	ch <- descReady
}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.health().Status
	for _, s := range healthStatuses {
		v := 0.0
		if s == now {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, v, s)
	}
	ready := 0.0
	if c.ready().Status == "ok" {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
}

// poolCollector exports the connection pool's state and counters.
type poolCollector struct {
	nodes func() ([]es.NodeStatus, es.PoolStats)
}

var (
	descNodeUp = prometheus.NewDesc("shipper_output_node_up",
		"1 while the Elasticsearch node is in rotation, 0 while it is dead and probed.", []string{"node"}, nil)
	descNodeInFlight = prometheus.NewDesc("shipper_output_node_in_flight_requests",
		"Requests on the node now.", []string{"node"}, nil)
	descDeaths = prometheus.NewDesc("shipper_output_node_deaths_total",
		"Nodes marked dead: refused, reset on a fresh connection, TLS failure, stall, a proxy's 502/503/504, or silent while another node answered.", nil, nil)
	descResurrections = prometheus.NewDesc("shipper_output_node_resurrections_total",
		"Dead nodes brought back by a probe.", nil, nil)
	descStalls = prometheus.NewDesc("shipper_output_stalls_total",
		"Stalled sends caught, by layer: upload (no bytes drained for stall_timeout), body (no bytes of the answer), response (no answer within request_timeout).", []string{"layer"}, nil)
	descHedges = prometheus.NewDesc("shipper_output_hedges_total",
		"Requests sent again while the first was unanswered past its hedge deadline, by result: won (the hedge answered first) or lost.", []string{"result"}, nil)
	descProbes = prometheus.NewDesc("shipper_output_probes_total",
		"Probes of dead nodes, by kind (connect: plain TCP; full: GET / on a fresh connection) and result.", []string{"kind", "result"}, nil)
	descReroutes = prometheus.NewDesc("shipper_output_reroutes_total",
		"Requests sent at once to another node (or a fresh connection) after failing on one.", nil, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodeUp, descNodeInFlight, descDeaths, descResurrections, descStalls, descHedges, descProbes, descReroutes} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	nodes, st := c.nodes()
	for _, n := range nodes {
		up := 0.0
		if n.State == "alive" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descNodeUp, prometheus.GaugeValue, up, n.URL)
		ch <- prometheus.MustNewConstMetric(descNodeInFlight, prometheus.GaugeValue, float64(n.InFlight), n.URL)
	}
	ch <- prometheus.MustNewConstMetric(descDeaths, prometheus.CounterValue, float64(st.Deaths))
	ch <- prometheus.MustNewConstMetric(descResurrections, prometheus.CounterValue, float64(st.Resurrections))
	for _, layer := range []string{"upload", "body", "response"} {
		ch <- prometheus.MustNewConstMetric(descStalls, prometheus.CounterValue, float64(st.Stalls[layer]), layer)
	}
	ch <- prometheus.MustNewConstMetric(descHedges, prometheus.CounterValue, float64(st.HedgeWins), "won")
	ch <- prometheus.MustNewConstMetric(descHedges, prometheus.CounterValue, float64(st.Hedges-st.HedgeWins), "lost")
	for _, kind := range []string{"connect", "full"} {
		for _, result := range []string{"ok", "failed"} {
			ch <- prometheus.MustNewConstMetric(descProbes, prometheus.CounterValue, float64(st.Probes[kind+"_"+result]), kind, result)
		}
	}
	ch <- prometheus.MustNewConstMetric(descReroutes, prometheus.CounterValue, float64(st.Reroutes))
}

// windowCollector exports the window of bulk requests in flight.
type windowCollector struct {
	window func() es.WindowStats
}

var (
	descInFlight = prometheus.NewDesc("shipper_output_in_flight_requests",
		"Bulk requests in flight now.", nil, nil)
	descInFlightLimit = prometheus.NewDesc("shipper_output_in_flight_limit",
		"Bulk requests allowed in flight now: adapts within [1, max_in_flight] (elasticsearch.adaptive_concurrency).", nil, nil)
	descInFlightMax = prometheus.NewDesc("shipper_output_in_flight_max",
		"elasticsearch.max_in_flight.", nil, nil)
	descLimitCuts = prometheus.NewDesc("shipper_output_in_flight_limit_cuts_total",
		"Decreases of the in-flight limit, by cause: 429 (the request or a document), 5xx (whole-request 5xx or 408), network (no answer), latency (answers 3× slower than the base).", []string{"cause"}, nil)
	descLimitGrowths = prometheus.NewDesc("shipper_output_in_flight_limit_growths_total",
		"Increases of the in-flight limit by one request.", nil, nil)
	descBaseLatency = prometheus.NewDesc("shipper_output_base_latency_seconds_per_mebibyte",
		"The cluster's base bulk latency per MiB of request body as the in-flight window sees it; absent until enough answers came.", nil, nil)
)

func (c windowCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInFlight, descInFlightLimit, descInFlightMax, descLimitCuts, descLimitGrowths, descBaseLatency} {
		ch <- d
	}
}

func (c windowCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.window()
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(descInFlightLimit, prometheus.GaugeValue, float64(int(st.Limit)))
	ch <- prometheus.MustNewConstMetric(descInFlightMax, prometheus.GaugeValue, float64(st.Max))
	for _, cause := range []string{"429", "5xx", "network", "latency"} {
		ch <- prometheus.MustNewConstMetric(descLimitCuts, prometheus.CounterValue, float64(st.Cuts[cause]), cause)
	}
	ch <- prometheus.MustNewConstMetric(descLimitGrowths, prometheus.CounterValue, float64(st.Growths))
	if st.BaseLatency > 0 {
		ch <- prometheus.MustNewConstMetric(descBaseLatency, prometheus.GaugeValue, st.BaseLatency)
	}
}

// inputCollector exports the Kafka input's counters and each assigned
// partition's progress.
type inputCollector struct {
	stats func() kafka.Stats
}

var (
	descInBytes = prometheus.NewDesc("shipper_input_bytes_total",
		"Bytes of record keys and values consumed from Kafka.", nil, nil)
	descInFiltered = prometheus.NewDesc("shipper_input_filtered_records_total",
		"Offsets passed over without a record: transaction markers, and records of aborted transactions under read_committed.", nil, nil)
	descInFetches = prometheus.NewDesc("shipper_input_fetches_total",
		"Fetch responses received from brokers.", nil, nil)
	descInFetchErrors = prometheus.NewDesc("shipper_input_fetch_errors_total",
		"Fetch requests that failed as a whole (the broker's partitions are retried with backoff).", nil, nil)
	descInPartitionErrors = prometheus.NewDesc("shipper_input_partition_errors_total",
		"Per-partition errors in fetch responses; that partition is retried with backoff, the others go on.", nil, nil)
	descInSinkWait = prometheus.NewDesc("shipper_input_sink_wait_seconds_total",
		"Time spent handing records to the buffer, nearly all of it waiting while the buffer is full: the input is paused then.", nil, nil)
	descInCommits = prometheus.NewDesc("shipper_input_commits_total",
		"Offset commits, by result.", []string{"result"}, nil)
	descInCommitSeconds = prometheus.NewDesc("shipper_input_commit_seconds_total",
		"Total latency of successful offset commits; divided by shipper_input_commits_total{result=\"ok\"} it is the mean commit latency.", nil, nil)
	descInResets = prometheus.NewDesc("shipper_input_offset_resets_total",
		"Partitions whose log ended below the consumer's position (recreated or truncated) and were read again from their start.", nil, nil)
	descInSkipped = prometheus.NewDesc("shipper_input_skipped_records_total",
		"Records removed from a partition before they were read (offset out of range), by partition; each gap is in the dead-letter store as type offset_gap.", []string{"topic", "partition"}, nil)
	descInLag = prometheus.NewDesc("shipper_input_lag_records",
		"Records of the partition not yet committed: its end as of the last fetch less the committed offset.", []string{"topic", "partition"}, nil)
	descInPartitionFailing = prometheus.NewDesc("shipper_input_partition_failing",
		"1 while the partition's fetches fail (retried with backoff); /api/status says why.", []string{"topic", "partition"}, nil)
	descInGeneration = prometheus.NewDesc("shipper_input_generation",
		"The consumer-group generation this member is in; 0 when in none. A change is a rebalance.", nil, nil)
)

func (c inputCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInBytes, descInFiltered, descInFetches, descInFetchErrors, descInPartitionErrors,
		descInSinkWait, descInCommits, descInCommitSeconds, descInResets, descInSkipped, descInLag, descInPartitionFailing, descInGeneration} {
		ch <- d
	}
}

func (c inputCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descInBytes, float64(st.Bytes))
	counter(descInFiltered, float64(st.Filtered))
	counter(descInFetches, float64(st.Fetches))
	counter(descInFetchErrors, float64(st.FetchErrors))
	counter(descInPartitionErrors, float64(st.PartitionErrors))
	counter(descInSinkWait, st.SinkWaitSeconds)
	counter(descInCommits, float64(st.Commits), "ok")
	counter(descInCommits, float64(st.CommitErrors), "failed")
	counter(descInCommitSeconds, st.CommitSeconds)
	counter(descInResets, float64(st.Resets))
	gauge(descInGeneration, float64(st.Generation))
	for tp, n := range st.Skipped {
		topic, part, _ := strings.Cut(tp, "/")
		counter(descInSkipped, float64(n), topic, part)
	}
	for _, p := range st.Partitions {
		part := strconv.Itoa(int(p.Partition))
		gauge(descInLag, float64(p.Lag), p.Topic, part)
		failing := 0.0
		if p.Error != "" {
			failing = 1
		}
		gauge(descInPartitionFailing, failing, p.Topic, part)
	}
}

func (m *metrics) sendAttempt(err error) {
	if err != nil {
		m.sendFailed.Inc()
	} else {
		m.sendOK.Inc()
	}
}

// final counts the documents of an acknowledged chunk by final outcome.
func (m *metrics) final(items []item) {
	var indexed, dup, skipped int
	for i := range items {
		switch it := &items[i]; it.final {
		case es.Delivered:
			if it.duplicate {
				dup++
			} else {
				indexed++
			}
		case es.Skipped:
			skipped++
		case es.DeadLetter:
			m.deadLettered.Inc()
			m.deadByType.WithLabelValues(m.reasonLabel(it.typ)).Inc()
		}
	}
	m.indexed.Add(float64(indexed))
	m.duplicates.Add(float64(dup))
	m.skipped.Add(float64(skipped))
}

// reasonLabel bounds the label values of the per-reason counter.
func (m *metrics) reasonLabel(typ string) string {
	if typ == "" {
		typ = "unknown"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.reasons[typ] {
		if len(m.reasons) >= maxReasonLabels {
			return "other"
		}
		m.reasons[typ] = true
	}
	return typ
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
