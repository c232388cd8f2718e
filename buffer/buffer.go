package buffer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"

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
	// Pieces is the number of values the data is stored in (pieces.go);
	// 0 in metadata written before chunks were split, meaning 1.
	Pieces int `json:"pieces,omitempty"`
}

// Chunk is a stored chunk loaded for delivery. Its records alias its data:
// they are valid until the chunk is passed to Ack or Release.
type Chunk struct {
	Meta
	Records []shipper.Record
	mem     int64
}

// Stats is a snapshot of the buffer's state.
type Stats struct {
	OpenRecords int `json:"open_records"`
	// SealedRecords are records of the sealed chunk not yet written to
	// disk (the write is under way, or failing).
	SealedRecords int   `json:"sealed_records"`
	MemoryBytes   int64 `json:"memory_bytes"`
	MemoryLimit   int64 `json:"memory_limit"`
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
	// DeadLetters is the number of entries in the dead-letter store;
	// DeadLetter describes the store.
	DeadLetters int64           `json:"dead_letters"`
	DeadLetter  DeadLetterStats `json:"dead_letter"`
	Quarantined int             `json:"quarantined"`
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

// sealedChunk is a chunk taken out of the open slot, waiting for, or in,
// its write to disk.
type sealedChunk struct {
	w    *chunkWriter
	meta Meta   // its ranges pin the watermark until the chunk is stored
	data []byte // the encoded value, once encoded
	held int64  // memory it holds, counted in memUsed
}

// Buffer is a disk-backed chunk buffer: records are appended to an open chunk
// in memory, chunks are sealed by size or age and written to badger, and
// delivered in FIFO order until acknowledged. See doc.go for the lifecycle.
type Buffer struct {
	cfg Config
	db  *badger.DB
	log *slog.Logger

	// dbWrites is held shared by every badger write and exclusively by GC's
	// DropPrefix, during which badger rejects writes.
	dbWrites sync.RWMutex
	dlq      *DeadLetterStore

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	open    *chunkWriter
	// sealed is the one chunk between the open slot and the disk. Only
	// the write loop writes it, so chunks reach disk in sequence order.
	sealed    *sealedChunk
	writeKick chan struct{} // wakes the write loop when a chunk is sealed
	nextSeq   uint64
	memUsed   int64
	chunks    map[uint64]*entry
	order     []uint64 // seqs of stored chunks, ascending
	diskUsed  int64
	// lastAppended is the offset of the latest record appended per partition.
	lastAppended map[shipper.TopicPartition]int64
	// quarantined are corrupt chunks set aside; those of this run also
	// pin the watermark (see Watermarks).
	quarantined    []Meta
	quarantinedNow []Meta
	blocked        string        // why appends wait, "" when they do not
	blockedSince   time.Time     // when appends started waiting
	blockedTotal   time.Duration // wall time appends spent waiting, before blockedSince
	ackBlocked     string        // why acknowledgements wait, "" when they do not
	writeErr       error         // the last chunk write's failure, nil once one succeeds
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
	if err := cfg.DeadLetter.Validate(cfg.DiskLimit); err != nil {
		return nil, fmt.Errorf("dead_letter config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := removeEmptyValueLogs(cfg.Dir, log); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", cfg.Dir, err)
	}
	db, err := badger.Open(badgerOptions(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", cfg.Dir, err)
	}
	b := &Buffer{
		cfg: cfg, db: db, log: log,
		changed:      make(chan struct{}),
		gcKick:       make(chan struct{}, 1),
		writeKick:    make(chan struct{}, 1),
		chunks:       make(map[uint64]*entry),
		lastAppended: make(map[shipper.TopicPartition]int64),
	}
	if err := b.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", cfg.Dir, err)
	}
	b.nextSeq = max(b.nextSeq, 1) // 0 means "no chunk" to Flush and WaitDelivered
	b.stop, b.closeStop = context.WithCancel(context.Background())
	b.dlq, err = newDeadLetterStore(db, &b.dbWrites, cfg.DeadLetter, cfg.DiskLimit, log, b.stop)
	if err != nil {
		b.closeStop()
		db.Close()
		return nil, fmt.Errorf("open dead-letter store in %s: %w", cfg.Dir, err)
	}
	b.refreshDisk()
	b.wg.Add(2)
	go b.writeLoop()
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
		// Dead letters are keyed by chunk sequence numbers: new chunks
		// must not reuse one, or their dead letters would replace others.
		dit := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDead, Reverse: true})
		defer dit.Close()
		// Reverse iteration seeks to the largest key under the prefix.
		dit.Seek(append(append([]byte(nil), prefixDead...), 0xff))
		if dit.ValidForPrefix(prefixDead) {
			if k := dit.Item().Key()[len(prefixDead):]; len(k) >= 8 {
				b.nextSeq = max(b.nextSeq, binary.BigEndian.Uint64(k)+1)
			}
		}
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
			if err := b.sealLocked(ctx); err != nil {
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
	if len(b.quarantinedNow) > 0 {
		b.rereading(r.TP(), r.Offset)
	}
	return nil
}

