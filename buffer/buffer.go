package buffer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/shipper-agent/shipper"
)

// ErrClosed is returned by calls on a closed buffer.
var ErrClosed = errors.New("buffer closed")

// OffsetRange is the span of offsets of one partition held by a chunk.
// Records of a partition are appended in the order they were read, so a
// chunk holds every record read between First and Last.
type OffsetRange struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	First     int64  `json:"first"`
	Last      int64  `json:"last"`
}

// Meta describes a stored chunk. It is stored apart from the chunk's data so
// that opening the buffer reads only metadata.
type Meta struct {
	Seq     uint64 `json:"seq"`
	Records int    `json:"records"`
	// Bytes is the stored size; RawBytes the size before compression.
	Bytes    int64         `json:"bytes"`
	RawBytes int64         `json:"raw_bytes"`
	Created  time.Time     `json:"created"`
	Ranges   []OffsetRange `json:"ranges"`
}

// Chunk is a stored chunk loaded for delivery. Its records alias its data:
// they are valid until the chunk is passed to Ack or Release.
type Chunk struct {
	Meta
	Records []shipper.Record
	mem     int64
}

// DeadLetter is a record that can never be delivered, with the reason.
type DeadLetter struct {
	Record shipper.Record
	Reason string
}

// Stats is a snapshot of the buffer's state.
type Stats struct {
	OpenRecords int   `json:"open_records"`
	MemoryBytes int64 `json:"memory_bytes"`
	MemoryLimit int64 `json:"memory_limit"`
	// MemoryChunks counts chunks in memory: open, being written, loaded.
	MemoryChunks int   `json:"memory_chunks"`
	DiskChunks   int   `json:"disk_chunks"`
	DiskRecords  int64 `json:"disk_records"`
	// DiskBytes is the stored size of undelivered chunks; DiskUsage what
	// the buffer's directory occupies, garbage not yet reclaimed included.
	DiskBytes      int64  `json:"disk_bytes"`
	DiskUsage      int64  `json:"disk_usage"`
	DiskLimit      int64  `json:"disk_limit"`
	FilesystemFree int64  `json:"filesystem_free"`
	InFlightChunks int    `json:"in_flight_chunks"`
	OldestChunkAge string `json:"oldest_chunk_age,omitempty"`
	// OldestChunkSeconds is OldestChunkAge as a number, 0 when empty.
	OldestChunkSeconds float64 `json:"oldest_chunk_seconds"`
	DeadLetters        int64   `json:"dead_letters"`
	Quarantined        int     `json:"quarantined"`
	// Blocked says why appends are waiting, if they are.
	Blocked string `json:"blocked,omitempty"`
	// BlockedSeconds is the total wall time appends have spent waiting.
	BlockedSeconds float64 `json:"blocked_seconds"`
	// AckBlocked says why acknowledgements of delivered chunks wait.
	AckBlocked string `json:"ack_blocked,omitempty"`
	// GCRuns counts value-log files rewritten or removed; GCReclaimed the
	// disk bytes given back.
	GCRuns      int64 `json:"gc_runs"`
	GCReclaimed int64 `json:"gc_reclaimed_bytes"`
}

type entry struct {
	meta     Meta
	inflight bool
}

