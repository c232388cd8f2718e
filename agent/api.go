package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// handler serves the operator API:
//
//	GET  /api/health       200 while the agent delivers; 503 while delivery is held or wedged,
//	                       no Elasticsearch node's certificate verifies, or the Kafka input
//	                       cannot join its group
//	GET  /api/status       JSON: input, buffer and output state
//	POST /api/flush        seal the open chunk and deliver everything buffered
//	                       now; ?wait=DURATION blocks until done or the wait ends
//	GET  /api/metrics      Prometheus metrics
//	GET  /api/dlq          dead letters, a page at a time (?after=ID&limit=N&topic=&reason=&value_bytes=N)
//	POST /api/dlq/replay   re-send dead letters (?topic=&reason=&dry_run=true)
//	POST /api/dlq/purge    delete dead letters (?topic=&reason=, or ?all=true)
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", a.handleHealth)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /api/flush", a.handleFlush)
	mux.Handle("GET /api/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/dlq", a.handleDLQList)
	mux.HandleFunc("POST /api/dlq/replay", a.handleDLQReplay)
	mux.HandleFunc("POST /api/dlq/purge", a.handleDLQPurge)
	return mux
}

// Health answers GET /api/health.
type Health struct {
	// Status is "ok"; "held" while Elasticsearch refuses documents for a
	// reason that is not theirs (Held says why); "wedged" when the
	// delivery pipeline stopped and restarting its workers did not help
	// (Reason says so): the process needs a restart; "input_failing"
	// while the Kafka input cannot join its consumer group, e.g. the
	// brokers refuse its login or their certificate does not verify
	// (Reason is the last error; the input keeps retrying);
	// "output_failing" while no Elasticsearch node can be reached because
	// no node's certificate verifies (Reason says which setting to check;
	// the nodes are still probed).
	Status string      `json:"status"`
	Held   *HoldStatus `json:"held,omitempty"`
	Reason string      `json:"reason,omitempty"`
}

func (a *Agent) handleHealth(w http.ResponseWriter, r *http.Request) {
	if reason := a.watchdog.reason(); reason != "" {
		writeJSON(w, http.StatusServiceUnavailable, Health{Status: "wedged", Reason: reason})
		return
	}
	if h := a.deliver.held(); h != nil {
		writeJSON(w, http.StatusServiceUnavailable, Health{Status: "held", Held: h})
		return
	}
	if err := a.out.Problem(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, Health{Status: "output_failing", Reason: err.Error()})
		return
	}
	if err := a.in.Problem(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, Health{Status: "input_failing", Reason: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, Health{Status: "ok"})
}

// dlqQuery reads a dead-letter filter (and paging) from the query string.
func dlqQuery(r *http.Request) (buffer.DeadLetterQuery, error) {
	v := r.URL.Query()
	q := buffer.DeadLetterQuery{After: v.Get("after"), Topic: v.Get("topic"), Reason: v.Get("reason"), MaxValueBytes: 4096}
	for name, dst := range map[string]*int{"limit": &q.Limit, "value_bytes": &q.MaxValueBytes} {
		if s := v.Get(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return q, fmt.Errorf("%s: want a number, got %q", name, s)
			}
			*dst = n
		}
	}
	return q, nil
}

// DeadLetterEntry is a dead letter as the API shows it: the value as text
// when it is valid UTF-8, else base64.
type DeadLetterEntry struct {
	buffer.DeadLetter
	Topic         string           `json:"topic"`
	Partition     int32            `json:"partition"`
	Offset        int64            `json:"offset"`
	Timestamp     time.Time        `json:"timestamp"`
	Key           string           `json:"key,omitempty"`
	Headers       []shipper.Header `json:"headers,omitempty"`
	Value         string           `json:"value"`
	ValueEncoding string           `json:"value_encoding"`
}

// DeadLetterList answers GET /api/dlq.
type DeadLetterList struct {
	Entries []DeadLetterEntry      `json:"entries"`
	Next    string                 `json:"next,omitempty"`
	Store   buffer.DeadLetterStats `json:"store"`
}

func apiEntry(d buffer.DeadLetter) DeadLetterEntry {
	r := d.Record
	e := DeadLetterEntry{DeadLetter: d, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Time,
		Key: string(r.Key), Headers: r.Headers, Value: string(r.Value), ValueEncoding: "utf-8"}
	if !utf8.Valid(r.Value) {
		e.Value, e.ValueEncoding = base64.StdEncoding.EncodeToString(r.Value), "base64"
	}
	return e
}

