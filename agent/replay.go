package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/shipper-agent/shipper/buffer"
	es "github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// ReplayResult answers a dead-letter replay.
type ReplayResult struct {
	DryRun bool `json:"dry_run"`
	// Matched is the number of entries the filter selected (and, unless a
	// dry run, sent).
	Matched int `json:"matched"`
	// Delivered were indexed (or found already indexed) and removed from
	// the store.
	Delivered int `json:"delivered"`
	// DeadLettered failed again and stay in the store, with the new reason
	// and attempts.
	DeadLettered int `json:"dead_lettered"`
	// Gaps counts matched entries that record offsets never read from
	// Kafka (type offset_gap): there is nothing to send, they stay until
	// purged.
	Gaps int `json:"gaps"`
	// ByType counts the matched entries by reason type.
	ByType map[string]int `json:"by_type"`
	// ByTopic counts the matched entries by topic.
	ByTopic map[string]int `json:"by_topic"`
	// Done is false when the replay stopped early (the request ended, the
	// agent is stopping); what was settled so far is settled.
	Done  bool   `json:"done"`
	Error string `json:"error,omitempty"`
}

// replayPageBytes bounds the values of one page a replay holds in memory.
const replayPageBytes = 4 << 20

// errReplayRunning refuses a second replay while one runs.
var errReplayRunning = errors.New("a dead-letter replay is already running")

// Replay sends the dead letters that match q through the normal delivery
// path (the same outcomes, retries, holds and attempt bound as chunks), a
// page at a time, in the store's order. Entries that are delivered are
// removed; entries that fail again stay, with the new reasons and
// attempts. With dryRun nothing is sent: the result says what would be.
// It returns when every matching entry is settled or ctx ends; one replay
// runs at a time.
func (a *Agent) Replay(ctx context.Context, q buffer.DeadLetterQuery, dryRun bool) (ReplayResult, error) {
	if !a.replaying.TryLock() {
		return ReplayResult{}, errReplayRunning
	}
	defer a.replaying.Unlock()
	store := a.buf.DeadLetters()
	res := ReplayResult{DryRun: dryRun, ByType: map[string]int{}, ByTopic: map[string]int{}}
	q.After, q.Limit, q.MaxBytes, q.MaxValueBytes = "", 500, replayPageBytes, 0
	if dryRun {
		q.Limit, q.MaxBytes, q.MaxValueBytes = 10_000, 0, 1
	}
	for {
		page, err := store.List(q)
		if err != nil {
			return res, err
		}
		for _, d := range page.Entries {
			res.Matched++
			res.ByType[d.Type]++
			res.ByTopic[d.Record.Topic]++
		}
		records := slices.DeleteFunc(slices.Clone(page.Entries), func(d buffer.DeadLetter) bool { return d.Type == buffer.GapType })
		res.Gaps += len(page.Entries) - len(records)
		if !dryRun && len(records) > 0 {
			if err := a.replayPage(ctx, store, records, &res); err != nil {
				return res, err
			}
		}
		if page.Next == "" {
			res.Done = true
			return res, nil
		}
		q.After = page.Next
	}
}

func (a *Agent) replayPage(ctx context.Context, store *buffer.DeadLetterStore, entries []buffer.DeadLetter, res *ReplayResult) error {
	items := make([]item, len(entries))
	for i := range entries {
		// Earlier attempts and reasons stay with the entry; the bound on
		// counted failures starts afresh, since something was changed.
		items[i] = item{rec: &entries[i].Record, attempts: entries[i].Attempts, reasons: entries[i].Reasons, typ: entries[i].Type}
	}
	if !a.deliver.deliverItems(ctx, fmt.Sprintf("dead-letter replay from %s", entries[0].ID), items) {
		return fmt.Errorf("replay stopped: %w", context.Cause(ctx))
	}
	var delivered []string
	var again []buffer.DeadLetter
	settled := items[:0:0]
	for i := range items {
		it, d := &items[i], entries[i]
		if it.final == es.DeadLetter {
			d.Type, d.Reasons, d.Attempts = it.typ, it.reasons, it.attempts
			again = append(again, d)
		} else {
			delivered = append(delivered, d.ID)
			settled = append(settled, *it)
		}
	}
	if err := store.Update(ctx, again); err != nil {
		return fmt.Errorf("keep the entries that failed again: %w", err)
	}
	if err := store.Delete(ctx, delivered); err != nil {
		return fmt.Errorf("remove delivered entries: %w", err)
	}
	a.metrics.final(settled) // indexed now; the failures were counted when first dead-lettered
	res.Delivered += len(delivered)
	res.DeadLettered += len(again)
	a.metrics.replayed.WithLabelValues("delivered").Add(float64(len(delivered)))
	a.metrics.replayed.WithLabelValues("dead_lettered").Add(float64(len(again)))
	a.log.Info("dead letters replayed", "delivered", len(delivered), "dead_lettered_again", len(again),
		"types", sortedKeys(res.ByType))
	return nil
}

func sortedKeys(m map[string]int) []string { return slices.Sorted(maps.Keys(m)) }
