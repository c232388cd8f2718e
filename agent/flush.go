package agent

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// A flush seals the open chunk and asks for everything buffered at that
// moment to be delivered. Its answer says what it covers; the flush is done
// once every chunk up to the one it sealed is acknowledged (indexed or
// dead-lettered), which GET /api/flush/{id} reports. A flush is cheap to
// remember (a sequence number and a few counts), so the agent keeps the last
// maxFlushes, and no goroutine waits on any of them.

// maxFlushes bounds the flushes GET /api/flush/{id} can report.
const maxFlushes = 64

// flushWriteWait bounds how long a flush waits for the open chunk to reach
// the disk.
const flushWriteWait = 5 * time.Second

// FlushResult is the answer to POST /api/flush and GET /api/flush/{id}.
type FlushResult struct {
	// ID names the flush for GET /api/flush/{id}.
	ID      string    `json:"id"`
	Started time.Time `json:"started"`
	// Sealed is the number of records of the open chunk that the flush
	// sealed.
	Sealed int `json:"sealed_records"`
	// Pending is what was buffered at the flush, to be delivered.
	PendingChunks  int   `json:"pending_chunks"`
	PendingRecords int64 `json:"pending_records"`
	// Done reports that everything buffered at the flush was delivered:
	// indexed, found already indexed, skipped or dead-lettered. DoneAt is
	// when the agent first saw it done.
	Done   bool       `json:"done"`
	DoneAt *time.Time `json:"done_at,omitempty"`
	// Waiting is what the flush still waits for: chunks (and their
	// records) up to the one it sealed, not yet acknowledged.
	WaitingChunks  int   `json:"waiting_chunks"`
	WaitingRecords int64 `json:"waiting_records"`
	// Remaining is what the buffer holds when the answer is sent, the
	// flush's chunks and later ones.
	RemainingChunks  int   `json:"remaining_chunks"`
	RemainingRecords int64 `json:"remaining_records"`
	// Output is the agent's document counters when the answer is sent.
	Output FlushCounters `json:"output"`
	// Held says why delivery is held, while it is.
	Held string `json:"held,omitempty"`
	// Error says why the flush cannot complete (the open chunk was not
	// written) or did not within the wait.
	Error string `json:"error,omitempty"`
}

// FlushCounters are the agent's document counters since start.
type FlushCounters struct {
	Indexed      int64 `json:"indexed"`
	Duplicates   int64 `json:"duplicates"`
	Skipped      int64 `json:"skipped"`
	DeadLettered int64 `json:"dead_lettered"`
}

// flushRecord is what the agent remembers of one flush.
type flushRecord struct {
	res    FlushResult // as answered first
	seq    uint64      // the last chunk the flush covers
	sealed bool        // the open chunk reached the disk
}

// flushLog remembers the last maxFlushes flushes.
type flushLog struct {
	mu   sync.Mutex
	next int
	ring []*flushRecord // oldest first
}

func (l *flushLog) add(f *flushRecord) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	f.res.ID = strconv.Itoa(l.next)
	if len(l.ring) == maxFlushes {
		l.ring = append(l.ring[:0], l.ring[1:]...)
	}
	l.ring = append(l.ring, f)
	return f.res.ID
}

func (l *flushLog) get(id string) *flushRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.ring {
		if f.res.ID == id {
			return f
		}
	}
	return nil
}

// Flush seals the open chunk, cuts delivery backoffs short, and waits up to
// wait (0: not at all) for everything buffered now to be delivered. However
// the disk and Elasticsearch behave, it returns within flushWriteWait +
// wait, or when ctx ends. The flush is remembered: FlushStatus reports its
// progress later.
func (a *Agent) Flush(ctx context.Context, wait time.Duration) FlushResult {
	wctx, cancel := context.WithTimeout(ctx, flushWriteWait)
	before := a.buf.Stats()
	seq, err := a.buf.Flush(wctx)
	cancel()
	after := a.buf.Stats()
	a.deliver.retryNow()
	f := &flushRecord{seq: seq, sealed: err == nil, res: FlushResult{Started: time.Now(),
		Sealed: before.OpenRecords - after.OpenRecords, PendingChunks: after.DiskChunks, PendingRecords: after.DiskRecords}}
	if err != nil {
		f.res.Error = "the open chunk was not written: " + err.Error()
		if after.Blocked != "" {
			f.res.Error += " (" + after.Blocked + ")"
		}
	}
	a.flushes.add(f)
	if f.sealed && wait > 0 {
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := a.buf.WaitDelivered(ctx, seq); err != nil {
			res := a.flushStatus(f)
			res.Error = "not delivered within wait: " + err.Error()
			if res.Held != "" {
				res.Error += "; delivery is held: " + res.Held
			}
			return res
		}
	}
	return a.flushStatus(f)
}

// FlushStatus reports the progress of flush id; false when the agent does
// not remember it (never made, or older than the last maxFlushes).
func (a *Agent) FlushStatus(id string) (FlushResult, bool) {
	f := a.flushes.get(id)
	if f == nil {
		return FlushResult{}, false
	}
	return a.flushStatus(f), true
}

func (a *Agent) flushStatus(f *flushRecord) FlushResult {
	res := f.res
	if f.sealed {
		res.WaitingChunks, res.WaitingRecords = a.buf.PendingUpTo(f.seq)
		res.Done = res.WaitingChunks == 0
	}
	if res.Done {
		// The counters below then include the flush's chunks.
		a.deliver.settled(f.seq)
		a.flushes.mu.Lock()
		if f.res.DoneAt == nil {
			now := time.Now()
			f.res.DoneAt = &now
		}
		res.DoneAt = f.res.DoneAt
		a.flushes.mu.Unlock()
	} else if h := a.deliver.held(); h != nil {
		res.Held = h.Reason
	}
	now := a.buf.Stats()
	res.RemainingChunks, res.RemainingRecords = now.DiskChunks, now.DiskRecords
	res.Output = FlushCounters{Indexed: int64(counterValue(a.metrics.indexed)), Duplicates: int64(counterValue(a.metrics.duplicates)),
		Skipped: int64(counterValue(a.metrics.skipped)), DeadLettered: int64(counterValue(a.metrics.deadLettered))}
	return res
}

// handleFlush answers POST /api/flush[?wait=DURATION]: 200 when the flush
// is done, 202 with its id while it is not (GET /api/flush/{id} follows it).
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
		w.Header().Set("Location", "/api/flush/"+res.ID)
	}
	writeJSON(w, status, res)
}

// handleFlushStatus answers GET /api/flush/{id}.
func (a *Agent) handleFlushStatus(w http.ResponseWriter, r *http.Request) {
	res, ok := a.FlushStatus(r.PathValue("id"))
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such flush: the agent remembers its last " +
			strconv.Itoa(maxFlushes) + " flushes since it started"})
		return
	}
	writeJSON(w, http.StatusOK, res)
}