func (a *Agent) handleDLQList(w http.ResponseWriter, r *http.Request) {
	q, err := dlqQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	page, err := a.buf.DeadLetters().List(q)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	out := DeadLetterList{Entries: make([]DeadLetterEntry, len(page.Entries)), Next: page.Next, Store: a.buf.DeadLetters().Stats()}
	for i, d := range page.Entries {
		out.Entries[i] = apiEntry(d)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleDLQReplay(w http.ResponseWriter, r *http.Request) {
	q, err := dlqQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	dry := r.URL.Query().Get("dry_run") == "true"
	res, err := a.Replay(r.Context(), q, dry)
	switch {
	case errors.Is(err, errReplayRunning):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case err != nil:
		res.Error = err.Error()
		writeJSON(w, http.StatusInternalServerError, res)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// PurgeResult answers POST /api/dlq/purge.
type PurgeResult struct {
	Purged int    `json:"purged"`
	Error  string `json:"error,omitempty"`
}

func (a *Agent) handleDLQPurge(w http.ResponseWriter, r *http.Request) {
	q, err := dlqQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if q.Topic == "" && q.Reason == "" && r.URL.Query().Get("all") != "true" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "say what to purge: topic=, reason=, or all=true"})
		return
	}
	n, err := a.buf.DeadLetters().Purge(r.Context(), q)
	res := PurgeResult{Purged: n}
	if err != nil {
		res.Error = err.Error()
		writeJSON(w, http.StatusInternalServerError, res)
		return
	}
	a.log.Info("dead letters purged", "purged", n, "topic", q.Topic, "reason", q.Reason)
	writeJSON(w, http.StatusOK, res)
}

// FlushResult answers POST /api/flush.
type FlushResult struct {
	// Sealed is the number of records of the open chunk that the flush sealed.
	Sealed int `json:"sealed_records"`
	// Pending is what was buffered at the flush, to be delivered.
	PendingChunks  int   `json:"pending_chunks"`
	PendingRecords int64 `json:"pending_records"`
	// Done reports that everything buffered at the flush was delivered
	// within the wait.
	Done bool `json:"done"`
	// Remaining is what the buffer still holds when the answer is sent.
	RemainingChunks  int    `json:"remaining_chunks"`
	RemainingRecords int64  `json:"remaining_records"`
	Error            string `json:"error,omitempty"`
}

func (a *Agent) handleFlush(w http.ResponseWriter, r *http.Request) {
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "wait: want a duration such as 30s"})
			return
		}
		wait = d
	}
	res := a.Flush(r.Context(), wait)
	status := http.StatusOK
	if !res.Done {
		status = http.StatusAccepted
	}
	writeJSON(w, status, res)
}

// flushWriteWait bounds how long a flush without a wait waits for the
// open chunk to reach the disk.
const flushWriteWait = 5 * time.Second

// Flush seals the open chunk, cuts delivery backoffs short, and waits up to
// wait for everything buffered now to be delivered. However the disk and
// Elasticsearch behave, it returns within wait (flushWriteWait without
// one), or when ctx ends.
func (a *Agent) Flush(ctx context.Context, wait time.Duration) FlushResult {
	bound := wait
	if bound <= 0 {
		bound = flushWriteWait
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	before := a.buf.Stats()
	seq, err := a.buf.Flush(ctx)
	after := a.buf.Stats()
	a.deliver.retryNow()
	res := FlushResult{Sealed: before.OpenRecords - after.OpenRecords, PendingChunks: after.DiskChunks, PendingRecords: after.DiskRecords}
	switch {
	case err != nil:
		res.Error = "the open chunk was not written: " + err.Error()
		if after.Blocked != "" {
			res.Error += " (" + after.Blocked + ")"
		}
	case wait > 0:
		if err := a.buf.WaitDelivered(ctx, seq); err == nil {
			res.Done = true
		} else {
			res.Error = "not delivered within wait: " + err.Error()
			if h := a.deliver.held(); h != nil {
				res.Error += "; delivery is held: " + h.Reason
			}
		}
	default:
		res.Done = after.DiskChunks == 0 && after.OpenRecords == 0 && after.SealedRecords == 0
	}
	now := a.buf.Stats()
	res.RemainingChunks, res.RemainingRecords = now.DiskChunks, now.DiskRecords
	return res
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
