package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper"
)

// Sink receives consumed records. Append blocks while the sink is full:
// that is how back-pressure reaches Kafka (the input simply stops fetching,
// and the data waits in Kafka).
type Sink interface {
	Append(ctx context.Context, r *shipper.Record) error
	// RecordGap stores a range of offsets that will never be read (removed
	// from the partition before they were), so the loss is on record.
	RecordGap(ctx context.Context, g shipper.OffsetGap) error
}

// Watermarks is what the input learns from downstream about its progress.
type Watermarks interface {
	// Watermarks reports, per partition, the offset below which every
	// record handed to the sink has been delivered. Only such offsets are
	// committed.
	Watermarks() map[shipper.TopicPartition]int64
	// ResumeOffsets reports, per partition, the offset after the last
	// record the sink holds or has delivered. A partition reader starts
	// there when it is beyond the committed offset, so that a restart does
	// not buffer again what the sink already has.
	ResumeOffsets() map[shipper.TopicPartition]int64
}

// Input consumes topics as a member of a consumer group and commits offsets
// only once the records below them are delivered.
//
// Lifecycle: Run consumes until its context ends, then makes a final commit
// and leaves the group. StopFetching, called while Run runs, stops reading
// new records but keeps the membership, so that what is still being
// delivered can be committed before Run's context is cancelled.
type Input struct {
	cfg   Config
	sink  Sink
	marks Watermarks
	log   *slog.Logger

	fetchCtx  context.Context
	stopFetch context.CancelFunc
	// transport carries metadata requests; owned here, not kafka-go's
	// shared default, so its connections close with the input.
	transport *kafkago.Transport
	// addr is the bootstrap address every request goes through; the
	// transport routes each to the right broker.
	addr net.Addr

	consumed atomic.Int64
	stats    inputStats
	// problem is the last error of joining the consumer group; nil once a
	// generation is joined (see Problem).
	problem atomic.Pointer[error]

	mu  sync.Mutex // guards gen, active, sess and assigned
	gen *kafkago.Generation
	// active is gen while its generation runs; nil between generations
	// (a rebalance, a lost session), when the member is in no group.
	active   *kafkago.Generation
	sess     *session
	assigned []shipper.TopicPartition

	commitMu sync.Mutex // serialises commits
}

// New creates the input. It does not contact Kafka.
func New(cfg Config, sink Sink, marks Watermarks, log *slog.Logger) (*Input, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	mechanism, err := cfg.saslMechanism()
	if err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	cfg.securityWarnings(log)
	// The transport's TLS and SASL settings are also the dialer's.
	in := &Input{cfg: cfg, sink: sink, marks: marks, log: log,
		transport: &kafkago.Transport{DialTimeout: cfg.DialTimeout, IdleTimeout: 30 * time.Second, TLS: tlsCfg, SASL: mechanism}}
	// Fetch requests are routed by the transport's metadata: keep it to
	// the subscribed topics and fresh enough to follow a new leader soon.
	in.transport.MetadataTTL = metadataTTL
	in.transport.MetadataTopics = cfg.Topics
	in.addr = kafkago.TCP(cfg.BrokerList()...)
	in.stats.init()
	in.fetchCtx, in.stopFetch = context.WithCancel(context.Background())
	return in, nil
}

// Consumed returns the number of records handed to the sink.
func (in *Input) Consumed() int64 { return in.consumed.Load() }

// Assigned returns the partitions this member owns now.
func (in *Input) Assigned() []shipper.TopicPartition {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]shipper.TopicPartition(nil), in.assigned...)
}

// Joined reports whether the input is a member of a consumer-group
// generation now, with or without partitions.
func (in *Input) Joined() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.gen != nil
}

// Problem returns why the input is not a member of its consumer group:
// the last error of joining it (a refused login, a certificate that does
// not verify, no broker reachable), or nil once a generation is joined. A
// rebalance in progress is not a problem.
func (in *Input) Problem() error {
	if p := in.problem.Load(); p != nil {
		return *p
	}
	return nil
}