// rereading releases the ranges of this run's quarantined chunks that a
// partition read again from offset (or below) covers: the chunks now being
// filled hold those records back from the commit instead. The caller holds
// b.mu.
func (b *Buffer) rereading(tp shipper.TopicPartition, offset int64) {
	for i := range b.quarantinedNow {
		m := &b.quarantinedNow[i]
		m.Ranges = slices.DeleteFunc(slices.Clone(m.Ranges), func(rg OffsetRange) bool {
			return rg.Topic == tp.Topic && rg.Partition == tp.Partition && rg.First >= offset
		})
	}
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

// Flush seals the open chunk and waits until it is written. It returns the
// sequence number of the newest chunk, so WaitDelivered can wait for
// everything up to now. It returns early, with ctx's error, when ctx ends
// first (the disk is full, or writes fail): the records stay buffered and
// are written later.
func (b *Buffer) Flush(ctx context.Context) (uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.sealLocked(ctx); err != nil {
		return b.nextSeq - 1, err
	}
	for b.sealed != nil {
		if b.closed {
			return b.nextSeq - 1, ErrClosed
		}
		if err := b.wait(ctx); err != nil {
			return b.nextSeq - 1, err
		}
	}
	return b.nextSeq - 1, nil
}

// sealLocked moves the open chunk to the sealed slot, for the write loop to
// write. It waits, as long as ctx allows, for the slot (the previous chunk
// is still being written) and for disk room. The caller holds b.mu, which
// is released while waiting.
func (b *Buffer) sealLocked(ctx context.Context) error {
	for b.open != nil && b.open.records > 0 {
		if b.closed {
			return ErrClosed
		}
		if b.sealed != nil {
			// One chunk waits for the disk at a time: appends stop here
			// while writes fail, and memory holds at most two chunks
			// that are not on disk.
			if b.writeErr != nil {
				if err := b.waitBlocked(ctx, "chunk write failing: "+b.writeErr.Error()); err != nil {
					return err
				}
			} else if err := b.wait(ctx); err != nil {
				return err
			}
			continue
		}
		b.refreshFree()
		if reason := b.diskBlocked(int64(len(b.open.buf))); reason != "" {
			if err := b.waitBlocked(ctx, reason); err != nil {
				return err
			}
			continue
		}
		b.sealNowLocked()
		return nil
	}
	return nil
}

// sealNowLocked moves the open chunk to the empty sealed slot and wakes the
// write loop. The caller holds b.mu.
func (b *Buffer) sealNowLocked() {
	w := b.open
	b.open = nil
	seq := b.nextSeq
	b.nextSeq++
	b.sealed = &sealedChunk{w: w, meta: Meta{Seq: seq, Ranges: w.rangeList()}, held: int64(cap(w.buf))}
	select {
	case b.writeKick <- struct{}{}:
	default:
	}
	b.notify()
}

// writeLoop owns chunk writes: it writes the sealed chunk, retrying a
// failed write with backoff until it succeeds or the buffer closes, and it
// seals the open chunk once it is flush_interval old.
func (b *Buffer) writeLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(max(b.cfg.FlushInterval/4, 5*time.Millisecond))
	defer tick.Stop()
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	var retry <-chan time.Time
	for {
		select {
		case <-b.stop.Done():
			return
		case now := <-tick.C:
			b.mu.Lock()
			if b.sealed == nil && b.open != nil && b.open.records > 0 && now.Sub(b.open.created) >= b.cfg.FlushInterval {
				b.refreshFree()
				if b.diskBlocked(int64(len(b.open.buf))) == "" {
					b.sealNowLocked()
				}
			}
			b.mu.Unlock()
		case <-b.writeKick:
		case <-retry:
			retry = nil
		}
		if retry != nil {
			continue // backing off after a failed write
		}
		if err := b.writeSealed(); err != nil {
			retry = time.After(backoff)
			backoff = min(2*backoff, maxBackoff)
		} else {
			backoff = minBackoff
		}
	}
}

