package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
	es "github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// chunkSource is the part of the buffer the delivery loop uses.
type chunkSource interface {
	Next(ctx context.Context) (*buffer.Chunk, error)
	Ack(ctx context.Context, c *buffer.Chunk, dead []buffer.DeadLetter) error
	Release(c *buffer.Chunk)
}

// sender is the part of the output the delivery loop uses.
type sender interface {
	Send(ctx context.Context, recs []*shipper.Record) ([]es.ItemResult, error)
}

// deliverer moves chunks from the buffer to the output. It owns retries and
// decides when a document's outcome is final (docs/architecture.md has the
// table):
//
//   - delivered or skipped: done;
//   - dead letter: done, stored with every reason seen when the chunk is
//     acknowledged;
//   - retry: sent again with jittered exponential backoff, for ever, except
//     that a document failing with its own error (a Counted retry) is
//     dead-lettered after max_item_attempts such answers;
//   - hold: the cluster or the credentials are wrong: sent again every
//     retry_max_backoff until the operator fixes it; the agent reports it
//     on /api/health and /api/status; nothing is dead-lettered or committed.
//
// Each worker holds one chunk at a time, so the number of chunks in memory
// and of bulk requests in flight is bounded by the number of workers, and a
// retry replaces a send rather than adding one. Counters move once per
// document, when its chunk is acknowledged.
type deliverer struct {
	src         chunkSource
	out         sender
	log         *slog.Logger
	m           *metrics
	initial     time.Duration
	maxWait     time.Duration
	maxAttempts int

	mu    sync.Mutex
	kick  chan struct{}           // closed to cut every backoff short
	holds map[*holdState]struct{} // deliveries held now, one per worker at most

	// backingOff counts workers waiting in a backoff (tests wait for it).
	backingOff atomic.Int32
	// progress is when a bulk request last returned (unix nanoseconds),
	// whatever its answer: the pipeline watchdog's clock.
	progress atomic.Int64

	// acking holds the chunks from the call to Ack until their documents
	// are counted, so a reader that saw a chunk acknowledged can wait for
	// its counts (settled) instead of reporting them short.
	ackMu   sync.Mutex
	ackDone *sync.Cond
	acking  map[uint64]struct{}
}

// holdState is one delivery held by a hold outcome.
type holdState struct {
	reason    string
	since     time.Time
	documents int
}

func (d *deliverer) ackStart(seq uint64) {
	d.ackMu.Lock()
	d.acking[seq] = struct{}{}
	d.ackMu.Unlock()
}

func (d *deliverer) ackEnd(seq uint64) {
	d.ackMu.Lock()
	delete(d.acking, seq)
	d.ackMu.Unlock()
	d.ackDone.Broadcast()
}

// settled returns once no chunk up to seq is between its acknowledgement
// and the counting of its documents. Call it only once the buffer reports
// every chunk up to seq acknowledged: their Ack calls have then done their
// waiting, so this wait is short. (Acks of later chunks, which may wait for
// disk space, are not waited for.)
func (d *deliverer) settled(seq uint64) {
	d.ackMu.Lock()
	defer d.ackMu.Unlock()
	for d.ackingUpTo(seq) {
		d.ackDone.Wait()
	}
}

func (d *deliverer) ackingUpTo(seq uint64) bool {
	for s := range d.acking {
		if s <= seq {
			return true
		}
	}
	return false
}

func newDeliverer(src chunkSource, out sender, cfg es.Config, log *slog.Logger, m *metrics) *deliverer {
	d := &deliverer{src: src, out: out, log: log, m: m,
		initial: cfg.RetryInitialBackoff, maxWait: cfg.RetryMaxBackoff, maxAttempts: cfg.MaxItemAttempts,
		kick: make(chan struct{}), holds: map[*holdState]struct{}{}, acking: map[uint64]struct{}{}}
	d.ackDone = sync.NewCond(&d.ackMu)
	d.progress.Store(time.Now().UnixNano())
	return d
}