// client returns a kafka-go client over the input's transport.
func (in *Input) client() *kafkago.Client {
	return &kafkago.Client{Addr: in.addr, Timeout: in.cfg.DialTimeout, Transport: in.transport}
}

// isolation returns the configured isolation level.
func (in *Input) isolation() kafkago.IsolationLevel {
	if in.cfg.IsolationLevel == "read_uncommitted" {
		return kafkago.ReadUncommitted
	}
	return kafkago.ReadCommitted
}

// StopFetching stops reading records; it does not wait. Commits continue.
func (in *Input) StopFetching() { in.stopFetch() }

func (in *Input) dialer() *kafkago.Dialer {
	return &kafkago.Dialer{Timeout: in.cfg.DialTimeout, DualStack: true,
		TLS: in.transport.TLS, SASLMechanism: in.transport.SASL}
}

// Run consumes until ctx ends. Before returning it commits what has been
// delivered, leaves the group and waits for every partition reader.
func (in *Input) Run(ctx context.Context) error {
	start := kafkago.FirstOffset
	if in.cfg.StartOffset == "latest" {
		start = kafkago.LastOffset
	}
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID:                in.cfg.GroupID,
		Brokers:           in.cfg.BrokerList(),
		Dialer:            in.dialer(),
		Topics:            in.cfg.Topics,
		SessionTimeout:    in.cfg.SessionTimeout,
		HeartbeatInterval: in.cfg.HeartbeatInterval,
		RebalanceTimeout:  in.cfg.RebalanceTimeout,
		// kafka-go's own watcher gives up on a topic that did not exist
		// when the group was joined; watchTopics covers that case too.
		WatchPartitionChanges: false,
		StartOffset:           start,
		Timeout:               in.cfg.DialTimeout,
		ErrorLogger:           kafkago.LoggerFunc(func(f string, a ...any) { in.log.Warn(fmt.Sprintf(f, a...)) }),
	})
	if err != nil {
		return fmt.Errorf("kafka consumer group: %w", err)
	}

	var wg sync.WaitGroup
	commitCtx, stopCommits := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		in.commitLoop(commitCtx)
	}()

	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			// The group retries joining with its own backoff.
			in.joinFailed(err)
			continue
		}
		in.problem.Store(nil)
		in.startGeneration(gen)
		// Counted after the join, so a topic created meanwhile is seen
		// as a change and triggers one more rebalance rather than none.
		counts, err := in.partitionCounts(ctx)
		if err != nil {
			in.log.Warn("kafka metadata", "err", err)
		}
		gen.Start(func(gctx context.Context) { in.watchTopics(gctx, counts) })
	}

	// Nothing appended after this point could be delivered before the
	// final commit anyway.
	in.stopFetch()
	stopCommits()
	wg.Wait()
	in.mu.Lock()
	s := in.sess
	in.mu.Unlock()
	in.commit(s)
	in.mu.Lock()
	in.gen, in.sess, in.assigned, in.active = nil, nil, nil, nil
	in.mu.Unlock()
	// Close ends the generation, waits for its partition readers and
	// leaves the group, so the partitions move to other members at once.
	if err := cg.Close(); err != nil {
		in.log.Warn("kafka consumer group close", "err", err)
	}
	in.transport.CloseIdleConnections()
	return nil
}

func (in *Input) startGeneration(gen *kafkago.Generation) {
	var assigned []shipper.TopicPartition
	for topic, parts := range gen.Assignments {
		for _, p := range parts {
			assigned = append(assigned, shipper.TopicPartition{Topic: topic, Partition: int32(p.ID)})
		}
	}
	s := newSession(in, gen, in.startOffsets(gen))
	in.mu.Lock()
	in.gen, in.sess, in.assigned, in.active = gen, s, assigned, gen
	in.mu.Unlock()
	in.log.Info("kafka partitions assigned", "generation", gen.ID, "partitions", len(assigned))
	gen.Start(func(gctx context.Context) {
		defer func() {
			in.mu.Lock()
			if in.active == gen {
				in.active = nil
			}
			in.mu.Unlock()
		}()
		ctx, cancel := context.WithCancel(gctx)
		defer cancel()
		stop := context.AfterFunc(in.fetchCtx, cancel)
		defer stop()
		s.run(ctx)
		s.mu.Lock()
		rejoin := s.rejoin
		s.mu.Unlock()
		if rejoin {
			// Returning ends the generation: the group rejoins and
			// the partitions restart from their committed offsets.
			return
		}
		// Fetching stopped (shutdown) or the generation is ending: stay
		// until it ends, then commit what is delivered while this
		// member still owns the partitions: the group is rebalancing
		// and accepts commits of the ending generation.
		<-gctx.Done()
		in.commit(s)
	})
}

