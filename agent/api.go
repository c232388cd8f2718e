package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// handler serves the operator API:
//
//	GET  /api/health   200 while the agent runs
//	GET  /api/status   JSON: input, buffer and output state
//	POST /api/flush    seal the open chunk and deliver everything buffered
//	                   now; ?wait=DURATION blocks until done or the wait ends
//	GET  /api/metrics  Prometheus metrics
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /api/flush", a.handleFlush)
	mux.Handle("GET /api/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	return mux
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

// Flush seals the open chunk, cuts delivery backoffs short, and waits up to
// wait for everything buffered now to be delivered.
func (a *Agent) Flush(ctx context.Context, wait time.Duration) FlushResult {
	before := a.buf.Stats()
	seq := a.buf.Flush(ctx)
	after := a.buf.Stats()
	a.deliver.retryNow()
	res := FlushResult{Sealed: before.OpenRecords, PendingChunks: after.DiskChunks, PendingRecords: after.DiskRecords}
	if wait > 0 {
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := a.buf.WaitDelivered(ctx, seq); err == nil {
			res.Done = true
		} else {
			res.Error = "not delivered within wait: " + err.Error()
		}
	} else {
		res.Done = after.DiskChunks == 0 && after.OpenRecords == 0
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