// Buffer is a disk-backed chunk buffer: records are appended to an open chunk
// in memory, chunks are sealed by size or age and written to badger, and
// delivered in FIFO order until acknowledged. See doc.go for the lifecycle.
type Buffer struct {
	cfg Config
	db  *badger.DB
	log *slog.Logger

	// writeMu serialises sealing and writing, so chunks reach disk in
	// sequence order and at most one sealed chunk waits in memory.
	writeMu sync.Mutex
	// dbWrites is held shared by every badger write and exclusively by GC's
	// DropPrefix, during which badger rejects writes.
	dbWrites sync.RWMutex

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every state change
	open     *chunkWriter
	sealing  *Meta // chunk sealed but not yet durable
	nextSeq  uint64
	nextDead uint64
	memUsed  int64
	chunks   map[uint64]*entry
	order    []uint64 // seqs of stored chunks, ascending
	diskUsed int64
	// lastAppended is the offset of the latest record appended per partition.
	lastAppended map[shipper.TopicPartition]int64
	// quarantined are corrupt chunks set aside; those of this run also
	// pin the watermark (see Watermarks).
	quarantined    []Meta
	quarantinedNow []Meta
	deadLetters    int64
	blocked        string        // why appends wait, "" when they do not
	blockedSince   time.Time     // when appends started waiting
	blockedTotal   time.Duration // wall time appends spent waiting, before blockedSince
	ackBlocked     string        // why acknowledgements wait, "" when they do not
	writeErr       error
	closed         bool

	// Disk accounting refreshed by the maintenance loop.
	diskUsage   int64 // bytes the directory occupies
	fsFree      int64 // free bytes on its filesystem
	freed       int64 // chunk bytes deleted since the last GC
	gcRuns      int64
	gcReclaimed int64
	gcKick      chan struct{}

	// failWrites, set only by tests, fails chunk writes as an unwritable
	// directory would: root, who runs the tests, can write anywhere.
	failWrites func() error

	stop      context.Context // done once the buffer closes
	closeStop context.CancelFunc
	wg        sync.WaitGroup
}

var (
	prefixChunk = []byte("c/")
	prefixMeta  = []byte("m/")
	prefixDead  = []byte("d/")
	prefixQuar  = []byte("q/")
)

func key(prefix []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), seq)
}

// Open opens or creates the buffer in cfg.Dir. Chunks left by a previous run
// become deliverable again; only their metadata is read.
func Open(cfg Config, log *slog.Logger) (*Buffer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("buffer config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := badger.Open(badgerOptions(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", cfg.Dir, err)
	}
	b := &Buffer{
		cfg: cfg, db: db, log: log,
		changed:      make(chan struct{}),
		gcKick:       make(chan struct{}, 1),
		chunks:       make(map[uint64]*entry),
		lastAppended: make(map[shipper.TopicPartition]int64),
	}
	if err := b.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", cfg.Dir, err)
	}
	b.nextSeq = max(b.nextSeq, 1) // 0 means "no chunk" to Flush and WaitDelivered
	b.stop, b.closeStop = context.WithCancel(context.Background())
	b.refreshDisk()
	b.wg.Add(2)
	go b.flushLoop()
	go b.maintainLoop()
	return b, nil
}

// valueLogFileSize is small so that space is reclaimed file by file: value-
// log GC rewrites or removes whole files, and the active one never.
const valueLogFileSize = 16 << 20

// maxMemTableSize caps badger's memtables, which are sized from the
// memory limit.
const maxMemTableSize = 16 << 20

// memTableSize sizes badger's memtables from the memory limit.
func (c Config) memTableSize() int64 {
	return min(max(int64(c.MemoryLimit)/16, 1<<20), maxMemTableSize)
}

// StoreMemory is the memory badger itself holds beyond memory_limit: its
// two memtables, sized from the limit (1/16 each, 1–16 MiB).
func (c Config) StoreMemory() int64 { return 2 * c.memTableSize() }

// badgerOptions sizes badger for a small footprint: its defaults (64 MiB
// memtables × 5, a 256 MiB block cache, 1 GiB value-log files) are for a
// database server. Chunk data goes to the value log; the LSM tree holds only
// keys and metadata, so small memtables suffice.
func badgerOptions(cfg Config, log *slog.Logger) badger.Options {
	memtable := cfg.memTableSize()
	return badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(cfg.SyncWrites).
		WithMemTableSize(memtable).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(memtable / 2).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithCompression(options.None).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(4 << 10).
		WithNumCompactors(2).
		WithDetectConflicts(false).
		WithMetricsEnabled(false)
}

