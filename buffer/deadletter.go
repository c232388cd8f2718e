package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/shipper-agent/shipper"
)

// DeadLetter is a record that cannot be indexed as it is, with why.
type DeadLetter struct {
	// ID names the entry in the store ("<chunk seq>.<index>"); set by the
	// store, ignored when storing.
	ID     string         `json:"id"`
	Record shipper.Record `json:"-"`
	// Type classifies the reason: Elasticsearch's error type
	// ("mapper_parsing_exception") or shipper's own code
	// ("request_too_large", "invalid_utf8", "tombstone").
	Type string `json:"type"`
	// Reasons are the distinct reasons seen, oldest first; at most
	// MaxReasons are kept.
	Reasons []string `json:"reasons"`
	// Attempts is how many times the record was sent to Elasticsearch.
	Attempts int `json:"attempts"`
	// Stored is when the entry was first stored (UTC).
	Stored time.Time `json:"stored"`
	// Size is the record's value size in bytes.
	Size int `json:"size"`
	// Truncated is set when List cut the value short (DeadLetterQuery.MaxValueBytes).
	Truncated bool `json:"truncated,omitempty"`
}

// MaxReasons bounds the reasons a dead letter keeps: a record retried many
// times keeps its first distinct reasons, not every attempt's.
const MaxReasons = 8

// AddReason appends reason to reasons unless it is already there or the
// list is full.
func AddReason(reasons []string, reason string) []string {
	if reason == "" || len(reasons) >= MaxReasons {
		return reasons
	}
	for _, r := range reasons {
		if r == reason {
			return reasons
		}
	}
	return append(reasons, reason)
}

// DeadLetterConfig configures the dead-letter store.
type DeadLetterConfig struct {
	// MaxBytes bounds the store's size. It lives in the buffer's directory,
	// so it counts toward buffer.disk_limit: at most half of it. Default
	// 0: a tenth of buffer.disk_limit (1GiB with the default disk_limit).
	MaxBytes shipper.ByteSize `hcl:"max_bytes,optional"`
	// WhenFull is what happens to a new dead letter when the store is full:
	// "drop_oldest" deletes the oldest entries (counted and logged);
	// "block" makes deliveries wait until an operator replays or purges
	// entries (the Kafka input pauses once the buffer fills). Default
	// "drop_oldest".
	WhenFull string `hcl:"when_full,optional"`
}

// DefaultDeadLetterConfig returns the defaults documented on DeadLetterConfig.
func DefaultDeadLetterConfig() DeadLetterConfig {
	return DeadLetterConfig{WhenFull: "drop_oldest"}
}

// limit is the store's effective size bound.
func (c DeadLetterConfig) limit(diskLimit shipper.ByteSize) shipper.ByteSize {
	if c.MaxBytes == 0 {
		return diskLimit / 10
	}
	return c.MaxBytes
}

// Validate reports every invalid setting; diskLimit is buffer.disk_limit.
func (c DeadLetterConfig) Validate(diskLimit shipper.ByteSize) error {
	var p shipper.Problems
	if c.MaxBytes != 0 && c.MaxBytes < 1<<20 {
		p.Addf("max_bytes", "must be at least 1MiB, got %s", c.MaxBytes)
	} else if c.MaxBytes > diskLimit/2 {
		p.Addf("max_bytes", "must be at most half of buffer.disk_limit (%s), got %s", diskLimit/2, c.MaxBytes)
	}
	if c.WhenFull != "drop_oldest" && c.WhenFull != "block" {
		p.Addf("when_full", "must be \"drop_oldest\" or \"block\", got %q", c.WhenFull)
	}
	return p.Err()
}

