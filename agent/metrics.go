package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/shipper-agent/shipper/buffer"
)

// metrics are the agent's Prometheus metrics, on a registry of its own (no
// global state: two agents in one process do not collide).
type metrics struct {
	reg          *prometheus.Registry
	indexed      prometheus.Counter
	duplicates   prometheus.Counter
	deadLettered prometheus.Counter
	retries      prometheus.Counter
	sendOK       prometheus.Counter
	sendFailed   prometheus.Counter
}

func newMetrics(consumed func() float64, stats func() buffer.Stats) *metrics {
	reg := prometheus.NewRegistry()
	docs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shipper_output_documents_total",
		Help: "Documents by outcome: indexed, duplicate (already indexed: a replay), dead_lettered.",
	}, []string{"outcome"})
	bulk := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shipper_output_send_attempts_total",
		Help: "Attempts to send a chunk's pending documents (one or more bulk requests), by result: ok (per-document outcomes came back) or error (the attempt failed as a whole).",
	}, []string{"result"})
	m := &metrics{
		reg:          reg,
		indexed:      docs.WithLabelValues("indexed"),
		duplicates:   docs.WithLabelValues("duplicate"),
		deadLettered: docs.WithLabelValues("dead_lettered"),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shipper_output_document_retries_total",
			Help: "Documents scheduled to be sent again after a failed attempt.",
		}),
		sendOK:     bulk.WithLabelValues("ok"),
		sendFailed: bulk.WithLabelValues("error"),
	}
	gauge := func(name, help string, f func(buffer.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(stats()) })
	}
	counter := func(name, help string, f func(buffer.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(stats()) })
	}
	reg.MustRegister(docs, bulk, m.retries,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shipper_input_records_total", Help: "Records consumed from Kafka and appended to the buffer.",
		}, consumed),
		gauge("shipper_buffer_memory_bytes", "Chunk bytes held in memory (open, being written, loaded for delivery).", func(s buffer.Stats) float64 { return float64(s.MemoryBytes) }),
		gauge("shipper_buffer_memory_limit_bytes", "Memory ceiling for chunk bytes.", func(s buffer.Stats) float64 { return float64(s.MemoryLimit) }),
		gauge("shipper_buffer_memory_chunks", "Chunks held in memory.", func(s buffer.Stats) float64 { return float64(s.MemoryChunks) }),
		gauge("shipper_buffer_disk_bytes", "Stored bytes of undelivered chunks.", func(s buffer.Stats) float64 { return float64(s.DiskBytes) }),
		gauge("shipper_buffer_disk_usage_bytes", "Bytes the buffer directory occupies, deleted chunks not yet reclaimed included.", func(s buffer.Stats) float64 { return float64(s.DiskUsage) }),
		gauge("shipper_buffer_disk_limit_bytes", "Disk ceiling of the buffer.", func(s buffer.Stats) float64 { return float64(s.DiskLimit) }),
		gauge("shipper_buffer_filesystem_free_bytes", "Free bytes on the buffer's filesystem.", func(s buffer.Stats) float64 { return float64(s.FilesystemFree) }),
		gauge("shipper_buffer_disk_chunks", "Chunks stored on disk awaiting delivery.", func(s buffer.Stats) float64 { return float64(s.DiskChunks) }),
		gauge("shipper_buffer_disk_records", "Records stored on disk awaiting delivery.", func(s buffer.Stats) float64 { return float64(s.DiskRecords) }),
		gauge("shipper_buffer_open_records", "Records in the open chunk.", func(s buffer.Stats) float64 { return float64(s.OpenRecords) }),
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
		gauge("shipper_deadletter_records", "Records in the dead-letter store.", func(s buffer.Stats) float64 { return float64(s.DeadLetters) }),
	)
	return m
}

func (m *metrics) sendAttempt(err error) {
	if err != nil {
		m.sendFailed.Inc()
	} else {
		m.sendOK.Inc()
	}
}

func (m *metrics) documents(status int) {
	if status == 409 {
		m.duplicates.Inc()
	} else {
		m.indexed.Inc()
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
