package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/shipper-agent/shipper"
)

func listAll(t *testing.T, b *Buffer, q DeadLetterQuery) []DeadLetter {
	t.Helper()
	var out []DeadLetter
	for {
		page, err := b.DeadLetters().List(q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Entries...)
		if page.Next == "" {
			return out
		}
		q.After = page.Next
	}
}

// deadAll dead-letters every record of the chunk.
func deadAll(c *Chunk, reason string) []DeadLetter {
	dead := make([]DeadLetter, len(c.Records))
	for i := range c.Records {
		dead[i] = DeadLetter{Record: c.Records[i], Type: "mapper_parsing_exception", Reasons: []string{reason}, Attempts: 1}
	}
	return dead
}

// One chunk with more dead letters than fit in one badger transaction:
// before the store wrote them in batches, Ack failed with "Txn is too big"
// and the chunk was sent again for ever.
func TestAckManyDeadLetters(t *testing.T) {
	c := testConfig(t)
	c.ChunkSize = 1 << 20
	c.MemoryLimit = 4 << 20 // memtables of 1 MiB: a transaction holds ~150 KiB
	b := open(t, c)
	appendN(t, b, "t", 0, 0, 1200, 700)
	b.Flush(context.Background())
	ch, err := b.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Records) != 1200 {
		t.Fatalf("chunk holds %d records", len(ch.Records))
	}
	if err := b.Ack(ctxT(t), ch, deadAll(ch, "400 strict_dynamic_mapping_exception")); err != nil {
		t.Fatal(err)
	}
	s := b.Stats()
	if s.DeadLetters != 1200 || s.DiskChunks != 0 || s.InFlightChunks != 0 {
		t.Fatalf("after ack: %+v", s)
	}
	got := listAll(t, b, DeadLetterQuery{Limit: 500})
	if len(got) != 1200 {
		t.Fatalf("listed %d dead letters, want 1200", len(got))
	}
	for i, d := range got {
		if d.Record.Offset != int64(i) || !bytes.Equal(d.Record.Value, rec("t", 0, int64(i), 700).Value) {
			t.Fatalf("entry %d: %+v", i, d.Record)
		}
	}
}

// A chunk acknowledged again after a crash between storing its dead letters
// and deleting it stores each dead letter once.
func TestAckAgainStoresDeadLettersOnce(t *testing.T) {
	c := testConfig(t)
	b, _ := Open(c, nil)
	appendN(t, b, "t", 0, 0, 10, 100)
	b.Flush(context.Background())
	ch, _ := b.Next(ctxT(t))
	dead := deadAll(ch, "same")[:4]
	// The first half of an Ack: the dead letters are stored, then the
	// process dies before the chunk is deleted.
	entries, err := ch.deadEntries(dead)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.dlq.put(ctxT(t), entries); err != nil {
		t.Fatal(err)
	}
	before := b.Stats().DeadLetter
	b.Close()
	b2 := open(t, c)
	if s := b2.Stats(); s.DiskChunks != 1 || s.DeadLetter != before {
		t.Fatalf("after restart: %+v, before %+v", s, before)
	}
	ch2, _ := b2.Next(ctxT(t))
	if err := b2.Ack(ctxT(t), ch2, deadAll(ch2, "same")[:4]); err != nil {
		t.Fatal(err)
	}
	got := listAll(t, b2, DeadLetterQuery{})
	if len(got) != 4 || b2.Stats().DeadLetters != 4 {
		t.Fatalf("%d listed, stats %+v; want 4", len(got), b2.Stats().DeadLetter)
	}
	// The running count matches what the store holds, as counted afresh
	// when it opens.
	after := b2.Stats().DeadLetter
	b2.Close()
	if s := open(t, c).Stats().DeadLetter; s.Bytes != after.Bytes || s.Entries != 4 {
		t.Fatalf("reopened: %+v; before closing %+v", s, after)
	}
}