// writeSealed writes the sealed chunk, if there is one. On failure the
// chunk stays sealed, in memory, holding back its partitions' watermarks,
// so its records are never committed upstream.
func (b *Buffer) writeSealed() error {
	b.mu.Lock()
	s := b.sealed
	b.mu.Unlock()
	if s == nil {
		return nil
	}
	if s.data == nil {
		// Encoding and compression run outside the lock; a compressed
		// copy counts as memory too.
		data, meta := s.w.seal(s.meta.Seq, b.cfg.Compression == "zstd")
		meta.Pieces = pieceCount(meta.Bytes)
		b.mu.Lock()
		s.data, s.meta = data, meta
		if b.cfg.Compression == "zstd" {
			s.held += int64(cap(data))
			b.memUsed += int64(cap(data))
		}
		b.mu.Unlock()
	}
	err := b.write(s.data, s.meta)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		if b.writeErr == nil {
			b.log.Error("chunk write failed; retrying", "seq", s.meta.Seq, "bytes", s.meta.Bytes, "err", err)
		}
		b.writeErr = err
		b.notify()
		return err
	}
	b.sealed = nil
	if b.writeErr != nil {
		b.log.Info("chunk writes recovered", "seq", s.meta.Seq)
		b.writeErr = nil
		b.setBlocked("")
	}
	b.chunks[s.meta.Seq] = &entry{meta: s.meta}
	b.order = append(b.order, s.meta.Seq)
	b.diskUsed += s.meta.Bytes
	b.memUsed -= s.held
	b.notify()
	return nil
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
		if _, err := setPieces(txn, key(prefixChunk, m.Seq), data); err != nil {
			return err
		}
		return txn.Set(key(prefixMeta, m.Seq), mj)
	})
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
		var err error
		data, err = getPieces(txn, key(prefixChunk, m.Seq), m.Pieces, make([]byte, 0, m.Bytes))
		return err
	})
	if errors.Is(err, errMissing) {
		return nil, fmt.Errorf("%w: chunk %d: %v", ErrCorrupt, m.Seq, err)
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

// Ack deletes a delivered chunk. Its dead letters, the records that cannot
// be indexed, are stored first: a record is in its chunk, in the
// dead-letter store, or in both after a crash between the two steps (the
// chunk is then delivered again and its dead letters stored again under
// the same keys), never in neither. Ack waits, as long as ctx allows, for
// room on the filesystem and in the dead-letter store; on error the chunk
// stays in flight and the caller should Release it.
func (b *Buffer) Ack(ctx context.Context, c *Chunk, dead []DeadLetter) error {
	if err := b.waitAckRoom(ctx); err != nil {
		return fmt.Errorf("ack chunk %d: %w", c.Seq, err)
	}
	if len(dead) > 0 {
		entries, err := c.deadEntries(dead)
		if err != nil {
			return fmt.Errorf("ack chunk %d: %w", c.Seq, err)
		}
		if err := b.dlq.put(ctx, entries); err != nil {
			return fmt.Errorf("ack chunk %d: store %d dead letters: %w", c.Seq, len(dead), err)
		}
	}
	err := b.update(func(txn *badger.Txn) error {
		if err := deletePieces(txn, key(prefixChunk, c.Seq), c.Pieces); err != nil {
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
	b.freed += c.Bytes
	if b.freed >= valueLogFileSize {
		b.kickGC()
	}
	b.notify()
	return nil
}

// deadEntries keys the chunk's dead letters by the chunk and each record's
// position in it, so storing them twice stores each once.
func (c *Chunk) deadEntries(dead []DeadLetter) ([]keyed, error) {
	type pos struct {
		tp  shipper.TopicPartition
		off int64
	}
	index := make(map[pos]uint32, len(c.Records))
	for i := range c.Records {
		index[pos{c.Records[i].TP(), c.Records[i].Offset}] = uint32(i)
	}
	now := time.Now().UTC()
	out := make([]keyed, len(dead))
	for i, d := range dead {
		idx, ok := index[pos{d.Record.TP(), d.Record.Offset}]
		if !ok {
			return nil, fmt.Errorf("dead letter %s is not a record of the chunk", d.Record.DocumentID())
		}
		if d.Stored.IsZero() {
			d.Stored = now
		}
		out[i] = keyed{key: deadKey(c.Seq, idx), data: encodeDeadLetter(d)}
	}
	return out, nil
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
		pending := (b.sealed != nil && b.sealed.meta.Seq <= seq) || (len(b.order) > 0 && b.order[0] <= seq)
		if !pending {
			return nil
		}
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
}

// PendingUpTo returns the chunks with a sequence number up to seq that are
// not acknowledged yet, and their records: what a flush that sealed seq
// still waits for. (0, 0) means everything up to seq was delivered.
func (b *Buffer) PendingUpTo(seq uint64) (chunks int, records int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sealed != nil && b.sealed.meta.Seq <= seq {
		chunks, records = 1, int64(b.sealed.w.records)
	}
	for _, s := range b.order {
		if s > seq {
			break
		}
		chunks++
		records += int64(b.chunks[s].meta.Records)
	}
	return chunks, records
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
	if b.sealed != nil {
		for _, rg := range b.sealed.meta.Ranges {
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
// chunk quarantined, in an earlier run or in this one, lowers it to the
// chunk's first offset, so its records are read again; once they are
// appended again the chunk no longer holds the commit back (Watermarks).
func (b *Buffer) ResumeOffsets() map[shipper.TopicPartition]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[shipper.TopicPartition]int64, len(b.lastAppended))
	for tp, last := range b.lastAppended {
		out[tp] = last + 1
	}
	// A chunk quarantined in this run: its records are read again.
	for _, m := range b.quarantinedNow {
		for _, rg := range m.Ranges {
			tp := shipper.TopicPartition{Topic: rg.Topic, Partition: rg.Partition}
			if cur, ok := out[tp]; ok && rg.First < cur {
				out[tp] = rg.First
			}
		}
	}
	return out
}

// Stats returns a snapshot of the buffer's state.
func (b *Buffer) Stats() Stats {
	dl := b.dlq.Stats()
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Stats{
		MemoryBytes: b.memUsed, MemoryLimit: int64(b.cfg.MemoryLimit),
		DiskChunks: len(b.order), DiskBytes: b.diskUsed, DiskUsage: b.diskUsage, DiskLimit: int64(b.cfg.DiskLimit),
		FilesystemFree: b.fsFree, DeadLetters: dl.Entries, DeadLetter: dl, Quarantined: len(b.quarantined),
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
	if b.sealed != nil {
		s.MemoryChunks++
		s.SealedRecords = b.sealed.w.records
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

// DeadLetters returns the dead-letter store, which lives in the buffer's
// directory and closes with it.
func (b *Buffer) DeadLetters() *DeadLetterStore { return b.dlq }

// Close stops background work, writes what is sealed and the open chunk
// once each if the disk has room, and closes the store. It does not wait
// for space or retry a failed write: what it cannot write was never
// acknowledged upstream and is read again from Kafka. Chunks not yet
// delivered stay on disk for the next Open. Close is safe to call more
// than once.
func (b *Buffer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	// Closing first wakes every waiter (appends, seals, flushes, acks).
	b.closed = true
	b.closeStop()
	b.notify()
	b.mu.Unlock()
	b.wg.Wait()

	if err := b.writeSealed(); err != nil {
		b.log.Warn("closing: a sealed chunk could not be written; its records are read again from Kafka", "err", err)
	} else {
		b.mu.Lock()
		b.refreshFree()
		write := b.open != nil && b.open.records > 0 && b.diskBlocked(int64(len(b.open.buf))) == ""
		if write {
			b.sealNowLocked()
		}
		b.mu.Unlock()
		if write {
			if err := b.writeSealed(); err != nil {
				b.log.Warn("closing: the open chunk could not be written; its records are read again from Kafka", "err", err)
			}
		}
	}
	return b.db.Close()
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
	l.l.Error(fmt.Sprintf(f, a...), "library", "badger")
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.l.Warn(fmt.Sprintf(f, a...), "library", "badger")
}
func (l badgerLogger) Infof(f string, a ...any) {
	l.l.Debug(fmt.Sprintf(f, a...), "library", "badger")
}
func (l badgerLogger) Debugf(f string, a ...any) {
	l.l.Debug(fmt.Sprintf(f, a...), "library", "badger")
}

// removeEmptyValueLogs deletes value-log files of zero bytes in dir. A kill
// -9 between badger creating such a file and writing its header leaves it
// empty, and badger then refuses to open the directory ("Open existing
// file ... Create a new file"): the agent could never start again. An empty
// file holds no value, so nothing is lost; badger creates the next one.
//
// It does so only while holding the lock badger itself takes (flock on the
// directory): a file in a directory another process has open may be that
// process's, created an instant ago, and removing it would lose what it
// writes next. A directory in use is left as it is; badger's own lock then
// refuses the open with its error.
func removeEmptyValueLogs(dir string, log *slog.Logger) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a new buffer
	}
	if err != nil {
		return err
	}
	defer d.Close() // releases the lock
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return err
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove empty value log: %w", err)
		}
		log.Warn("removed an empty value-log file left by a crash", "component", "buffer", "file", p)
	}
	return nil
}