// lastProgress is when a bulk request last returned.
func (d *deliverer) lastProgress() time.Time { return time.Unix(0, d.progress.Load()) }

// retryNow wakes workers waiting in a backoff (an operator's flush).
func (d *deliverer) retryNow() {
	d.mu.Lock()
	close(d.kick)
	d.kick = make(chan struct{})
	d.mu.Unlock()
}

func (d *deliverer) kicked() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.kick
}

// HoldStatus says why delivery is held, if it is.
type HoldStatus struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// Documents is the number of documents held.
	Documents int `json:"documents"`
}

// held returns the oldest hold, or nil when nothing is held.
func (d *deliverer) held() *HoldStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out *HoldStatus
	docs := 0
	for h := range d.holds {
		docs += h.documents
		if out == nil || h.since.Before(out.Since) {
			out = &HoldStatus{Reason: h.reason, Since: h.since}
		}
	}
	if out != nil {
		out.Documents = docs
	}
	return out
}

// setHold records (reason != "") or clears the hold of one delivery,
// logging when delivery becomes held and when it resumes.
func (d *deliverer) setHold(h *holdState, reason string, documents int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, was := d.holds[h]
	switch {
	case reason != "" && !was:
		h.reason, h.since, h.documents = reason, time.Now(), documents
		d.holds[h] = struct{}{}
		if len(d.holds) == 1 {
			d.log.Error("delivery held: Elasticsearch refuses documents for a reason that is not theirs; "+
				"nothing is dead-lettered or committed until it is fixed", "reason", reason, "documents", documents)
		}
	case reason != "":
		h.reason, h.documents = reason, documents
	case was:
		delete(d.holds, h)
		if len(d.holds) == 0 {
			d.log.Info("delivery resumed", "held_for", time.Since(h.since).Round(time.Millisecond).String())
		}
	}
}

// run delivers chunks until ctx ends. A chunk it holds then is released
// back to the buffer, to be sent again by the next run.
func (d *deliverer) run(ctx context.Context) {
	for {
		c, err := d.src.Next(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, buffer.ErrClosed) {
				d.log.Error("load chunk", "err", err)
				if !d.sleep(ctx, d.initial) {
					return
				}
				continue
			}
			return
		}
		d.deliver(ctx, c)
	}
}

// item is one document being delivered and what became of it so far.
type item struct {
	rec *shipper.Record
	// final is the outcome once decided: Delivered, Skipped or DeadLetter;
	// Pending until then.
	final     es.Outcome
	duplicate bool
	// attempts counts answers about the document; failures those that
	// count toward max_item_attempts.
	attempts int
	failures int
	typ      string
	reasons  []string
}

func (d *deliverer) deliver(ctx context.Context, c *buffer.Chunk) {
	items := make([]item, len(c.Records))
	for i := range c.Records {
		items[i].rec = &c.Records[i]
	}
	if !d.deliverItems(ctx, fmt.Sprintf("chunk %d", c.Seq), items) {
		d.src.Release(c)
		return
	}
	var dead []buffer.DeadLetter
	for i := range items {
		if it := &items[i]; it.final == es.DeadLetter {
			dead = append(dead, buffer.DeadLetter{Record: *it.rec, Type: it.typ, Reasons: it.reasons, Attempts: it.attempts})
		}
	}
	d.ackStart(c.Seq)
	if err := d.src.Ack(ctx, c, dead); err != nil {
		d.ackEnd(c.Seq)
		// Nothing is lost: the chunk is sent again later and its
		// documents are found already indexed.
		if ctx.Err() == nil {
			d.log.Error("ack chunk", "seq", c.Seq, "err", err)
		}
		d.src.Release(c)
		d.sleep(ctx, d.initial)
		return
	}
	d.m.final(items)
	d.ackEnd(c.Seq)
	d.log.Debug("chunk delivered", "seq", c.Seq, "documents", len(items), "dead_lettered", len(dead))
	if len(dead) > 0 {
		// One line per chunk, not per document: a mapping error can
		// reject thousands at once.
		first := dead[0]
		d.log.Warn("documents dead-lettered", "seq", c.Seq, "documents", len(dead), "first_id", first.Record.DocumentID(),
			"type", first.Type, "reason", first.Reasons[0])
	}
}