// A record larger than a badger value (its value-log file, 16 MiB) is stored
// in pieces; before, the chunk write failed for ever and every append
// waited on it.
func TestLargeRecordStoredInPieces(t *testing.T) {
	c := testConfig(t)
	c.DiskLimit = 256 << 20
	c.DeadLetter.MaxBytes = 64 << 20
	b := open(t, c)
	big := rec("t", 0, 1, 17<<20)
	appendN(t, b, "t", 0, 0, 1, 100)
	if err := b.Append(ctxT(t), big); err != nil {
		t.Fatal(err)
	}
	appendN(t, b, "t", 1, 0, 50, 100) // another partition keeps moving
	if _, err := b.Flush(ctxT(t)); err != nil {
		t.Fatalf("flush: %v; %+v", err, b.Stats())
	}
	var found bool
	var records int
	for b.Stats().DiskChunks > 0 {
		ch, err := b.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ch.Records {
			records++
			if r.Offset == 1 && r.Partition == 0 {
				found = bytes.Equal(r.Value, big.Value)
			}
		}
		var dead []DeadLetter
		if ch.Pieces > 1 {
			for _, r := range ch.Records {
				if len(r.Value) > 1<<20 {
					dead = append(dead, DeadLetter{Record: r, Type: "request_too_large", Reasons: []string{"413"}})
				}
			}
		}
		if err := b.Ack(ctxT(t), ch, dead); err != nil {
			t.Fatal(err)
		}
	}
	if !found || records != 52 {
		t.Fatalf("the large record came back intact: %v; %d records, want 52", found, records)
	}
	// Its dead letter is stored in pieces too, and read back whole.
	got := listAll(t, b, DeadLetterQuery{})
	if len(got) != 1 || !bytes.Equal(got[0].Record.Value, big.Value) || got[0].Size != len(big.Value) {
		t.Fatalf("dead letter of the large record: %d entries", len(got))
	}
	if short := listAll(t, b, DeadLetterQuery{MaxValueBytes: 100}); len(short[0].Record.Value) != 100 || !short[0].Truncated {
		t.Fatalf("truncated listing: %d bytes, truncated %v", len(short[0].Record.Value), short[0].Truncated)
	}
	if err := b.DeadLetters().Delete(ctxT(t), []string{got[0].ID}); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats().DeadLetter; s.Entries != 0 || s.Bytes != 0 {
		t.Fatalf("after delete: %+v", s)
	}
	// No piece is left behind.
	b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixPiece})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			t.Errorf("piece left: %q", it.Item().Key())
		}
		return nil
	})
}

// While chunk writes fail, Flush, Append and Close return when their
// context ends or at once: none of them waits for the failing write.
func TestWaitsEndWhileWritesFail(t *testing.T) {
	b := open(t, testConfig(t))
	b.failWrites = func() error { return errors.New("write /buffer/000001.vlog: input/output error") }
	appendN(t, b, "t", 0, 0, 10, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := b.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("flush while writes fail: %v", err)
	}
	// Appends fill the open chunk, then wait for the sealed one.
	actx, acancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer acancel()
	var err error
	for off := int64(10); err == nil && off < 10_000; off++ {
		err = b.Append(actx, rec("t", 0, off, 1000))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append while writes fail: %v", err)
	}
	if s := b.Stats(); !strings.HasPrefix(s.Blocked, "chunk write failing") || s.DiskChunks != 0 {
		t.Fatalf("stats while writes fail: %+v", s)
	}
	if wm := b.Watermarks(); wm[shipper.TopicPartition{Topic: "t"}] != 0 {
		t.Fatalf("watermark %v moved past unwritten records", wm)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs while writes fail")
	}
}

func TestDeadLetterDropOldest(t *testing.T) {
	c := testConfig(t)
	c.ChunkSize, c.MemoryLimit = 1<<20, 4<<20
	c.DeadLetter = DeadLetterConfig{MaxBytes: 1 << 20, WhenFull: "drop_oldest"}
	b := open(t, c)
	for off := int64(0); off < 30; off += 10 {
		appendN(t, b, "t", 0, off, 10, 50_000) // 500 KB of dead letters per chunk
		b.Flush(context.Background())
		ch, _ := b.Next(ctxT(t))
		if err := b.Ack(ctxT(t), ch, deadAll(ch, "x")); err != nil {
			t.Fatal(err)
		}
	}
	s := b.Stats().DeadLetter
	if s.Bytes > int64(c.DeadLetter.MaxBytes) || s.Dropped == 0 || s.Entries+s.Dropped != 30 {
		t.Fatalf("store = %+v", s)
	}
	got := listAll(t, b, DeadLetterQuery{})
	if int64(len(got)) != s.Entries || got[len(got)-1].Record.Offset != 29 || got[0].Record.Offset != s.Dropped {
		t.Fatalf("kept offsets %d..%d, %d entries; dropped %d: the oldest must go first",
			got[0].Record.Offset, got[len(got)-1].Record.Offset, len(got), s.Dropped)
	}
}