func (b *Buffer) load() error {
	return b.db.View(func(txn *badger.Txn) error {
		err := forEachMeta(txn, prefixMeta, func(key []byte, m Meta, err error) error {
			if err != nil {
				return fmt.Errorf("read chunk metadata %x: %w", key, err)
			}
			b.chunks[m.Seq] = &entry{meta: m}
			b.order = append(b.order, m.Seq)
			b.diskUsed += m.Bytes
			b.nextSeq = max(b.nextSeq, m.Seq+1)
			for _, rg := range m.Ranges {
				tp := shipper.TopicPartition{Topic: rg.Topic, Partition: rg.Partition}
				if last, ok := b.lastAppended[tp]; !ok || rg.Last > last {
					b.lastAppended[tp] = rg.Last
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		// An unreadable quarantine record is skipped: it must not keep the
		// buffer from opening.
		_ = forEachMeta(txn, prefixQuar, func(_ []byte, m Meta, err error) error {
			if err == nil {
				b.quarantined = append(b.quarantined, m)
				b.nextSeq = max(b.nextSeq, m.Seq+1)
			}
			return nil
		})
		// Reading resumes after the last stored record, except that a
		// quarantined chunk's records must be read again from Kafka.
		for _, m := range b.quarantined {
			for _, rg := range m.Ranges {
				tp := shipper.TopicPartition{Topic: rg.Topic, Partition: rg.Partition}
				if last, ok := b.lastAppended[tp]; ok && rg.First-1 < last {
					b.lastAppended[tp] = rg.First - 1
				}
			}
		}
		dit := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDead, Reverse: true})
		defer dit.Close()
		// Reverse iteration seeks to the largest key under the prefix.
		dit.Seek(append(append([]byte(nil), prefixDead...), 0xff))
		if dit.ValidForPrefix(prefixDead) {
			b.nextDead = binary.BigEndian.Uint64(dit.Item().Key()[len(prefixDead):]) + 1
		}
		b.deadLetters = countPrefix(txn, prefixDead)
		return nil
	})
}

// forEachMeta calls fn with every chunk metadata record under prefix, in
// sequence order; err is set when a record does not decode. It stops at the
// first error fn returns.
func forEachMeta(txn *badger.Txn, prefix []byte, fn func(key []byte, m Meta, err error) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var m Meta
		err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &m) })
		if err := fn(it.Item().Key(), m, err); err != nil { // the key is valid until Next
			return err
		}
	}
	return nil
}

func countPrefix(txn *badger.Txn, prefix []byte) int64 {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var n int64
	for it.Rewind(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// notify wakes every waiter; the caller holds b.mu.
func (b *Buffer) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// wait releases b.mu until the state changes, ctx ends or the buffer closes.
// The caller holds b.mu and holds it again on return.
func (b *Buffer) wait(ctx context.Context) error {
	ch := b.changed
	b.mu.Unlock()
	defer b.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop.Done():
		return ErrClosed
	}
}

const recordOverhead = int64(unsafe.Sizeof(shipper.Record{}))

// Append adds a record to the open chunk. It blocks while the memory or disk
// ceiling is reached (back-pressure) and returns when ctx ends or the buffer
// closes. The record's bytes are copied.
func (b *Buffer) Append(ctx context.Context, r *shipper.Record) error {
	size := encodedLen(r)
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.closed {
			return ErrClosed
		}
		if b.open != nil && b.open.records > 0 && len(b.open.buf)+size > int(b.cfg.ChunkSize) {
			b.mu.Unlock()
			err := b.seal(ctx)
			b.mu.Lock()
			if err != nil {
				return err
			}
			continue
		}
		reason := b.appendBlocked(size)
		if reason == "" {
			break
		}
		if err := b.waitBlocked(ctx, reason); err != nil {
			return err
		}
	}
	b.setBlocked("")
	if b.open == nil {
		// The chunk's whole capacity is reserved up front, so the memory
		// ceiling holds without counting reallocations.
		b.open = newChunkWriter(max(int(b.cfg.ChunkSize), size), time.Now())
		b.memUsed += int64(cap(b.open.buf))
	}
	before := cap(b.open.buf)
	b.open.add(r)
	b.memUsed += int64(cap(b.open.buf) - before)
	b.lastAppended[r.TP()] = r.Offset
	return nil
}