// deliverItems sends the items until every one has a final outcome, and
// reports true; or until ctx ends, and reports false.
func (d *deliverer) deliverItems(ctx context.Context, what string, items []item) bool {
	pending := make([]int, len(items))
	for i := range items {
		pending[i] = i
	}
	recs := make([]*shipper.Record, 0, len(items))
	hold := &holdState{}
	defer d.setHold(hold, "", 0)
	for attempt := 0; ; attempt++ {
		recs = recs[:0]
		for _, i := range pending {
			recs = append(recs, items[i].rec)
		}
		results, err := d.out.Send(ctx, recs)
		d.progress.Store(time.Now().UnixNano())
		d.m.sendAttempt(err)
		next := pending[:0]
		var heldReason, retryReason string
		for j, r := range results {
			it := &items[pending[j]]
			if r.Outcome != es.Pending {
				it.attempts++
			}
			switch r.Outcome {
			case es.Delivered:
				it.final, it.duplicate = es.Delivered, r.Duplicate
			case es.Skipped:
				it.final = es.Skipped
			case es.DeadLetter:
				it.final, it.typ, it.reasons = es.DeadLetter, r.Type, buffer.AddReason(it.reasons, r.Reason)
			case es.Retry:
				retryReason = r.Reason
				if r.Counted {
					it.failures++
					it.typ, it.reasons = r.Type, buffer.AddReason(it.reasons, r.Reason)
					if it.failures >= d.maxAttempts {
						it.final = es.DeadLetter
						it.reasons = buffer.AddReason(it.reasons,
							fmt.Sprintf("gave up after %d attempts (elasticsearch.max_item_attempts)", it.failures))
						continue
					}
				}
				next = append(next, pending[j])
			case es.Hold:
				heldReason = r.Reason
				next = append(next, pending[j])
			default: // Pending: no answer about it
				next = append(next, pending[j])
			}
		}
		pending = next
		if len(pending) == 0 {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.m.retries.Add(float64(len(pending)))
		wait := backoff(d.initial, d.maxWait, attempt)
		var reqErr *es.RequestError
		if errors.As(err, &reqErr) && reqErr.RetryAfter > wait {
			wait = min(reqErr.RetryAfter, d.maxWait)
		}
		if heldReason != "" {
			// Retrying sooner cannot help: the operator must act. A
			// flush cuts the wait short.
			wait = d.maxWait
			d.setHold(hold, heldReason, len(pending))
		} else {
			d.setHold(hold, "", 0)
			if err != nil {
				d.log.Warn("bulk request failed; retrying", "what", what, "documents", len(pending),
					"attempt", attempt+1, "backoff", wait.String(), "err", err)
			} else {
				d.log.Warn("documents rejected for now; retrying them", "what", what, "documents", len(pending),
					"attempt", attempt+1, "backoff", wait.String(), "reason", retryReason)
			}
		}
		if !d.sleep(ctx, wait) {
			return false
		}
	}
}

// sleep waits for the duration, a kick or ctx; it reports false when ctx ended.
func (d *deliverer) sleep(ctx context.Context, wait time.Duration) bool {
	kick := d.kicked() // before counting, so a kick seen by a waiter of the count wakes this
	d.backingOff.Add(1)
	defer d.backingOff.Add(-1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-kick:
	case <-ctx.Done():
		return false
	}
	return true
}

// backoff is exponential with jitter over the upper half: many agents that
// failed together do not retry together.
func backoff(initial, maxWait time.Duration, attempt int) time.Duration {
	d := initial << min(attempt, 20)
	if d <= 0 || d > maxWait {
		d = maxWait
	}
	return d/2 + rand.N(d/2+1)
}