// startOffsets chooses where each assigned partition's reader starts: at
// the committed offset, or past it where the sink already holds or has
// delivered records (the commit floor stays the committed offset). A resume
// offset beyond the partition's end (a recreated topic) is ignored.
func (in *Input) startOffsets(gen *kafkago.Generation) map[shipper.TopicPartition]int64 {
	resume := in.marks.ResumeOffsets()
	starts := map[shipper.TopicPartition]int64{}
	ahead := map[string][]kafkago.OffsetRequest{}
	for topic, parts := range gen.Assignments {
		for _, p := range parts {
			tp := shipper.TopicPartition{Topic: topic, Partition: int32(p.ID)}
			starts[tp] = p.Offset
			// Only past a committed offset: a partition without one is
			// new to the group, or of a topic created again (Kafka
			// deletes a topic's offsets with it), and what the buffer
			// holds for it may be of the old topic.
			if r, ok := resume[tp]; ok && p.Offset >= 0 && r > p.Offset {
				ahead[topic] = append(ahead[topic], kafkago.LastOffsetOf(p.ID))
			}
		}
	}
	if len(ahead) == 0 {
		return starts
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.DialTimeout)
	defer cancel()
	client := &kafkago.Client{Addr: kafkago.TCP(in.cfg.BrokerList()...), Timeout: in.cfg.DialTimeout, Transport: in.transport}
	res, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: ahead})
	if err != nil {
		in.log.Warn("kafka list offsets; reading from the committed offsets", "err", err)
		return starts
	}
	for topic, parts := range res.Topics {
		for _, p := range parts {
			tp := shipper.TopicPartition{Topic: topic, Partition: int32(p.Partition)}
			r := resume[tp]
			if p.Error != nil || r > p.LastOffset {
				in.log.Warn("buffered offsets beyond the partition's end; reading from the committed offset",
					"partition", tp.String(), "resume", r, "end", p.LastOffset, "err", p.Error)
				continue
			}
			in.log.Info("resuming after buffered records", "partition", tp.String(), "committed", starts[tp], "resume", r)
			starts[tp] = r
		}
	}
	return starts
}

// partitionCounts returns the number of partitions of each subscribed
// topic; a topic that does not exist counts 0.
func (in *Input) partitionCounts(ctx context.Context) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.DialTimeout)
	defer cancel()
	client := &kafkago.Client{Addr: kafkago.TCP(in.cfg.BrokerList()...), Timeout: in.cfg.DialTimeout, Transport: in.transport}
	res, err := client.Metadata(ctx, &kafkago.MetadataRequest{Topics: in.cfg.Topics})
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(in.cfg.Topics))
	for _, t := range res.Topics {
		if t.Error == nil {
			counts[t.Name] = len(t.Partitions)
		}
	}
	return counts, nil
}

// watchTopics ends the generation, making the group rebalance, when the
// partition count of a subscribed topic changes (a topic created after the
// join, or grown) or an assigned topic was deleted and created again.
// With counts nil (metadata failed at the join), the first successful
// answer is compared with the partitions the group assigned.
func (in *Input) watchTopics(gctx context.Context, counts map[string]int) {
	t := time.NewTicker(in.cfg.TopicRefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-gctx.Done():
			return
		case <-t.C:
		}
		now, err := in.partitionCounts(gctx)
		if err != nil {
			if gctx.Err() == nil {
				in.log.Warn("kafka metadata", "err", err)
			}
			continue
		}
		if counts == nil {
			counts = now
			continue
		}
		for _, topic := range in.cfg.Topics {
			if now[topic] != counts[topic] {
				in.log.Info("kafka topic partitions changed; rejoining the group", "topic", topic,
					"before", counts[topic], "now", now[topic])
				return // ends the generation
			}
		}
		// A topic deleted and created again with as many partitions
		// keeps its counts; its id tells.
		in.mu.Lock()
		s := in.sess
		in.mu.Unlock()
		if s != nil {
			for _, topic := range s.topics() {
				if s.topicReplaced(gctx, topic) {
					return
				}
			}
		}
	}
}