// appendBlocked says why a record of the given size cannot be appended now,
// or "" if it can. The caller holds b.mu. Each ceiling admits one unit of
// work when nothing holds it, so a record larger than a chunk still moves.
func (b *Buffer) appendBlocked(size int) string {
	if b.writeErr != nil {
		return "chunk write failing: " + b.writeErr.Error()
	}
	pending := int64(size)
	if b.open != nil {
		pending += int64(len(b.open.buf))
	}
	if r := b.diskBlocked(pending); r != "" {
		return r
	}
	need := int64(0)
	switch {
	case b.open == nil:
		need = int64(max(int(b.cfg.ChunkSize), size) + chunkHeaderLen)
	case len(b.open.buf)+size > cap(b.open.buf):
		need = int64(len(b.open.buf) + size - cap(b.open.buf))
	}
	if need > 0 && b.memUsed > 0 && b.memUsed+need > int64(b.cfg.MemoryLimit) {
		return "memory_limit reached"
	}
	return ""
}

// Flush seals the open chunk and writes it. It returns the sequence number
// of the newest chunk, so WaitDelivered can wait for everything up to now.
// If ctx ends while the disk is full, the chunk stays open.
func (b *Buffer) Flush(ctx context.Context) uint64 {
	_ = b.seal(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nextSeq - 1
}

// seal moves the open chunk to disk. It first waits, as long as ctx allows,
// for disk room; a write that then fails (full filesystem, unwritable
// directory) is retried until it succeeds or the buffer closes, while the
// chunk stays in memory and appends block on it. A chunk that is never
// written keeps holding back the watermark of its partitions, so its
// records are never committed upstream.
func (b *Buffer) seal(ctx context.Context) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	b.mu.Lock()
	for b.open != nil && b.open.records > 0 {
		b.refreshFree()
		reason := b.diskBlocked(int64(len(b.open.buf)))
		if reason == "" {
			break
		}
		if err := b.waitBlocked(ctx, reason); err != nil {
			b.mu.Unlock()
			return err
		}
	}
	w := b.open
	if w == nil || w.records == 0 {
		b.mu.Unlock()
		return nil
	}
	b.open = nil
	seq := b.nextSeq
	b.nextSeq++
	b.sealing = &Meta{Seq: seq, Ranges: w.rangeList()} // pins the watermark meanwhile
	b.mu.Unlock()

	// Compression runs outside the lock; its output counts as memory too.
	data, meta := w.seal(seq, b.cfg.Compression == "zstd")
	held := int64(cap(w.buf))
	if b.cfg.Compression == "zstd" {
		held += int64(cap(data))
	}
	b.mu.Lock()
	b.memUsed += held - int64(cap(w.buf))
	b.sealing = &meta
	b.mu.Unlock()

	backoff := 100 * time.Millisecond
	for {
		err := b.write(data, meta)
		b.mu.Lock()
		if err == nil {
			b.sealing = nil
			if b.writeErr != nil {
				b.log.Info("chunk writes recovered", "seq", seq)
				b.writeErr = nil
				b.setBlocked("")
			}
			b.chunks[seq] = &entry{meta: meta}
			b.order = append(b.order, seq)
			b.diskUsed += meta.Bytes
			b.memUsed -= held
			b.notify()
			b.mu.Unlock()
			return nil
		}
		if b.closed {
			// b.sealing stays set: its ranges pin the watermark.
			b.mu.Unlock()
			return ErrClosed
		}
		if b.writeErr == nil {
			b.log.Error("chunk write failed; retrying", "seq", seq, "bytes", meta.Bytes, "err", err)
		}
		b.writeErr = err
		// The appender that sealed waits here, so the reason is set here.
		b.setBlocked("chunk write failing: " + err.Error())
		b.notify()
		b.mu.Unlock()
		select {
		case <-b.stop.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// update runs a write transaction, never concurrently with GC's DropPrefix.
func (b *Buffer) update(fn func(*badger.Txn) error) error {
	b.dbWrites.RLock()
	defer b.dbWrites.RUnlock()
	return b.db.Update(fn)
}

func (b *Buffer) write(data []byte, m Meta) error {
	if b.failWrites != nil {
		if err := b.failWrites(); err != nil {
			return err
		}
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.update(func(txn *badger.Txn) error {
		if err := txn.Set(key(prefixChunk, m.Seq), data); err != nil {
			return err
		}
		return txn.Set(key(prefixMeta, m.Seq), mj)
	})
}

// flushLoop seals the open chunk once it is FlushInterval old.
func (b *Buffer) flushLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(max(b.cfg.FlushInterval/4, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-b.stop.Done():
			return
		case now := <-tick.C:
			b.mu.Lock()
			due := b.open != nil && b.open.records > 0 && now.Sub(b.open.created) >= b.cfg.FlushInterval
			b.mu.Unlock()
			if due {
				_ = b.seal(b.stop)
			}
		}
	}
}

// Next returns the oldest stored chunk that is not in flight, loading it
// into memory. It blocks until one exists and memory allows, or ctx ends.
// The caller must pass the chunk to Ack or Release.
func (b *Buffer) Next(ctx context.Context) (*Chunk, error) {
	for {
		b.mu.Lock()
		var e *entry
		for {
			if b.closed {
				b.mu.Unlock()
				return nil, ErrClosed
			}
			if err := ctx.Err(); err != nil {
				// Checked before handing out a chunk, not only while
				// waiting: a stopping worker must not take another.
				b.mu.Unlock()
				return nil, err
			}
			e = b.firstIdle()
			if e != nil && (b.memUsed == 0 || b.memUsed+b.chunkMem(e.meta) <= int64(b.cfg.MemoryLimit)) {
				break
			}
			if err := b.wait(ctx); err != nil {
				b.mu.Unlock()
				return nil, err
			}
		}
		e.inflight = true
		mem := b.chunkMem(e.meta)
		b.memUsed += mem
		b.mu.Unlock()

		c, err := b.load1(e.meta, mem)
		if err == nil {
			return c, nil
		}
		b.mu.Lock()
		b.memUsed -= mem
		if errors.Is(err, ErrCorrupt) {
			b.quarantine(e.meta, err)
		} else {
			e.inflight = false
		}
		b.notify()
		b.mu.Unlock()
		if !errors.Is(err, ErrCorrupt) {
			return nil, err
		}
	}
}

// chunkMem is the memory a loaded chunk holds: its stored bytes, their
// decompressed copy if compressed, and the decoded record headers.
func (b *Buffer) chunkMem(m Meta) int64 {
	mem := m.Bytes + int64(m.Records)*recordOverhead
	if m.RawBytes > m.Bytes {
		mem += m.RawBytes
	}
	return mem
}

func (b *Buffer) firstIdle() *entry {
	for _, seq := range b.order {
		if e := b.chunks[seq]; !e.inflight {
			return e
		}
	}
	return nil
}

func (b *Buffer) load1(m Meta, mem int64) (*Chunk, error) {
	var data []byte
	err := b.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(key(prefixChunk, m.Seq))
		if err != nil {
			return err
		}
		data, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: chunk %d: data missing", ErrCorrupt, m.Seq)
	}
	if err != nil {
		return nil, fmt.Errorf("load chunk %d: %w", m.Seq, err)
	}
	recs, err := decodeChunk(data, m.Records)
	if err != nil {
		return nil, fmt.Errorf("chunk %d: %w", m.Seq, err)
	}
	return &Chunk{Meta: m, Records: recs, mem: mem}, nil
}

// quarantine sets a corrupt chunk aside: its metadata moves to the
// quarantine prefix and its data stays for inspection. Its offset ranges
// keep holding back the Kafka commit, so its records are not acknowledged
// upstream. The caller holds b.mu.
func (b *Buffer) quarantine(m Meta, cause error) {
	b.log.Error("quarantining corrupt chunk", "seq", m.Seq, "records", m.Records, "err", cause)
	mj, _ := json.Marshal(m)
	err := b.update(func(txn *badger.Txn) error {
		if err := txn.Delete(key(prefixMeta, m.Seq)); err != nil {
			return err
		}
		return txn.Set(key(prefixQuar, m.Seq), mj)
	})
	if err != nil {
		b.log.Error("recording quarantine failed", "seq", m.Seq, "err", err)
	}
	b.removeLocked(m.Seq)
	b.quarantined = append(b.quarantined, m)
	b.quarantinedNow = append(b.quarantinedNow, m)
}

func (b *Buffer) removeLocked(seq uint64) {
	e, ok := b.chunks[seq]
	if !ok {
		return
	}
	delete(b.chunks, seq)
	if i := slices.Index(b.order, seq); i >= 0 {
		b.order = slices.Delete(b.order, i, i+1)
	}
	b.diskUsed -= e.meta.Bytes
}

// Ack deletes a delivered chunk, storing its dead letters in the same
// transaction so a record is either in the dead-letter store or still in
// its chunk, never neither.
func (b *Buffer) Ack(c *Chunk, dead []DeadLetter) error {
	if err := b.waitAckRoom(); err != nil {
		return fmt.Errorf("ack chunk %d: %w", c.Seq, err)
	}
	b.mu.Lock()
	firstDead := b.nextDead
	b.nextDead += uint64(len(dead))
	b.mu.Unlock()
	err := b.update(func(txn *badger.Txn) error {
		for i, d := range dead {
			v, err := json.Marshal(deadLetterJSON(d))
			if err != nil {
				return err
			}
			if err := txn.Set(key(prefixDead, firstDead+uint64(i)), v); err != nil {
				return err
			}
		}
		if err := txn.Delete(key(prefixChunk, c.Seq)); err != nil {
			return err
		}
		return txn.Delete(key(prefixMeta, c.Seq))
	})
	if err != nil {
		return fmt.Errorf("ack chunk %d: %w", c.Seq, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removeLocked(c.Seq)
	b.memUsed -= c.mem
	b.deadLetters += int64(len(dead))
	b.freed += c.Bytes
	if b.freed >= valueLogFileSize {
		b.kickGC()
	}
	b.notify()
	return nil
}

// Release returns an undelivered chunk to the buffer; it will be handed out
// again by Next.
func (b *Buffer) Release(c *Chunk) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.chunks[c.Seq]; ok {
		e.inflight = false
	}
	b.memUsed -= c.mem
	b.notify()
}

// WaitDelivered blocks until every chunk with a sequence number up to seq
// has been acknowledged, or ctx ends.
func (b *Buffer) WaitDelivered(ctx context.Context, seq uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		pending := (b.sealing != nil && b.sealing.Seq <= seq) || (len(b.order) > 0 && b.order[0] <= seq)
		if !pending {
			return nil
		}
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
}

// Watermarks returns, per partition, the offset below which every record
// appended to this buffer has been delivered: the first offset of the oldest
// undelivered chunk holding the partition, or the latest appended offset + 1
// when no undelivered chunk holds it. Committing it to Kafka never skips an
// undelivered record, because each partition's records are appended in the
// order they are read, starting at the committed offset.
func (b *Buffer) Watermarks() map[shipper.TopicPartition]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	wm := make(map[shipper.TopicPartition]int64, len(b.lastAppended))
	lower := func(rg OffsetRange) {
		tp := shipper.TopicPartition{Topic: rg.Topic, Partition: rg.Partition}
		if cur, ok := wm[tp]; !ok || rg.First < cur {
			wm[tp] = rg.First
		}
	}
	for _, e := range b.chunks {
		for _, rg := range e.meta.Ranges {
			lower(rg)
		}
	}
	// A chunk quarantined in this run holds its records back from the
	// commit, so the next run re-reads them from Kafka. One quarantined in
	// an earlier run no longer does: that run never committed past it, so
	// this run started at or below it and re-read its records already.
	for _, m := range b.quarantinedNow {
		for _, rg := range m.Ranges {
			lower(rg)
		}
	}
	if b.sealing != nil {
		for _, rg := range b.sealing.Ranges {
			lower(rg)
		}
	}
	if b.open != nil {
		for _, rg := range b.open.ranges {
			lower(*rg)
		}
	}
	for tp, off := range b.lastAppended {
		if _, ok := wm[tp]; !ok {
			wm[tp] = off + 1
		}
	}
	return wm
}

// ResumeOffsets returns, per partition, the offset after the last record
// this buffer holds or has delivered: a consumer can start reading there
// rather than at its committed offset, instead of buffering again what the
// buffer has. After a restart it is the offset after the last stored
// record: chunks reach disk in order and a partition's records are appended
// in order, so every record between the committed offset and that one is
// stored or delivered (the open chunk lost in a crash lies above it). A
// chunk quarantined in an earlier run lowers it to the chunk's first
// offset, so its records are read again.
func (b *Buffer) ResumeOffsets() map[shipper.TopicPartition]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[shipper.TopicPartition]int64, len(b.lastAppended))
	for tp, last := range b.lastAppended {
		out[tp] = last + 1
	}
	return out
}