// DeadLetterStats is a snapshot of the dead-letter store.
type DeadLetterStats struct {
	Entries  int64 `json:"entries"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
	// Dropped counts entries deleted to make room (when_full = "drop_oldest") since start.
	Dropped int64 `json:"dropped"`
	// Blocked says why new dead letters wait (when_full = "block"), if they do.
	Blocked string `json:"blocked,omitempty"`
}

// DeadLetterStore keeps records that cannot be indexed, with their reasons,
// in the buffer's badger store, under
//
//	d/<chunk seq uint64 BE><index uint32 BE>   one entry (see encodeDeadLetter)
//
// A chunk's dead letters are keyed by the chunk and the record's position
// in it, so acknowledging the same chunk twice (after a crash between
// storing its dead letters and deleting it) stores each once. Entries are
// written with badger's WriteBatch, which commits in as many transactions
// as it takes: however many dead letters a chunk has, no transaction
// outgrows badger's limits. Keys are in chunk order, so the first key is
// the oldest entry.
type DeadLetterStore struct {
	db       *badger.DB
	dbWrites *sync.RWMutex // shared with the buffer: held exclusively by GC
	cfg      DeadLetterConfig
	log      *slog.Logger
	stop     context.Context // done when the buffer closes

	// writes serialises changes, so the accounting below stays exact.
	writes chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when room is made
	entries int64
	bytes   int64
	dropped int64
	blocked string
}

var prefixDead = []byte("d/")

func deadKey(seq uint64, index uint32) []byte {
	k := binary.BigEndian.AppendUint64(append([]byte(nil), prefixDead...), seq)
	return binary.BigEndian.AppendUint32(k, index)
}

// deadID is an entry's ID: "<seq>.<index>", or "<n>" for an entry stored
// by an earlier version under d/<n uint64 BE>.
func deadID(k []byte) string {
	s := k[len(prefixDead):]
	switch len(s) {
	case 12:
		return strconv.FormatUint(binary.BigEndian.Uint64(s), 10) + "." + strconv.FormatUint(uint64(binary.BigEndian.Uint32(s[8:])), 10)
	case 8:
		return strconv.FormatUint(binary.BigEndian.Uint64(s), 10)
	}
	return fmt.Sprintf("%x", s)
}

func parseDeadID(id string) ([]byte, error) {
	seqS, idxS, two := strings.Cut(id, ".")
	seq, err := strconv.ParseUint(seqS, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("dead letter id %q: want <seq>.<index>", id)
	}
	if !two {
		return binary.BigEndian.AppendUint64(append([]byte(nil), prefixDead...), seq), nil
	}
	idx, err := strconv.ParseUint(idxS, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("dead letter id %q: want <seq>.<index>", id)
	}
	return deadKey(seq, uint32(idx)), nil
}

// Dead-letter encoding, in pieces when larger than pieceSize:
//
//	magic "SDL1" | uvarint total length | uvarint len(meta) | meta JSON | value
//
// The value is kept as its original bytes; the metadata as JSON.
var deadMagic = []byte("SDL1")

type deadMeta struct {
	Topic     string           `json:"topic"`
	TopicID   string           `json:"topic_id,omitempty"`
	Partition int32            `json:"partition"`
	Offset    int64            `json:"offset"`
	Time      time.Time        `json:"time"`
	Key       []byte           `json:"key,omitempty"`
	Headers   []shipper.Header `json:"headers,omitempty"`
	Null      bool             `json:"null,omitempty"`
	Type      string           `json:"type"`
	Reasons   []string         `json:"reasons"`
	Attempts  int              `json:"attempts"`
	Stored    time.Time        `json:"stored"`
}

func encodeDeadLetter(d DeadLetter) []byte {
	r := &d.Record
	meta, _ := json.Marshal(deadMeta{Topic: r.Topic, TopicID: r.TopicID, Partition: r.Partition, Offset: r.Offset, Time: r.Time,
		Key: r.Key, Headers: r.Headers, Null: r.Value == nil, Type: d.Type, Reasons: d.Reasons,
		Attempts: d.Attempts, Stored: d.Stored})
	body := binary.AppendUvarint(nil, uint64(len(meta)))
	body = append(append(body, meta...), r.Value...)
	total := len(deadMagic) + binary.MaxVarintLen64 + len(body)
	out := make([]byte, 0, total)
	out = append(out, deadMagic...)
	// The total is written in fixed width so it is known before encoding.
	out = append(out, binary.AppendUvarint(nil, uint64(total))...)
	for len(out) < len(deadMagic)+binary.MaxVarintLen64 {
		out = append(out, 0)
	}
	return append(out, body...)
}

// deadTotal reads the encoded length from an entry's first piece; 0 for an
// entry of the earlier JSON format.
func deadTotal(first []byte) int64 {
	if !bytes.HasPrefix(first, deadMagic) {
		return 0
	}
	n, w := binary.Uvarint(first[len(deadMagic):])
	if w <= 0 {
		return 0
	}
	return int64(n)
}

func decodeDeadLetter(k, v []byte, maxValue int) (DeadLetter, error) {
	d := DeadLetter{ID: deadID(k)}
	if !bytes.HasPrefix(v, deadMagic) {
		return decodeLegacyDeadLetter(d, v)
	}
	p := v[len(deadMagic)+binary.MaxVarintLen64:]
	ml, w := binary.Uvarint(p)
	if w <= 0 || uint64(len(p)-w) < ml {
		return d, fmt.Errorf("%w: dead letter %s: bad header", ErrCorrupt, d.ID)
	}
	var m deadMeta
	if err := json.Unmarshal(p[w:w+int(ml)], &m); err != nil {
		return d, fmt.Errorf("%w: dead letter %s: %v", ErrCorrupt, d.ID, err)
	}
	value := p[w+int(ml):]
	d.Size = len(value)
	if maxValue > 0 && len(value) > maxValue {
		value, d.Truncated = value[:maxValue], true
	}
	if !m.Null || len(value) > 0 {
		value = append([]byte{}, value...)
	} else {
		value = nil
	}
	d.Record = shipper.Record{Topic: m.Topic, TopicID: m.TopicID, Partition: m.Partition, Offset: m.Offset, Time: m.Time,
		Key: m.Key, Headers: m.Headers, Value: value}
	d.Type, d.Reasons, d.Attempts, d.Stored = m.Type, m.Reasons, m.Attempts, m.Stored
	return d, nil
}

// decodeLegacyDeadLetter reads an entry written before the store kept
// types, attempts and headers.
func decodeLegacyDeadLetter(d DeadLetter, v []byte) (DeadLetter, error) {
	var old struct {
		Topic     string    `json:"topic"`
		Partition int32     `json:"partition"`
		Offset    int64     `json:"offset"`
		Time      time.Time `json:"time"`
		Key       []byte    `json:"key"`
		Value     []byte    `json:"value"`
		Reason    string    `json:"reason"`
		Stored    time.Time `json:"stored"`
	}
	if err := json.Unmarshal(v, &old); err != nil {
		return d, fmt.Errorf("%w: dead letter %s: %v", ErrCorrupt, d.ID, err)
	}
	d.Record = shipper.Record{Topic: old.Topic, Partition: old.Partition, Offset: old.Offset, Time: old.Time,
		Key: old.Key, Value: old.Value}
	d.Type, d.Reasons, d.Attempts, d.Stored, d.Size = "unknown", []string{old.Reason}, 1, old.Stored, len(old.Value)
	return d, nil
}

func newDeadLetterStore(db *badger.DB, dbWrites *sync.RWMutex, cfg DeadLetterConfig, diskLimit shipper.ByteSize,
	log *slog.Logger, stop context.Context) (*DeadLetterStore, error) {
	cfg.MaxBytes = cfg.limit(diskLimit)
	s := &DeadLetterStore{db: db, dbWrites: dbWrites, cfg: cfg, log: log, stop: stop,
		writes: make(chan struct{}, 1), changed: make(chan struct{})}
	// Only keys and value sizes are read: start-up does not depend on the
	// store's contents.
	err := db.View(func(txn *badger.Txn) error {
		for _, prefix := range [][]byte{prefixDead, append(append([]byte(nil), prefixPiece...), prefixDead...)} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			for it.Rewind(); it.Valid(); it.Next() {
				if bytes.Equal(prefix, prefixDead) {
					s.entries++
				}
				s.bytes += it.Item().ValueSize()
			}
			it.Close()
		}
		return nil
	})
	return s, err
}

// Stats returns a snapshot of the store.
func (s *DeadLetterStore) Stats() DeadLetterStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return DeadLetterStats{Entries: s.entries, Bytes: s.bytes, MaxBytes: int64(s.cfg.MaxBytes),
		Dropped: s.dropped, Blocked: s.blocked}
}

// lock takes the write slot, or returns when ctx ends or the buffer closes.
func (s *DeadLetterStore) lock(ctx context.Context) error {
	select {
	case s.writes <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop.Done():
		return ErrClosed
	}
}

func (s *DeadLetterStore) unlock() { <-s.writes }

func (s *DeadLetterStore) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// keyed is an entry ready to be written.
type keyed struct {
	key  []byte
	data []byte
}

// put stores dead letters under the given keys. With when_full = "block"
// it waits, as long as ctx allows, until the store has room for them;
// with "drop_oldest" it first deletes the oldest entries that stand in the
// way. Entries already stored under a key are replaced.
func (s *DeadLetterStore) put(ctx context.Context, entries []keyed) error {
	var need int64
	for _, e := range entries {
		need += int64(len(e.data))
	}
	for {
		// Room is awaited without the write slot, so that a purge or a
		// replay can make it.
		if err := s.waitRoom(ctx, need); err != nil {
			return err
		}
		if err := s.lock(ctx); err != nil {
			return err
		}
		s.mu.Lock()
		room := s.cfg.WhenFull != "block" || s.hasRoom(need)
		s.mu.Unlock()
		if room {
			break
		}
		s.unlock()
	}
	defer s.unlock()
	if s.cfg.WhenFull == "drop_oldest" {
		if err := s.dropOldest(need); err != nil {
			return fmt.Errorf("make room in the dead-letter store: %w", err)
		}
	}
	// Keys written again (a chunk acknowledged twice) are not new.
	var replaced, replacedBytes int64
	_ = s.db.View(func(txn *badger.Txn) error {
		for _, e := range entries {
			if n, ok := s.sizeOf(txn, e.key); ok {
				replaced++
				replacedBytes += n
			}
		}
		return nil
	})
	err := s.batch(func(wb *badger.WriteBatch) error {
		for _, e := range entries {
			if err := s.deleteExtraPieces(wb, e.key); err != nil {
				return err
			}
			if _, err := setPieces(wb, e.key, e.data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.entries += int64(len(entries)) - replaced
	s.bytes += need - replacedBytes
	s.mu.Unlock()
	return nil
}

// batch runs fn on a write batch, which badger commits in as many
// transactions as it takes, never concurrently with GC's DropPrefix.
func (s *DeadLetterStore) batch(fn func(*badger.WriteBatch) error) error {
	s.dbWrites.RLock()
	defer s.dbWrites.RUnlock()
	wb := s.db.NewWriteBatch()
	if err := fn(wb); err != nil {
		wb.Cancel()
		return err
	}
	return wb.Flush()
}

// deleteExtraPieces deletes the pieces after the first of the entry stored
// under k, if any.
func (s *DeadLetterStore) deleteExtraPieces(wb *badger.WriteBatch, k []byte) error {
	var n int
	_ = s.db.View(func(txn *badger.Txn) error {
		n = s.piecesOf(txn, k)
		return nil
	})
	for i := 1; i < n; i++ {
		if err := wb.Delete(pieceKey(k, i)); err != nil {
			return err
		}
	}
	return nil
}

// piecesOf is the number of pieces of the entry under k; 0 if there is none.
func (s *DeadLetterStore) piecesOf(txn *badger.Txn, k []byte) int {
	it, err := txn.Get(k)
	if err != nil {
		return 0
	}
	var total int64
	_ = it.Value(func(v []byte) error { total = deadTotal(v); return nil })
	return max(pieceCount(total), 1)
}

// sizeOf is the stored size of the entry under k.
func (s *DeadLetterStore) sizeOf(txn *badger.Txn, k []byte) (int64, bool) {
	it, err := txn.Get(k)
	if err != nil {
		return 0, false
	}
	n := it.ValueSize()
	var total int64
	_ = it.Value(func(v []byte) error { total = deadTotal(v); return nil })
	if total > n {
		n = total
	}
	return n, true
}

// dropOldest deletes the oldest entries until need more bytes fit. The
// caller holds the write slot.
func (s *DeadLetterStore) dropOldest(need int64) error {
	s.mu.Lock()
	excess := s.bytes + need - int64(s.cfg.MaxBytes)
	s.mu.Unlock()
	if excess <= 0 {
		return nil
	}
	var keys [][]byte
	var sizes []int64
	var freed int64
	_ = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDead})
		defer it.Close()
		for it.Rewind(); it.Valid() && freed < excess; it.Next() {
			k := it.Item().KeyCopy(nil)
			n, _ := s.sizeOf(txn, k)
			keys, sizes = append(keys, k), append(sizes, n)
			freed += n
		}
		return nil
	})
	if len(keys) == 0 {
		return nil
	}
	if err := s.deleteKeys(keys, sizes); err != nil {
		return err
	}
	s.mu.Lock()
	s.dropped += int64(len(keys))
	s.mu.Unlock()
	s.log.Warn("dead-letter store full: dropped the oldest entries (dead_letter.when_full = \"drop_oldest\")",
		"dropped", len(keys), "bytes", freed, "max_bytes", s.cfg.MaxBytes.String())
	return nil
}

// deleteKeys deletes entries with their pieces and updates the accounting.
// The caller holds the write slot.
func (s *DeadLetterStore) deleteKeys(keys [][]byte, sizes []int64) error {
	pieces := make([]int, len(keys))
	_ = s.db.View(func(txn *badger.Txn) error {
		for i, k := range keys {
			pieces[i] = s.piecesOf(txn, k)
		}
		return nil
	})
	var gone, freed int64
	err := s.batch(func(wb *badger.WriteBatch) error {
		for i, k := range keys {
			if pieces[i] == 0 {
				continue // already gone
			}
			if err := deletePieces(wb, k, pieces[i]); err != nil {
				return err
			}
			gone++
			freed += sizes[i]
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.entries -= gone
	s.bytes = max(s.bytes-freed, 0)
	s.notify()
	s.mu.Unlock()
	return nil
}

// DeadLetterQuery selects and pages entries.
type DeadLetterQuery struct {
	// After is the ID of the last entry of the previous page; "" starts at
	// the oldest.
	After string
	// Limit bounds the entries returned; default 100, at most 10,000.
	Limit int
	// MaxBytes stops the page once its values hold this many bytes (at
	// least one entry is returned); 0: no bound.
	MaxBytes int64
	// Topic, if set, selects entries of that topic.
	Topic string
	// Reason, if set, selects entries whose type equals it or one of whose
	// reasons contains it (case-insensitive).
	Reason string
	// MaxValueBytes truncates returned values to this many bytes (Truncated
	// is set); 0 returns them whole.
	MaxValueBytes int
}

func (q DeadLetterQuery) matches(d *DeadLetter) bool {
	if q.Topic != "" && d.Record.Topic != q.Topic {
		return false
	}
	if q.Reason == "" || strings.EqualFold(d.Type, q.Reason) {
		return true
	}
	want := strings.ToLower(q.Reason)
	for _, r := range d.Reasons {
		if strings.Contains(strings.ToLower(r), want) {
			return true
		}
	}
	return false
}

// DeadLetterPage is one page of entries, oldest first. Next is the After of
// the next page, "" after the last.
type DeadLetterPage struct {
	Entries []DeadLetter `json:"entries"`
	Next    string       `json:"next,omitempty"`
}

// List returns the entries that match q, oldest first.
func (s *DeadLetterStore) List(q DeadLetterQuery) (DeadLetterPage, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, 10_000)
	var start []byte
	if q.After != "" {
		k, err := parseDeadID(q.After)
		if err != nil {
			return DeadLetterPage{}, err
		}
		start = k
	}
	var page DeadLetterPage
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDead})
		defer it.Close()
		var size int64
		it.Rewind()
		if start != nil {
			it.Seek(start)
		}
		for ; it.Valid(); it.Next() {
			k := it.Item().Key()
			if start != nil && bytes.Equal(k, start) {
				continue
			}
			if len(page.Entries) == q.Limit || (q.MaxBytes > 0 && size >= q.MaxBytes) {
				page.Next = page.Entries[len(page.Entries)-1].ID
				return nil
			}
			d, err := s.read(txn, it.Item(), q.MaxValueBytes)
			if err != nil {
				s.log.Error("unreadable dead letter: skipped", "id", deadID(k), "err", err)
				continue
			}
			if !q.matches(&d) {
				continue
			}
			size += int64(len(d.Record.Value))
			page.Entries = append(page.Entries, d)
		}
		return nil
	})
	return page, err
}

func (s *DeadLetterStore) read(txn *badger.Txn, item *badger.Item, maxValue int) (DeadLetter, error) {
	k := item.KeyCopy(nil)
	var first []byte
	if err := item.Value(func(v []byte) error { first = append([]byte(nil), v...); return nil }); err != nil {
		return DeadLetter{}, err
	}
	if total := deadTotal(first); int64(len(first)) < total {
		rest, err := getPieces(txn, k, pieceCount(total), nil)
		if err != nil {
			return DeadLetter{}, fmt.Errorf("%w: dead letter %s: %v", ErrCorrupt, deadID(k), err)
		}
		first = rest // getPieces re-reads the first piece
	}
	return decodeDeadLetter(k, first, maxValue)
}

// Delete removes the entries with these IDs (those delivered by a replay).
// Unknown IDs are ignored.
func (s *DeadLetterStore) Delete(ctx context.Context, ids []string) error {
	keys := make([][]byte, 0, len(ids))
	for _, id := range ids {
		k, err := parseDeadID(id)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	sizes := make([]int64, len(keys))
	_ = s.db.View(func(txn *badger.Txn) error {
		for i, k := range keys {
			sizes[i], _ = s.sizeOf(txn, k)
		}
		return nil
	})
	return s.deleteKeys(keys, sizes)
}

// Update rewrites entries in place (a replay that failed again: more
// reasons and attempts). Each must carry its ID and its whole value.
func (s *DeadLetterStore) Update(ctx context.Context, entries []DeadLetter) error {
	batch := make([]keyed, 0, len(entries))
	for _, d := range entries {
		k, err := parseDeadID(d.ID)
		if err != nil {
			return err
		}
		if d.Truncated {
			return fmt.Errorf("dead letter %s: cannot store a truncated value", d.ID)
		}
		batch = append(batch, keyed{key: k, data: encodeDeadLetter(d)})
	}
	return s.put(ctx, batch)
}

// Purge deletes the entries that match q (its paging fields are ignored)
// and returns how many it deleted.
func (s *DeadLetterStore) Purge(ctx context.Context, q DeadLetterQuery) (int, error) {
	q.After, q.Limit, q.MaxBytes, q.MaxValueBytes = "", 1000, 0, 1
	total := 0
	for {
		page, err := s.List(q)
		if err != nil {
			return total, err
		}
		ids := make([]string, len(page.Entries))
		for i, d := range page.Entries {
			ids[i] = d.ID
		}
		if err := s.Delete(ctx, ids); err != nil {
			return total, err
		}
		total += len(ids)
		if page.Next == "" {
			return total, nil
		}
		q.After = page.Next
	}
}

// hasRoom reports whether need more bytes fit. An empty store takes any
// batch, so one larger than max_bytes still moves. The caller holds s.mu.
func (s *DeadLetterStore) hasRoom(need int64) bool {
	return s.bytes == 0 || s.bytes+need <= int64(s.cfg.MaxBytes)
}

// waitRoom waits, with when_full = "block", until need more bytes fit.
func (s *DeadLetterStore) waitRoom(ctx context.Context, need int64) error {
	if s.cfg.WhenFull != "block" {
		return nil
	}
	for {
		s.mu.Lock()
		if s.hasRoom(need) {
			if s.blocked != "" {
				s.log.Info("dead-letter store has room again; deliveries resume")
				s.blocked = ""
			}
			s.mu.Unlock()
			return nil
		}
		if s.blocked == "" {
			s.blocked = fmt.Sprintf("dead-letter store full (%s of max_bytes %s): deliveries wait; replay or purge it",
				shipper.ByteSize(s.bytes), s.cfg.MaxBytes)
			s.log.Warn("dead-letter store full: deliveries wait until entries are replayed or purged",
				"bytes", s.bytes, "max_bytes", s.cfg.MaxBytes.String())
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop.Done():
			return ErrClosed
		}
	}
}

// GapType is the dead-letter type of an entry that records offsets never
// read (shipper.OffsetGap): it holds no record to replay.
const GapType = "offset_gap"

// RecordGap stores g in the dead-letter store: an entry of type GapType
// whose record names the topic, the partition and the first missing
// offset, with no value, and whose reason says how many records are
// missing. It is keyed by a fresh chunk sequence number, so it sorts with
// the dead letters of its time. It blocks like any dead letter while the
// store is full with when_full = "block".
func (b *Buffer) RecordGap(ctx context.Context, g shipper.OffsetGap) error {
	b.mu.Lock()
	seq := b.nextSeq
	b.nextSeq++
	b.mu.Unlock()
	now := time.Now().UTC()
	d := DeadLetter{
		Record: shipper.Record{Topic: g.Topic, Partition: g.Partition, Offset: g.From, Time: now},
		Type:   GapType, Reasons: []string{fmt.Sprintf("%d records missing (offsets %d to %d): %s", g.To-g.From, g.From, g.To-1, g.Reason)},
		Stored: now,
	}
	return b.dlq.put(ctx, []keyed{{key: deadKey(seq, 0), data: encodeDeadLetter(d)}})
}
