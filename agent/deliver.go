package agent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
	es "github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// chunkSource is the part of the buffer the delivery loop uses.
type chunkSource interface {
	Next(ctx context.Context) (*buffer.Chunk, error)
	Ack(c *buffer.Chunk, dead []buffer.DeadLetter) error
	Release(c *buffer.Chunk)
}

// sender is the part of the output the delivery loop uses.
type sender interface {
	Send(ctx context.Context, recs []*shipper.Record) ([]es.ItemResult, error)
}

// deliverer moves chunks from the buffer to the output. It owns retries:
// a chunk is retried, only its undelivered documents, with jittered
// exponential backoff until every document is indexed or dead-lettered.
// Each worker holds one chunk at a time, so the number of chunks in memory
// and of bulk requests in flight is bounded by the number of workers, and a
// retry replaces a send rather than adding one.
type deliverer struct {
	src     chunkSource
	out     sender
	log     *slog.Logger
	m       *metrics
	initial time.Duration
	maxWait time.Duration

	mu   sync.Mutex
	kick chan struct{} // closed to cut every backoff short
}

func newDeliverer(src chunkSource, out sender, cfg es.Config, log *slog.Logger, m *metrics) *deliverer {
	return &deliverer{src: src, out: out, log: log, m: m,
		initial: cfg.RetryInitialBackoff, maxWait: cfg.RetryMaxBackoff, kick: make(chan struct{})}
}

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

func (d *deliverer) deliver(ctx context.Context, c *buffer.Chunk) {
	pending := make([]*shipper.Record, len(c.Records))
	for i := range c.Records {
		pending[i] = &c.Records[i]
	}
	var dead []buffer.DeadLetter
	for attempt := 0; ; attempt++ {
		results, err := d.out.Send(ctx, pending)
		d.m.sendAttempt(err)
		retry := pending[:0:0]
		for i, r := range results {
			switch r.Outcome {
			case es.Delivered:
				d.m.documents(r.Status)
			case es.Rejected:
				d.m.deadLettered.Inc()
				dead = append(dead, buffer.DeadLetter{Record: *pending[i], Reason: r.Reason})
			case es.Retry:
				retry = append(retry, pending[i])
			}
		}
		pending = retry
		if len(pending) == 0 {
			if err := d.src.Ack(c, dead); err != nil {
				// Nothing is lost: the chunk is sent again later and
				// its documents are found already indexed.
				d.log.Error("ack chunk", "seq", c.Seq, "err", err)
				d.src.Release(c)
				d.sleep(ctx, d.initial)
			}
			return
		}
		if ctx.Err() != nil {
			d.src.Release(c)
			return
		}
		d.m.retries.Add(float64(len(pending)))
		wait := backoff(d.initial, d.maxWait, attempt)
		var reqErr *es.RequestError
		if errors.As(err, &reqErr) && reqErr.RetryAfter > wait {
			wait = min(reqErr.RetryAfter, d.maxWait)
		}
		if err != nil {
			d.log.Warn("bulk request failed; retrying", "seq", c.Seq, "documents", len(pending), "attempt", attempt+1, "backoff", wait, "err", err)
		} else {
			d.log.Warn("documents rejected for now; retrying them", "seq", c.Seq, "documents", len(pending), "attempt", attempt+1, "backoff", wait, "reason", pending0Reason(results))
		}
		if !d.sleep(ctx, wait) {
			d.src.Release(c)
			return
		}
	}
}

func pending0Reason(results []es.ItemResult) string {
	for _, r := range results {
		if r.Outcome == es.Retry {
			return r.Reason
		}
	}
	return ""
}

// sleep waits for the duration, a kick or ctx; it reports false when ctx ended.
func (d *deliverer) sleep(ctx context.Context, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-d.kicked():
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