// Stats returns a snapshot of the buffer's state.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Stats{
		MemoryBytes: b.memUsed, MemoryLimit: int64(b.cfg.MemoryLimit),
		DiskChunks: len(b.order), DiskBytes: b.diskUsed, DiskUsage: b.diskUsage, DiskLimit: int64(b.cfg.DiskLimit),
		FilesystemFree: b.fsFree, DeadLetters: b.deadLetters, Quarantined: len(b.quarantined),
		Blocked: b.blocked, BlockedSeconds: b.blockedTotal.Seconds(), AckBlocked: b.ackBlocked,
		GCRuns: b.gcRuns, GCReclaimed: b.gcReclaimed,
	}
	if b.blocked != "" {
		s.BlockedSeconds += time.Since(b.blockedSince).Seconds()
	}
	if b.open != nil {
		s.OpenRecords = b.open.records
		s.MemoryChunks++
	}
	if b.sealing != nil {
		s.MemoryChunks++
	}
	for _, e := range b.chunks {
		s.DiskRecords += int64(e.meta.Records)
		if e.inflight {
			s.InFlightChunks++
			s.MemoryChunks++
		}
	}
	if len(b.order) > 0 {
		age := time.Since(b.chunks[b.order[0]].meta.Created)
		s.OldestChunkAge = age.Round(time.Millisecond).String()
		s.OldestChunkSeconds = age.Seconds()
	}
	return s
}