func TestDeadLetterBlockWhenFull(t *testing.T) {
	c := testConfig(t)
	c.ChunkSize, c.MemoryLimit = 1<<20, 4<<20
	c.DeadLetter = DeadLetterConfig{MaxBytes: 1 << 20, WhenFull: "block"}
	b := open(t, c)
	ackAll := func(ctx context.Context, off int64) error {
		appendN(t, b, "t", 0, off, 10, 60_000)
		b.Flush(context.Background())
		ch, _ := b.Next(ctxT(t))
		err := b.Ack(ctx, ch, deadAll(ch, "x"))
		if err != nil {
			b.Release(ch)
		}
		return err
	}
	if err := ackAll(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := ackAll(ctx, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ack into a full store: %v", err)
	}
	if s := b.Stats(); !strings.HasPrefix(s.DeadLetter.Blocked, "dead-letter store full") || s.DiskChunks != 1 || s.DeadLetters != 10 {
		t.Fatalf("while blocked: %+v", s)
	}
	// A waiting Ack proceeds once an operator purges the store.
	ch, _ := b.Next(ctxT(t))
	acked := make(chan error, 1)
	go func() { acked <- b.Ack(ctxT(t), ch, deadAll(ch, "x")) }()
	n, err := b.DeadLetters().Purge(ctxT(t), DeadLetterQuery{})
	if err != nil || n != 10 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.DeadLetters != 10 || s.DeadLetter.Blocked != "" || s.DiskChunks != 0 {
		t.Fatalf("after purge: %+v", s)
	}
}

func TestDeadLetterQueries(t *testing.T) {
	b := open(t, testConfig(t))
	for i, topic := range []string{"a", "b", "a"} {
		appendN(t, b, topic, 0, int64(10*i), 10, 100)
		b.Flush(context.Background())
		ch, _ := b.Next(ctxT(t))
		dead := deadAll(ch, "400 strict_dynamic_mapping_exception: [other] not allowed")
		for j := range dead {
			if j%2 == 1 {
				dead[j].Type, dead[j].Reasons = "request_too_large", []string{"document of 5 bytes: 413"}
			}
		}
		if err := b.Ack(ctxT(t), ch, dead); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		q    DeadLetterQuery
		want int
	}{
		{DeadLetterQuery{Limit: 7}, 30},
		{DeadLetterQuery{Topic: "a", Limit: 3}, 20},
		{DeadLetterQuery{Reason: "request_too_large"}, 15},
		{DeadLetterQuery{Reason: "STRICT_dynamic"}, 15},
		{DeadLetterQuery{Topic: "b", Reason: "413"}, 5},
		{DeadLetterQuery{Topic: "c"}, 0},
	}
	for _, c := range cases {
		got := listAll(t, b, c.q)
		seen := map[string]bool{}
		for _, d := range got {
			if seen[d.ID] || !c.q.matches(&d) {
				t.Fatalf("%+v: entry %s listed twice or does not match", c.q, d.ID)
			}
			seen[d.ID] = true
		}
		if len(got) != c.want {
			t.Errorf("%+v: %d entries, want %d", c.q, len(got), c.want)
		}
	}
	if _, err := b.DeadLetters().List(DeadLetterQuery{After: "x.y"}); err == nil {
		t.Error("a malformed cursor was accepted")
	}
	// Update keeps the entry in place with more reasons and attempts.
	first := listAll(t, b, DeadLetterQuery{Limit: 1})[0]
	first.Reasons = AddReason(first.Reasons, "replay: 400 again")
	first.Attempts++
	if err := b.DeadLetters().Update(ctxT(t), []DeadLetter{first}); err != nil {
		t.Fatal(err)
	}
	again := listAll(t, b, DeadLetterQuery{})
	if len(again) != 30 || again[0].ID != first.ID || again[0].Attempts != 2 || len(again[0].Reasons) != 2 {
		t.Fatalf("after update: %d entries, first %+v", len(again), again[0])
	}
	n, err := b.DeadLetters().Purge(ctxT(t), DeadLetterQuery{Topic: "a", Reason: "request_too_large"})
	if err != nil || n != 10 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if s := b.Stats().DeadLetter; s.Entries != 20 {
		t.Fatalf("after purge: %+v", s)
	}
}

// Entries stored before dead letters kept types and attempts (JSON under
// d/<n>) are still listed; chunks stored before records carried headers
// (magic SHC1) are still delivered.
func TestEarlierFormatsStillRead(t *testing.T) {
	c := testConfig(t)
	b := open(t, c)
	old, _ := json.Marshal(map[string]any{"topic": "t", "partition": 2, "offset": 7, "value": []byte("v"),
		"reason": "400 mapper_parsing_exception: x", "stored": time.Now().UTC()})
	var v1 []byte
	v1 = binary.AppendUvarint(v1, 1)
	v1 = append(v1, 't')
	v1 = binary.AppendVarint(v1, 0)
	v1 = binary.AppendVarint(v1, 3)
	v1 = binary.AppendVarint(v1, 1700000000000)
	v1 = binary.AppendUvarint(v1, 0)
	v1 = binary.AppendUvarint(v1, 2)
	v1 = append(v1, "hi"...)
	data := append(append([]byte{}, chunkMagicV1[:]...), 0, 0, 0, 0, 0)
	data = append(data, v1...)
	binary.BigEndian.PutUint32(data[4:8], crcOf(data[chunkHeaderLen:]))
	meta, _ := json.Marshal(Meta{Seq: 99, Records: 1, Bytes: int64(len(data)), RawBytes: int64(len(data)),
		Ranges: []OffsetRange{{Topic: "t", First: 3, Last: 3}}})
	err := b.update(func(txn *badger.Txn) error {
		txn.Set(key(prefixChunk, 99), data)
		txn.Set(key(prefixMeta, 99), meta)
		return txn.Set(binary.BigEndian.AppendUint64([]byte("d/"), 5), old)
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	b2 := open(t, c)
	got := listAll(t, b2, DeadLetterQuery{})
	if len(got) != 1 || got[0].ID != "5" || got[0].Record.Offset != 7 || got[0].Reasons[0] != "400 mapper_parsing_exception: x" {
		t.Fatalf("legacy dead letter: %+v", got)
	}
	if err := b2.DeadLetters().Delete(ctxT(t), []string{"5"}); err != nil || b2.Stats().DeadLetters != 0 {
		t.Fatalf("delete legacy: %v, %+v", err, b2.Stats().DeadLetter)
	}
	ch, err := b2.Next(ctxT(t))
	if err != nil || len(ch.Records) != 1 || string(ch.Records[0].Value) != "hi" || ch.Records[0].Offset != 3 {
		t.Fatalf("v1 chunk: %v %+v", err, ch)
	}
	if err := b2.Ack(ctxT(t), ch, nil); err != nil {
		t.Fatal(err)
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	w := newChunkWriter(16, time.Now())
	r := rec("t", 0, 1, 10)
	r.Headers = []shipper.Header{{Key: "trace", Value: []byte("abc")}, {Key: "trace", Value: nil}, {Key: "", Value: []byte{0}}}
	w.add(r)
	data, _ := w.seal(1, false)
	got, err := decodeChunk(data, 1)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got[0].Headers) != fmt.Sprint(r.Headers) {
		t.Fatalf("headers %v, want %v", got[0].Headers, r.Headers)
	}
}

// TestDeadLetterKeepsRecordIdentity: a dead letter keeps what makes its
// document id (topic id included) and a null value stays null, so that a
// replay indexes it under the id it would have had.
func TestDeadLetterKeepsRecordIdentity(t *testing.T) {
	for _, value := range [][]byte{nil, {}, []byte("v")} {
		r := shipper.Record{Topic: "t", TopicID: "0123abcd", Partition: 2, Offset: 9, Value: value, Time: time.UnixMilli(1700000000000).UTC()}
		data := encodeDeadLetter(DeadLetter{Record: r, Type: "x", Reasons: []string{"y"}})
		got, err := decodeDeadLetter(deadKey(1, 0), data, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got.Record.DocumentID() != r.DocumentID() || (got.Record.Value == nil) != (value == nil) || string(got.Record.Value) != string(value) {
			t.Fatalf("value %q: got record %+v (id %s), want id %s", value, got.Record, got.Record.DocumentID(), r.DocumentID())
		}
	}
}
