package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shipper-agent/shipper"
)

// Fetching. kafka-go's Reader fetches one partition per connection with its
// own prefetch queue, returns control records and aborted transactions as
// messages, skips silently when an offset is out of range, and ends the
// whole consumer generation when one partition fails; kafka-go's protocol
// package, which speaks multi-partition fetches, decodes every record
// batch into 64 KiB pages of its own (batch.go). The session below sends
// its fetch requests over kafka-go's Transport (its connections, TLS, SASL
// and leader routing) as raw exchanges encoded with franz-go's kmsg, and
// reads the record batches itself:
//
//   - one fetch loop per broker, each asking for all the partitions that
//     broker leads in one request, and fetch_max_bytes shared between the
//     loops: memory does not grow with the partition count;
//   - read_committed filtering from the response's aborted-transaction list
//     (control records are never records, whatever the isolation level);
//   - errors per partition, each retried with its own backoff;
//   - an out-of-range offset is reset by start_offset and the gap reported.
//
// A partition is claimed by one loop while its fetch is in flight and its
// records are handed to the sink, so its records are appended in order even
// while its leadership moves between brokers.

const (
	// metadataInterval is how often a session re-reads partition
	// leadership from the transport's metadata cache.
	metadataInterval = 2 * time.Second
	// metadataTTL bounds the transport's metadata cache: how soon a new
	// leader is seen after a partition moved.
	metadataTTL = 3 * time.Second
	// retryMin and retryMax bound a failing partition's (or broker's)
	// backoff; it doubles on every failure.
	retryMin = 250 * time.Millisecond
	retryMax = 30 * time.Second
	// idleWait is how long a fetch loop with nothing to fetch sleeps.
	idleWait = 100 * time.Millisecond
	// partitionMinBytes is the least a partition may return in one
	// response, whatever the partition count.
	partitionMinBytes = 256 << 10
	// fetchVersion is the Fetch request version sent: v11 (Kafka 2.3+)
	// names topics (later versions address them by id) and has
	// isolation, aborted transactions and the log start offset.
	fetchVersion = 11
	// maxFetchResponse bounds one fetch response. A broker returns a
	// record batch larger than the request's limit when it is the first
	// it has, so that it is never stuck: up to the topic's
	// max.message.bytes, which may be raised far beyond its 1 MiB default.
	maxFetchResponse = 1 << 30
)

// partition is one assigned partition's fetch state. Fields are guarded by
// the session's mutex.
type partition struct {
	tp shipper.TopicPartition
	// next is the offset of the next record to fetch: past every record
	// appended, filtered or skipped.
	next int64
	// appended is the offset after the last record handed to the sink in
	// this generation, or the start offset when none was.
	appended int64
	// start is where this generation started reading the partition;
	// resumed is set when that is past the committed offset, where the
	// sink said it holds the records between.
	start   int64
	resumed bool
	// committed is the group's committed offset (-1: none).
	committed int64

	highWater, logStart int64
	leader              int32 // broker id; -1 unknown

	claimed  bool // a fetch loop is fetching or appending it
	failures int
	retryAt  time.Time
	err      string // last error, "" once a fetch succeeds
}

// session fetches the partitions of one generation.
type session struct {
	in    *Input
	gen   *kafkago.Generation
	mu    sync.Mutex
	parts map[shipper.TopicPartition]*partition
	order []*partition // rotated per request, for fairness
	loops map[int32]bool
	// requestBytes is each request's share of fetch_max_bytes.
	requestBytes int
	// rejoin is set when the session must end its generation: an append
	// failed (the group restarts the partitions from committed offsets),
	// or a topic was replaced (nothing more is committed for it).
	rejoin bool
	// topicIDs are the short ids of the assigned topics (topicid.go), set
	// before the first fetch; records carry them into their document ids.
	topicIDs map[string]string
	// end ends the session, and with it the generation.
	end context.CancelFunc
}