// Close seals and writes the open chunk, stops background work and closes
// the store. Chunks not yet delivered stay on disk for the next Open. Close
// is safe to call more than once.
func (b *Buffer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	// Closing first wakes a seal blocked on a full disk, so Close never
	// hangs; the final seal below then writes the open chunk if it can.
	// What it cannot write was never acknowledged upstream.
	b.closed = true
	b.closeStop()
	b.notify()
	b.mu.Unlock()
	b.wg.Wait()
	_ = b.seal(context.Background())
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	return b.db.Close()
}

type deadLetterRecord struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"`
	Key       []byte    `json:"key,omitempty"`
	Value     []byte    `json:"value"`
	Reason    string    `json:"reason"`
	Stored    time.Time `json:"stored"`
}

func deadLetterJSON(d DeadLetter) deadLetterRecord {
	r := d.Record
	return deadLetterRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Time: r.Time,
		Key: r.Key, Value: r.Value, Reason: d.Reason, Stored: time.Now().UTC()}
}

// DeadLetters calls fn for every stored dead letter, oldest first.
func (b *Buffer) DeadLetters(fn func(DeadLetter) error) error {
	return b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDead, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var d deadLetterRecord
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
				return err
			}
			if err := fn(DeadLetter{Reason: d.Reason, Record: shipper.Record{Topic: d.Topic, Partition: d.Partition,
				Offset: d.Offset, Time: d.Time, Key: d.Key, Value: d.Value}}); err != nil {
				return err
			}
		}
		return nil
	})
}

func sortRanges(r []OffsetRange) {
	slices.SortFunc(r, func(a, b OffsetRange) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition) - int(b.Partition)
	})
}

// badgerLogger routes badger's logging to slog; its info chatter is debug.
type badgerLogger struct{ l *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.l.Error(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.l.Warn(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.l.Debug(fmt.Sprintf(f, a...), "component", "badger")
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.l.Debug(fmt.Sprintf(f, a...), "component", "badger")
}