func (in *Input) commitLoop(ctx context.Context) {
	t := time.NewTicker(in.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			in.mu.Lock()
			s := in.sess
			in.mu.Unlock()
			in.commit(s)
		}
	}
}

// commit commits, for every partition of the session's generation, the
// delivered watermark if it is beyond what is committed. Where everything
// this member appended is delivered, that is the fetch position: records
// it passed over without appending (control records, aborted
// transactions, a gap) are committed too.
func (in *Input) commit(s *session) {
	if s == nil {
		return
	}
	in.commitMu.Lock()
	defer in.commitMu.Unlock()
	wm := in.marks.Watermarks()
	offsets := map[string]map[int]int64{}
	s.mu.Lock()
	if s.rejoin {
		// Its offsets may be of a topic deleted since: committing them
		// for the new one would skip its records.
		s.mu.Unlock()
		return
	}
	for tp, ps := range s.parts {
		if ps.next < 0 {
			continue // not resolved yet
		}
		w, ok := wm[tp]
		switch {
		case ok && w < ps.appended:
			// Some record appended is not delivered yet. Below the
			// fetch position, always: after a reset to a lower offset
			// the sink's marks may lie above it.
			w = min(w, ps.next)
		case !ok && (ps.appended != ps.start || ps.resumed):
			continue // the sink knows nothing of what it holds
		default:
			w = ps.next
		}
		if w <= ps.committed {
			continue
		}
		if offsets[tp.Topic] == nil {
			offsets[tp.Topic] = map[int]int64{}
		}
		offsets[tp.Topic][int(tp.Partition)] = w
	}
	topicIDs := s.topicIDs
	s.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	// Kafka takes an offset commit by topic name: committed for a topic
	// deleted and created again since the session started, the old
	// topic's offsets would skip the new one's records. So each commit
	// first checks that every topic still has the id the session read its
	// records under; a topic that does not (or cannot be checked) is left
	// out, and a replaced one ends the session. What remains is the moment
	// between this check and the commit.
	topics := make([]string, 0, len(offsets))
	for t := range offsets {
		topics = append(topics, t)
	}
	now, err := in.topicIDs(context.Background(), topics)
	for _, t := range topics {
		switch {
		case err != nil:
			delete(offsets, t)
		case now[t] != topicIDs[t]:
			delete(offsets, t)
			s.topicReplaced(context.Background(), t)
		}
	}
	if err != nil {
		in.log.Warn("kafka commit skipped: the topics' ids could not be checked", "err", err)
		in.stats.commitErrors.Add(1)
		return
	}
	if len(offsets) == 0 {
		return
	}
	start := time.Now()
	if err := s.gen.CommitOffsets(offsets); err != nil {
		// Typically the generation ended in a rebalance; the records are
		// re-read by the partition's next owner and deduplicated by id.
		in.log.Warn("kafka commit failed", "generation", s.gen.ID, "err", err)
		in.stats.commitErrors.Add(1)
		return
	}
	in.stats.commitDone(time.Since(start))
	s.mu.Lock()
	for topic, parts := range offsets {
		for p, off := range parts {
			s.parts[shipper.TopicPartition{Topic: topic, Partition: int32(p)}].committed = off
		}
	}
	s.mu.Unlock()
}

// headers converts kafka-go's record headers; nil when there are none.
func headers(hs []kafkago.Header) []shipper.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]shipper.Header, len(hs))
	for i, h := range hs {
		out[i] = shipper.Header{Key: h.Key, Value: h.Value}
	}
	return out
}