func newSession(in *Input, gen *kafkago.Generation, starts map[shipper.TopicPartition]int64) *session {
	s := &session{in: in, gen: gen, parts: map[shipper.TopicPartition]*partition{}, loops: map[int32]bool{},
		requestBytes: int(in.cfg.FetchMaxBytes)}
	for topic, parts := range gen.Assignments {
		for _, p := range parts {
			tp := shipper.TopicPartition{Topic: topic, Partition: int32(p.ID)}
			start := starts[tp]
			ps := &partition{tp: tp, next: start, appended: start, start: start, committed: max(p.Offset, -1), leader: -1,
				resumed: start >= 0 && start > p.Offset}
			s.parts[tp] = ps
			s.order = append(s.order, ps)
		}
	}
	slices.SortFunc(s.order, func(a, b *partition) int { return comparePartitions(a.tp, b.tp) })
	return s
}

// run fetches until ctx ends (the generation ends or fetching stops) or an
// append fails. It returns once every fetch loop has.
func (s *session) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.end = cancel
	s.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	if !s.resolveTopicIDs(ctx) || !s.resolveStarts(ctx) {
		return
	}
	// Committed at once, so a restart before the first delivery starts
	// here too: with start_offset = "latest" it would otherwise skip
	// what arrived meanwhile.
	s.in.commit(s)
	t := time.NewTicker(metadataInterval)
	defer t.Stop()
	for {
		for _, id := range s.refreshLeaders(ctx) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.fetchLoop(ctx, id, cancel)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// topics returns the assigned topics, sorted. s.parts is not changed
// after newSession, so any goroutine may read it.
func (s *session) topics() []string {
	var out []string
	for tp := range s.parts {
		if !slices.Contains(out, tp.Topic) {
			out = append(out, tp.Topic)
		}
	}
	slices.Sort(out)
	return out
}

// resolveTopicIDs learns the assigned topics' ids, retrying until it
// succeeds or ctx ends: no record is read without the id its document
// id needs.
func (s *session) resolveTopicIDs(ctx context.Context) bool {
	return retry(ctx, s.in, "kafka topic ids", func() error {
		ids, err := s.in.topicIDs(ctx, s.topics())
		if err == nil {
			s.mu.Lock()
			s.topicIDs = ids
			s.mu.Unlock()
		}
		return err
	})
}

// retry calls fn until it succeeds, backing off between failures (each
// logged as what), and reports false if ctx ended first.
func retry(ctx context.Context, in *Input, what string, fn func() error) bool {
	backoff := retryMin
	for {
		err := fn()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		in.log.Warn(what+"; retrying", "retry_in", backoff.String(), "err", err)
		sleep(ctx, backoff)
		if ctx.Err() != nil {
			return false
		}
		backoff = min(2*backoff, retryMax)
	}
}
func comparePartitions(a, b shipper.TopicPartition) int {
	return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
}

// topicReplaced reports whether topic now has another id than when the
// session started: it was deleted and created again. The session is then
// ended, so the group rejoins and reads the new topic with its own ids
// (Kafka deleted the old topic's committed offsets with it).
func (s *session) topicReplaced(ctx context.Context, topic string) bool {
	ids, err := s.in.topicIDs(ctx, []string{topic})
	if err != nil {
		return false // gone, or unreachable: fetching retries meanwhile
	}
	s.mu.Lock()
	was := s.topicIDs[topic]
	end := s.end
	replaced := ids[topic] != was
	if replaced {
		s.rejoin = true
	}
	s.mu.Unlock()
	if !replaced {
		return false
	}
	s.in.log.Warn("kafka topic was deleted and created again; rejoining the group to read the new one",
		"topic", topic, "topic_id_before", was, "topic_id_now", ids[topic])
	s.in.stats.resets.Add(1)
	if end != nil {
		end()
	}
	return true
}

// resolveStarts replaces the start offsets of partitions the group never
// committed (kafka-go's FirstOffset and LastOffset placeholders) by the
// partition's first or last offset, retrying until it succeeds or ctx ends.
func (s *session) resolveStarts(ctx context.Context) bool {
	return retry(ctx, s.in, "kafka list offsets for partitions without a committed offset", func() error {
		req := map[string][]kafkago.OffsetRequest{}
		s.mu.Lock()
		for _, ps := range s.parts {
			switch ps.next {
			case kafkago.FirstOffset:
				req[ps.tp.Topic] = append(req[ps.tp.Topic], kafkago.FirstOffsetOf(int(ps.tp.Partition)))
			case kafkago.LastOffset:
				req[ps.tp.Topic] = append(req[ps.tp.Topic], kafkago.LastOffsetOf(int(ps.tp.Partition)))
			}
		}
		s.mu.Unlock()
		if len(req) == 0 {
			return nil
		}
		lctx, cancel := context.WithTimeout(ctx, s.in.cfg.DialTimeout)
		defer cancel()
		res, err := s.in.client().ListOffsets(lctx, &kafkago.ListOffsetsRequest{Topics: req, IsolationLevel: s.in.isolation()})
		if err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for topic, parts := range res.Topics {
			for _, p := range parts {
				ps := s.parts[shipper.TopicPartition{Topic: topic, Partition: int32(p.Partition)}]
				switch {
				case p.Error != nil:
					err = p.Error // the others are kept; this one is asked again
				case ps == nil || ps.next >= 0:
				case ps.next == kafkago.FirstOffset:
					ps.next, ps.appended, ps.start = p.FirstOffset, p.FirstOffset, p.FirstOffset
				default:
					ps.next, ps.appended, ps.start = p.LastOffset, p.LastOffset, p.LastOffset
				}
			}
		}
		return err
	})
}

// refreshLeaders reads partition leadership from the transport's metadata
// cache (the view the transport routes fetch requests by) and returns the
// brokers that lead an assigned partition and have no fetch loop yet.
func (s *session) refreshLeaders(ctx context.Context) []int32 {
	if len(s.parts) == 0 {
		return nil
	}
	mctx, cancel := context.WithTimeout(ctx, s.in.cfg.DialTimeout)
	defer cancel()
	res, err := s.in.client().Metadata(mctx, &kafkago.MetadataRequest{Topics: s.in.cfg.Topics})
	if err != nil {
		if ctx.Err() == nil {
			s.in.log.Warn("kafka metadata", "err", err)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var added []int32
	for _, t := range res.Topics {
		for _, p := range t.Partitions {
			ps, ok := s.parts[shipper.TopicPartition{Topic: t.Name, Partition: int32(p.ID)}]
			if !ok {
				continue
			}
			ps.leader = -1
			if p.Error == nil && p.Leader.Host != "" {
				ps.leader = int32(p.Leader.ID)
			}
			if ps.leader >= 0 && !s.loops[ps.leader] {
				s.loops[ps.leader] = true
				added = append(added, ps.leader)
			}
		}
	}
	if len(added) > 0 {
		// Each loop holds at most one response: together they stay
		// within fetch_max_bytes.
		s.requestBytes = max(int(s.in.cfg.FetchMaxBytes)/len(s.loops), 64<<10)
	}
	return added
}

// claim returns the partitions broker leads that are ready to fetch, marked
// claimed, and the byte limit of the request.
func (s *session) claim(broker int32) ([]*partition, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var out []*partition
	for _, ps := range s.order {
		if ps.leader == broker && ps.next >= 0 && !ps.claimed && !now.Before(ps.retryAt) {
			ps.claimed = true
			out = append(out, ps)
		}
	}
	// The broker fills partitions in request order: start each request
	// one partition further, so none is always last.
	if len(s.order) > 1 {
		s.order = append(s.order[1:], s.order[0])
	}
	return out, s.requestBytes
}

func (s *session) release(parts []*partition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ps := range parts {
		ps.claimed = false
	}
}

// fetchLoop fetches, from one broker, the partitions it leads, and appends
// their records to the sink, until ctx ends.
func (s *session) fetchLoop(ctx context.Context, broker int32, fail context.CancelFunc) {
	backoff := retryMin
	for ctx.Err() == nil {
		parts, limit := s.claim(broker)
		if len(parts) == 0 {
			sleep(ctx, idleWait)
			continue
		}
		res, err := s.fetch(ctx, broker, parts, limit)
		if err != nil {
			s.release(parts)
			if ctx.Err() != nil {
				return
			}
			s.in.stats.fetchErrors.Add(1)
			s.in.log.Warn("kafka fetch failed; retrying", "broker", broker, "partitions", len(parts),
				"retry_in", backoff.String(), "err", err)
			sleep(ctx, backoff)
			backoff = min(2*backoff, retryMax)
			continue
		}
		backoff = retryMin
		s.in.stats.fetches.Add(1)
		err = s.handle(ctx, parts, res)
		s.release(parts)
		if err != nil {
			if ctx.Err() == nil {
				s.in.log.Error("append record; ending the generation to restart from committed offsets", "err", err)
				s.mu.Lock()
				s.rejoin = true
				s.mu.Unlock()
				fail()
			}
			return
		}
	}
}

func (s *session) fetch(ctx context.Context, broker int32, parts []*partition, limit int) (*kmsg.FetchResponse, error) {
	per := int32(max(limit/len(parts), partitionMinBytes))
	per = min(per, int32(limit))
	req := kmsg.NewPtrFetchRequest()
	req.Version = fetchVersion
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(s.in.cfg.FetchMaxWait.Milliseconds())
	req.MinBytes = 1
	req.MaxBytes = int32(limit)
	req.IsolationLevel = int8(s.in.isolation())
	req.SessionID, req.SessionEpoch = 0, -1 // no fetch session: every request names its partitions
	s.mu.Lock()
	for _, ps := range parts {
		i := slices.IndexFunc(req.Topics, func(t kmsg.FetchRequestTopic) bool { return t.Topic == ps.tp.Topic })
		if i < 0 {
			t := kmsg.NewFetchRequestTopic()
			t.Topic = ps.tp.Topic
			req.Topics = append(req.Topics, t)
			i = len(req.Topics) - 1
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.CurrentLeaderEpoch, rp.FetchOffset, rp.LogStartOffset, rp.PartitionMaxBytes = ps.tp.Partition, -1, ps.next, -1, per
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
	}
	s.mu.Unlock()
	// The fetch waits up to fetch_max_wait on the broker; allow for the
	// transfer on top.
	fctx, cancel := context.WithTimeout(ctx, s.in.cfg.FetchMaxWait+s.in.cfg.DialTimeout+10*time.Second)
	defer cancel()
	m, err := s.in.transport.RoundTrip(fctx, s.in.addr, &rawFetch{rawRequest: rawRequest{req: req, maxResponse: maxFetchResponse}, leader: broker})
	if err != nil {
		return nil, err
	}
	r, ok := m.(*rawResponse)
	if !ok {
		return nil, fmt.Errorf("unexpected fetch response %T", m)
	}
	res := r.res.(*kmsg.FetchResponse)
	if res.ErrorCode != 0 {
		return nil, kafkago.Error(res.ErrorCode)
	}
	return res, nil
}

// handle appends the records of one fetch response and applies its
// per-partition errors.
func (s *session) handle(ctx context.Context, parts []*partition, res *kmsg.FetchResponse) error {
	for _, t := range res.Topics {
		for i := range t.Partitions {
			rp := &t.Partitions[i]
			ps := s.parts[shipper.TopicPartition{Topic: t.Topic, Partition: rp.Partition}]
			if ps == nil || !slices.Contains(parts, ps) {
				continue
			}
			if rp.ErrorCode != 0 {
				s.partitionError(ctx, ps, kafkago.Error(rp.ErrorCode))
				continue
			}
			if err := s.records(ctx, ps, rp); err != nil {
				return err
			}
		}
	}
	return nil
}

// records hands one partition's records to the sink, filtering control
// records and, under read_committed, aborted transactions.
func (s *session) records(ctx context.Context, ps *partition, rp *kmsg.FetchResponseTopicPartition) error {
	s.mu.Lock()
	next := ps.next
	ps.highWater, ps.logStart = rp.HighWatermark, rp.LogStartOffset
	if ps.err != "" {
		s.in.log.Info("kafka partition fetching again", "partition", ps.tp.String(), "offset", next)
	}
	ps.err, ps.failures = "", 0
	topicID := s.topicIDs[ps.tp.Topic]
	s.mu.Unlock()

	readCommitted := s.in.isolation() == kafkago.ReadCommitted
	aborted := slices.Clone(rp.AbortedTransactions)
	slices.SortFunc(aborted, func(a, b kmsg.FetchResponseTopicPartitionAbortedTransaction) int {
		return cmp.Compare(a.FirstOffset, b.FirstOffset)
	})
	abortedPIDs := map[int64]bool{}

	var appended, filtered, size int64
	start := time.Now()
	defer func() {
		s.in.stats.records.Add(appended)
		s.in.stats.filtered.Add(filtered)
		s.in.stats.bytes.Add(size)
		s.in.stats.sinkWait.Add(int64(time.Since(start)))
	}()
	raw := rp.RecordBatches
	for {
		b, rest, ok, err := nextBatch(raw)
		if err != nil {
			// Not skipped: the partition is fetched again from here,
			// after a backoff, while the others go on.
			s.setNext(ps, next, -1)
			return s.retryLater(ps, err)
		}
		if !ok {
			break
		}
		raw = rest
		if b.lastOffset() < next {
			continue // before the fetch offset: brokers send whole batches
		}
		for len(aborted) > 0 && aborted[0].FirstOffset <= b.lastOffset() {
			abortedPIDs[aborted[0].ProducerID] = true
			aborted = aborted[1:]
		}
		switch {
		case b.control():
			// A transaction marker: never a record. An abort marker
			// ends its producer's aborted transaction.
			_ = b.each(func(r *batchRecord) error {
				if controlType(r.key) == controlAbort {
					delete(abortedPIDs, b.producerID)
				}
				return nil
			})
			filtered += int64(b.count)
		case readCommitted && b.transactional() && abortedPIDs[b.producerID]:
			filtered += int64(b.count)
		default:
			err := b.each(func(r *batchRecord) error {
				if r.offset < next {
					return nil
				}
				rec := shipper.Record{Topic: ps.tp.Topic, TopicID: topicID, Partition: ps.tp.Partition,
					Offset: r.offset, Key: r.key, Value: r.value, Time: r.time}
				if len(r.headers) > 0 {
					rec.Headers = make([]shipper.Header, len(r.headers))
					for i, h := range r.headers {
						rec.Headers[i] = shipper.Header{Key: h.key, Value: h.value}
					}
				}
				if err := s.in.sink.Append(ctx, &rec); err != nil {
					return appendError{err}
				}
				appended++
				size += int64(len(r.key) + len(r.value))
				s.in.consumed.Add(1)
				next = r.offset + 1
				s.setNext(ps, next, next)
				return nil
			})
			var ae appendError
			if errors.As(err, &ae) {
				s.setNext(ps, next, -1)
				return ae.err
			}
			if err != nil {
				s.setNext(ps, next, -1)
				return s.retryLater(ps, err)
			}
		}
		// Past the whole batch, also past records compaction removed
		// from its end, or that a filter passed over.
		next = max(next, b.lastOffset()+1)
	}
	s.setNext(ps, next, -1)
	return nil
}

// appendError carries the sink's error out of a batch's records.
type appendError struct{ err error }

func (e appendError) Error() string { return e.err.Error() }

// retryLater backs a partition off after an error in its data, without
// ending the generation; it returns nil so the other partitions go on.
func (s *session) retryLater(ps *partition, err error) error {
	s.partitionError(context.Background(), ps, err)
	return nil
}

func (s *session) setNext(ps *partition, next, appended int64) {
	s.mu.Lock()
	ps.next = max(ps.next, next)
	if appended >= 0 {
		ps.appended = appended
	}
	s.mu.Unlock()
}

// partitionError handles a fetch error of one partition: an offset out of
// range is reset by start_offset; anything else backs the partition off,
// while the other partitions go on.
func (s *session) partitionError(ctx context.Context, ps *partition, err error) {
	if errors.Is(err, kafkago.UnknownTopicOrPartition) && s.topicReplaced(ctx, ps.tp.Topic) {
		return
	}
	if errors.Is(err, kafkago.OffsetOutOfRange) {
		if rerr := s.resetOffset(ctx, ps); rerr == nil {
			return
		} else {
			err = fmt.Errorf("%w; resetting: %w", err, rerr)
		}
	}
	s.in.stats.partitionErrors.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	ps.failures++
	wait := min(retryMin<<min(ps.failures-1, 10), retryMax)
	ps.retryAt = time.Now().Add(wait)
	msg := err.Error()
	if msg != ps.err {
		// Logged when the error changes, not on every retry.
		s.in.log.Warn("kafka partition fetch failed; retrying this partition, the others go on",
			"partition", ps.tp.String(), "offset", ps.next, "retry_in", wait.String(), "err", msg)
	}
	ps.err = msg
}

// resetOffset moves a partition whose position is out of range to where
// start_offset says, and reports the records skipped.
func (s *session) resetOffset(ctx context.Context, ps *partition) error {
	lctx, cancel := context.WithTimeout(ctx, s.in.cfg.DialTimeout)
	defer cancel()
	res, err := s.in.client().ListOffsets(lctx, &kafkago.ListOffsetsRequest{
		Topics:         map[string][]kafkago.OffsetRequest{ps.tp.Topic: {kafkago.FirstOffsetOf(int(ps.tp.Partition)), kafkago.LastOffsetOf(int(ps.tp.Partition))}},
		IsolationLevel: s.in.isolation(),
	})
	if err != nil {
		return err
	}
	var first, last int64 = -1, -1
	for _, p := range res.Topics[ps.tp.Topic] {
		if p.Partition == int(ps.tp.Partition) {
			if p.Error != nil {
				return p.Error
			}
			first, last = p.FirstOffset, p.LastOffset
		}
	}
	if first < 0 || last < 0 {
		return fmt.Errorf("no offsets listed for %s", ps.tp)
	}
	s.mu.Lock()
	from := ps.next
	s.mu.Unlock()
	to := first
	if s.in.cfg.StartOffset == "latest" {
		to = last
	}
	switch {
	case from < first:
		gap := shipper.OffsetGap{Topic: ps.tp.Topic, Partition: ps.tp.Partition, From: from, To: to,
			Reason: fmt.Sprintf("offset out of range: records %d to %d were removed from the partition (retention or delete-records) before they were read; the log starts at %d, start_offset %q resumed at %d",
				from, first-1, first, s.in.cfg.StartOffset, to)}
		s.in.log.Error("kafka records skipped: removed from the partition before they were read",
			"partition", ps.tp.String(), "from", from, "to", to, "count", to-from, "log_start", first, "start_offset", s.in.cfg.StartOffset)
		if err := s.in.sink.RecordGap(ctx, gap); err != nil {
			return fmt.Errorf("record the gap: %w", err)
		}
		s.in.stats.skipped(ps.tp, to-from)
	case from > last:
		// The log ends below our position: the topic was deleted and
		// created again, or an unclean leader election truncated it.
		if s.topicReplaced(ctx, ps.tp.Topic) {
			return nil
		}
		to = first
		s.in.log.Error("kafka partition log ends below the consumer's position: the topic was recreated or truncated; reading from the log start",
			"partition", ps.tp.String(), "position", from, "log_start", first, "log_end", last)
		s.in.stats.resets.Add(1)
	default:
		// In range by now (the log moved meanwhile): fetch again.
		return nil
	}
	s.mu.Lock()
	ps.next = to
	if ps.appended > to {
		ps.appended = to
	}
	s.mu.Unlock()
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
