package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"

	"github.com/shipper-agent/shipper"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// badger's process-wide helpers started on first use.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

func testConfig(t *testing.T) Config {
	t.Helper()
	c := DefaultConfig()
	c.Dir = t.TempDir()
	c.ChunkSize = 64 << 10
	c.MemoryLimit = 1 << 20
	c.DiskLimit = 64 << 20
	c.FlushInterval = time.Hour // tests seal explicitly unless they test the timer
	c.SyncWrites = false
	return c
}

func open(t *testing.T, c Config) *Buffer {
	t.Helper()
	b, err := Open(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func rec(topic string, p int32, off int64, size int) *shipper.Record {
	v := bytes.Repeat([]byte{'a' + byte(off%26)}, size)
	return &shipper.Record{Topic: topic, Partition: p, Offset: off, Key: []byte(fmt.Sprint(off)), Value: v,
		Time: time.UnixMilli(1700000000000 + off).UTC()}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func appendN(t *testing.T, b *Buffer, topic string, p int32, from, n int64, size int) {
	t.Helper()
	for off := from; off < from+n; off++ {
		if err := b.Append(ctxT(t), rec(topic, p, off, size)); err != nil {
			t.Fatalf("append %d: %v", off, err)
		}
	}
}

func TestChunkRoundTrip(t *testing.T) {
	w := newChunkWriter(16, time.Now())
	// The last two: an empty value and a null one (a tombstone).
	want := []*shipper.Record{rec("t", 0, 5, 10), rec("other", 3, 1<<40, 3000), {Topic: "t", Partition: 1, Offset: 7, Value: []byte{}}, {Topic: "t", Offset: 9}}
	want[1].TopicID = "0123abcd"
	for _, r := range want {
		w.add(r)
	}
	data, m := w.seal(42, false)
	if m.Seq != 42 || m.Records != 4 || m.Bytes != int64(len(data)) {
		t.Fatalf("meta = %+v", m)
	}
	wantRanges := []OffsetRange{{"other", 3, 1 << 40, 1 << 40}, {"t", 0, 5, 9}, {"t", 1, 7, 7}}
	if fmt.Sprint(m.Ranges) != fmt.Sprint(wantRanges) {
		t.Fatalf("ranges = %v, want %v", m.Ranges, wantRanges)
	}
	got, err := decodeChunk(data, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Topic != w.Topic || g.TopicID != w.TopicID || g.Partition != w.Partition || g.Offset != w.Offset ||
			!bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || (g.Value == nil) != (w.Value == nil) ||
			!g.Time.Equal(w.Time.Truncate(time.Millisecond)) {
			t.Errorf("record %d = %+v, want %+v", i, g, *w)
		}
	}
}

func TestChunkCorruptionDetected(t *testing.T) {
	w := newChunkWriter(16, time.Now())
	w.add(rec("t", 0, 1, 100))
	w.add(rec("t", 0, 2, 100))
	data, _ := w.seal(1, false)
	cases := map[string]func([]byte) []byte{
		"flipped payload bit": func(d []byte) []byte { d[len(d)-5] ^= 1; return d },
		"torn tail":           func(d []byte) []byte { return d[:len(d)-30] },
		"bad magic":           func(d []byte) []byte { d[0] = 'X'; return d },
		"empty":               func(d []byte) []byte { return nil },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			d := mutate(bytes.Clone(data))
			if _, err := decodeChunk(d, 2); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
	if _, err := decodeChunk(data, 3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record count mismatch: err = %v, want ErrCorrupt", err)
	}
}

func TestAppendSealDeliverAck(t *testing.T) {
	b := open(t, testConfig(t))
	appendN(t, b, "t", 0, 0, 10, 100)
	if s := b.Stats(); s.OpenRecords != 10 || s.DiskChunks != 0 {
		t.Fatalf("before flush: %+v", s)
	}
	seq, _ := b.Flush(context.Background())
	if s := b.Stats(); s.OpenRecords != 0 || s.DiskChunks != 1 || s.DiskRecords != 10 {
		t.Fatalf("after flush: %+v", s)
	}
	c, err := b.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != seq || len(c.Records) != 10 || c.Records[9].Offset != 9 {
		t.Fatalf("chunk seq=%d records=%d", c.Seq, len(c.Records))
	}
	if s := b.Stats(); s.InFlightChunks != 1 {
		t.Fatalf("in flight = %d", s.InFlightChunks)
	}
	if err := b.Ack(context.Background(), c, nil); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.DiskChunks != 0 || s.MemoryBytes != 0 || s.DiskBytes != 0 {
		t.Fatalf("after ack: %+v", s)
	}
	if err := b.WaitDelivered(ctxT(t), seq); err != nil {
		t.Fatal(err)
	}
}

// PendingUpTo counts what a flush still waits for: the chunks up to its
// sequence number, not those after.
func TestPendingUpTo(t *testing.T) {
	b := open(t, testConfig(t))
	appendN(t, b, "t", 0, 0, 10, 100)
	first, _ := b.Flush(context.Background())
	appendN(t, b, "t", 0, 10, 5, 100)
	second, _ := b.Flush(context.Background())
	appendN(t, b, "t", 0, 15, 3, 100) // open, after both
	if c, r := b.PendingUpTo(first); c != 1 || r != 10 {
		t.Fatalf("up to the first flush: %d chunks, %d records; want 1, 10", c, r)
	}
	if c, r := b.PendingUpTo(second); c != 2 || r != 15 {
		t.Fatalf("up to the second flush: %d chunks, %d records; want 2, 15", c, r)
	}
	c, err := b.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if c, r := b.PendingUpTo(first); c != 1 || r != 10 {
		t.Fatalf("a chunk being delivered is still pending: %d chunks, %d records", c, r)
	}
	if err := b.Ack(context.Background(), c, nil); err != nil {
		t.Fatal(err)
	}
	if c, r := b.PendingUpTo(first); c != 0 || r != 0 {
		t.Fatalf("after its ack: %d chunks, %d records pending", c, r)
	}
	if c, r := b.PendingUpTo(second); c != 1 || r != 5 {
		t.Fatalf("up to the second flush after the first ack: %d chunks, %d records; want 1, 5", c, r)
	}
}

func TestSealBySizeAndAge(t *testing.T) {
	c := testConfig(t)
	b := open(t, c)
	// 64 KiB chunks, ~1 KiB records: a chunk holds fewer than 64.
	appendN(t, b, "t", 0, 0, 200, 1000)
	s := b.Stats()
	if s.DiskChunks < 2 || s.DiskRecords+int64(s.SealedRecords+s.OpenRecords) != 200 {
		t.Fatalf("size sealing: %+v", s)
	}

	c2 := testConfig(t)
	c2.FlushInterval = 20 * time.Millisecond
	b2 := open(t, c2)
	appendN(t, b2, "t", 0, 0, 3, 10)
	deadline := time.Now().Add(5 * time.Second)
	for b2.Stats().DiskChunks != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("open chunk not sealed by age: %+v", b2.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFIFOAndRelease(t *testing.T) {
	b := open(t, testConfig(t))
	for i := range int64(3) {
		appendN(t, b, "t", 0, i*10, 10, 10)
		b.Flush(context.Background())
	}
	c1, _ := b.Next(ctxT(t))
	c2, _ := b.Next(ctxT(t))
	if c1.Records[0].Offset != 0 || c2.Records[0].Offset != 10 {
		t.Fatalf("not FIFO: %d, %d", c1.Records[0].Offset, c2.Records[0].Offset)
	}
	b.Release(c1)
	again, _ := b.Next(ctxT(t))
	if again.Seq != c1.Seq {
		t.Fatalf("released chunk %d not handed out first, got %d", c1.Seq, again.Seq)
	}
	c3, _ := b.Next(ctxT(t))
	if c3.Records[0].Offset != 20 {
		t.Fatalf("third chunk starts at %d", c3.Records[0].Offset)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing idle: err = %v", err)
	}
	// A cancelled context gets no chunk even when one is idle.
	b.Release(c3)
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if c, err := b.Next(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context: chunk %v, err %v", c, err)
	}
}

func TestReopenServesStoredChunks(t *testing.T) {
	c := testConfig(t)
	b, err := Open(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, b, "t", 0, 0, 5, 10)
	b.Flush(context.Background())
	appendN(t, b, "t", 0, 5, 5, 10) // left open: Close writes it
	inflight, _ := b.Next(ctxT(t))  // in flight at close: must come back
	_ = inflight
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Append(ctxT(t), rec("t", 0, 99, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	b2 := open(t, c)
	s := b2.Stats()
	if s.DiskChunks != 2 || s.DiskRecords != 10 {
		t.Fatalf("after reopen: %+v", s)
	}
	var offsets []int64
	for range 2 {
		ch, err := b2.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ch.Records {
			offsets = append(offsets, r.Offset)
		}
		b2.Ack(context.Background(), ch, nil)
	}
	if fmt.Sprint(offsets) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("offsets after reopen = %v", offsets)
	}
	// New chunks continue the sequence rather than reusing numbers.
	appendN(t, b2, "t", 0, 10, 1, 1)
	if seq, _ := b2.Flush(context.Background()); seq <= inflight.Seq+1 {
		t.Fatalf("new seq %d reuses an old number", seq)
	}
}

func TestMemoryLimitBlocksAppends(t *testing.T) {
	c := testConfig(t)
	c.ChunkSize = 64 << 10
	c.MemoryLimit = 256 << 10
	b := open(t, c)
	// Fill disk with chunks and load them for delivery until memory is held.
	appendN(t, b, "t", 0, 0, 240, 1000)
	b.Flush(context.Background())
	var held []*Chunk
	for b.Stats().MemoryBytes < int64(c.MemoryLimit)-int64(c.ChunkSize) {
		ch, err := b.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ch)
	}
	// Appends fill what is left and then block.
	done := make(chan error, 1)
	go func() {
		for off := int64(1000); off < 1300; off++ {
			if err := b.Append(context.Background(), rec("t", 0, off, 1000)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats().Blocked == "" {
		if time.Now().After(deadline) {
			t.Fatalf("appends never blocked: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := b.Stats(); s.MemoryBytes > int64(c.MemoryLimit) {
		t.Fatalf("memory %d over limit %d", s.MemoryBytes, c.MemoryLimit)
	}
	select {
	case err := <-done:
		t.Fatalf("appends finished while memory was full: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	for _, ch := range held {
		if err := b.Ack(context.Background(), ch, nil); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("appends still blocked after memory was freed: %+v", b.Stats())
	}
	if s := b.Stats(); s.Blocked != "" {
		t.Fatalf("still reported blocked: %q", s.Blocked)
	}
}

func TestDiskLimitBlocksAppends(t *testing.T) {
	c := testConfig(t)
	c.ChunkSize = 64 << 10
	c.DiskLimit = 256 << 10
	b := open(t, c)
	done := make(chan error, 1)
	go func() {
		for off := int64(0); off < 1000; off++ {
			if err := b.Append(context.Background(), rec("t", 0, off, 1000)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats().Blocked != "disk_limit reached" {
		if time.Now().After(deadline) {
			t.Fatalf("appends never blocked on disk: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := b.Stats(); s.DiskBytes > int64(c.DiskLimit) {
		t.Fatalf("disk %d over limit %d", s.DiskBytes, c.DiskLimit)
	}
	// Deliver everything; appends resume and all 1000 records arrive.
	var got int
	for got < 1000 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ch, err := b.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			b.Flush(context.Background())
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range ch.Records {
			if r.Offset != int64(got+i) {
				t.Fatalf("record %d has offset %d", got+i, r.Offset)
			}
		}
		got += len(ch.Records)
		b.Ack(context.Background(), ch, nil)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAppendBlockedReturnsOnContext(t *testing.T) {
	c := testConfig(t)
	c.DiskLimit = 256 << 10
	b := open(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		for off := int64(0); ; off++ {
			if err := b.Append(ctx, rec("t", 0, off, 1000)); err != nil {
				errc <- err
				return
			}
		}
	}()
	for b.Stats().Blocked == "" {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Append ignored its context")
	}
}

func TestWatermarks(t *testing.T) {
	b := open(t, testConfig(t))
	tp0 := shipper.TopicPartition{Topic: "t", Partition: 0}
	tp1 := shipper.TopicPartition{Topic: "t", Partition: 1}
	if wm := b.Watermarks(); len(wm) != 0 {
		t.Fatalf("empty buffer has watermarks %v", wm)
	}
	appendN(t, b, "t", 0, 100, 10, 1) // open chunk holds 100..109
	if wm := b.Watermarks(); wm[tp0] != 100 {
		t.Fatalf("open chunk: wm = %v", wm)
	}
	b.Flush(context.Background())
	appendN(t, b, "t", 0, 110, 5, 1)
	appendN(t, b, "t", 1, 7, 3, 1)
	b.Flush(context.Background())
	if wm := b.Watermarks(); wm[tp0] != 100 || wm[tp1] != 7 {
		t.Fatalf("two stored chunks: wm = %v", wm)
	}
	first, _ := b.Next(ctxT(t))
	second, _ := b.Next(ctxT(t))
	// Acking the second chunk first must not advance past the first.
	b.Ack(context.Background(), second, nil)
	if wm := b.Watermarks(); wm[tp0] != 100 || wm[tp1] != 10 {
		t.Fatalf("out-of-order ack: wm = %v", wm)
	}
	b.Ack(context.Background(), first, nil)
	if wm := b.Watermarks(); wm[tp0] != 115 || wm[tp1] != 10 {
		t.Fatalf("all delivered: wm = %v", wm)
	}
}

func TestWatermarksSurviveRestart(t *testing.T) {
	c := testConfig(t)
	b, _ := Open(c, nil)
	appendN(t, b, "t", 0, 50, 10, 1)
	b.Close()
	b2 := open(t, c)
	tp := shipper.TopicPartition{Topic: "t", Partition: 0}
	if wm := b2.Watermarks(); wm[tp] != 50 {
		t.Fatalf("stored chunk from last run: wm = %v", wm)
	}
	// This run re-reads from an earlier committed offset: the watermark
	// stays at the lowest undelivered record.
	appendN(t, b2, "t", 0, 45, 20, 1)
	if wm := b2.Watermarks(); wm[tp] != 45 {
		t.Fatalf("re-read: wm = %v", wm)
	}
}

func TestDeadLettersStoredWithAck(t *testing.T) {
	c := testConfig(t)
	b, _ := Open(c, nil)
	appendN(t, b, "t", 0, 0, 3, 10)
	b.Flush(context.Background())
	ch, _ := b.Next(ctxT(t))
	dead := []DeadLetter{{Record: ch.Records[1], Type: "mapper_parsing_exception",
		Reasons: []string{"400 mapper_parsing_exception: failed to parse"}, Attempts: 1}}
	if err := b.Ack(context.Background(), ch, dead); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b2 := open(t, c)
	if s := b2.Stats(); s.DeadLetters != 1 || s.DeadLetter.Bytes == 0 {
		t.Fatalf("dead letters after reopen = %+v", s.DeadLetter)
	}
	got := listAll(t, b2, DeadLetterQuery{})
	if len(got) != 1 || got[0].Record.Offset != 1 || fmt.Sprint(got[0].Reasons) != fmt.Sprint(dead[0].Reasons) ||
		got[0].Type != "mapper_parsing_exception" || got[0].Attempts != 1 || got[0].Stored.IsZero() ||
		!bytes.Equal(got[0].Record.Value, rec("t", 0, 1, 10).Value) {
		t.Fatalf("dead letters = %+v", got)
	}
	// Keys follow chunk order across restarts.
	appendN(t, b2, "t", 0, 3, 1, 10)
	b2.Flush(context.Background())
	ch2, _ := b2.Next(ctxT(t))
	b2.Ack(context.Background(), ch2, []DeadLetter{{Record: ch2.Records[0], Reasons: []string{"x"}}})
	got = listAll(t, b2, DeadLetterQuery{})
	if len(got) != 2 || got[1].Record.Offset != 3 {
		t.Fatalf("dead letters = %+v", got)
	}
}

func TestCorruptChunkQuarantined(t *testing.T) {
	c := testConfig(t)
	b, _ := Open(c, nil)
	appendN(t, b, "t", 0, 0, 5, 10)
	bad, _ := b.Flush(context.Background())
	appendN(t, b, "t", 0, 5, 5, 10)
	b.Flush(context.Background())
	// Corrupt the first chunk's stored value behind the buffer's back.
	err := b.db.Update(func(txn *badger.Txn) error { return txn.Set(key(prefixChunk, bad), []byte("SHC1garbage")) })
	if err != nil {
		t.Fatal(err)
	}
	ch, err := b.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Records[0].Offset != 5 {
		t.Fatalf("served chunk starts at %d, want the intact one at 5", ch.Records[0].Offset)
	}
	if s := b.Stats(); s.Quarantined != 1 {
		t.Fatalf("quarantined = %d", s.Quarantined)
	}
	b.Ack(context.Background(), ch, nil)
	// The quarantined records were never delivered: the commit stays below them.
	if wm := b.Watermarks(); wm[shipper.TopicPartition{Topic: "t"}] != 0 {
		t.Fatalf("wm = %v, want 0", wm)
	}
	b.Close()

	// In the same run, a consumer that starts again (a rebalance gave the
	// partition back) resumes at the quarantined records, not after them;
	// once it appended them again, the quarantined chunk no longer holds
	// the commit back, the new chunk does until delivered.
	c1 := c
	c1.Dir = t.TempDir()
	b1 := open(t, c1)
	appendN(t, b1, "t", 0, 0, 5, 10)
	bad, _ = b1.Flush(context.Background())
	appendN(t, b1, "t", 0, 5, 5, 10)
	b1.Flush(context.Background())
	if err := b1.db.Update(func(txn *badger.Txn) error { return txn.Set(key(prefixChunk, bad), []byte("SHC1garbage")) }); err != nil {
		t.Fatal(err)
	}
	ch, _ = b1.Next(ctxT(t))
	b1.Ack(context.Background(), ch, nil)
	if got := b1.ResumeOffsets()[shipper.TopicPartition{Topic: "t"}]; got != 0 {
		t.Fatalf("resume offset with a chunk quarantined in this run = %d, want its first offset 0", got)
	}
	appendN(t, b1, "t", 0, 0, 5, 10)
	b1.Flush(context.Background())
	ch, _ = b1.Next(ctxT(t))
	b1.Ack(context.Background(), ch, nil)
	if wm := b1.Watermarks(); wm[shipper.TopicPartition{Topic: "t"}] != 5 {
		t.Fatalf("quarantined records read again and delivered: wm = %v, want 5", wm)
	}
	b2 := open(t, c)
	if s := b2.Stats(); s.Quarantined != 1 || s.DiskChunks != 0 {
		t.Fatalf("after reopen: %+v", s)
	}
	// The next run re-reads the quarantined records from Kafka (the commit
	// stayed below them), so they no longer hold the watermark back.
	appendN(t, b2, "t", 0, 0, 10, 10)
	if wm := b2.Watermarks(); wm[shipper.TopicPartition{Topic: "t"}] != 0 {
		t.Fatalf("re-read records: wm = %v, want 0 (open chunk)", wm)
	}
	b2.Flush(context.Background())
	for range 1 {
		ch, _ := b2.Next(ctxT(t))
		b2.Ack(context.Background(), ch, nil)
	}
	if wm := b2.Watermarks(); wm[shipper.TopicPartition{Topic: "t"}] != 10 {
		t.Fatalf("re-read and delivered: wm = %v, want 10", wm)
	}
}

func TestUnwritableDirectoryBlocksAndResumes(t *testing.T) {
	b := open(t, testConfig(t))
	var mu sync.Mutex
	failing := errors.New("open 000001.vlog: read-only file system")
	b.failWrites = func() error { mu.Lock(); defer mu.Unlock(); return failing }
	done := make(chan error, 1)
	go func() {
		for off := int64(0); off < 300; off++ {
			if err := b.Append(context.Background(), rec("t", 0, off, 1000)); err != nil {
				done <- err
				return
			}
		}
		_, err := b.Flush(context.Background())
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasPrefix(b.Stats().Blocked, "chunk write failing") {
		if time.Now().After(deadline) {
			t.Fatalf("appends not blocked by failing writes: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := b.Stats(); s.DiskChunks != 0 || s.MemoryBytes > int64(testConfig(t).MemoryLimit) {
		t.Fatalf("while failing: %+v", s)
	}
	// The records waiting in memory still hold the commit back.
	if wm := b.Watermarks(); wm[shipper.TopicPartition{Topic: "t"}] != 0 {
		t.Fatalf("wm = %v while the first chunk is unwritten", wm)
	}
	mu.Lock()
	failing = nil
	mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("appends did not resume after writes recovered: %+v", b.Stats())
	}
	if s := b.Stats(); s.DiskRecords != 300 || s.Blocked != "" {
		t.Fatalf("after recovery: %+v", s)
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"dir", func(c *Config) { c.Dir = "" }, "dir"},
		{"tiny chunk", func(c *Config) { c.ChunkSize = 1000 }, "chunk_size"},
		{"flush interval", func(c *Config) { c.FlushInterval = time.Millisecond }, "flush_interval"},
		{"memory below chunks", func(c *Config) { c.MemoryLimit = c.ChunkSize }, "memory_limit"},
		{"disk below chunks", func(c *Config) { c.DiskLimit = c.ChunkSize }, "disk_limit"},
	}
	ok := DefaultConfig()
	ok.Dir = "/x"
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			var fe *shipper.FieldError
			if !errors.As(err, &fe) || fe.Path != tc.key {
				t.Fatalf("err = %v, want a FieldError for %s", err, tc.key)
			}
		})
	}
}

func TestCompressedChunks(t *testing.T) {
	c := testConfig(t)
	c.Compression = "zstd"
	b := open(t, c)
	appendN(t, b, "t", 0, 0, 50, 2000) // repetitive values compress well
	b.Flush(context.Background())
	s := b.Stats()
	if s.DiskBytes*10 > 50*2000 {
		t.Fatalf("stored %d bytes for 100 KB of repetitive records: not compressed", s.DiskBytes)
	}
	var got []shipper.Record
	for len(got) < 50 {
		ch, err := b.Next(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if ch.RawBytes <= ch.Bytes {
			t.Fatalf("chunk raw=%d stored=%d", ch.RawBytes, ch.Bytes)
		}
		// Memory counts the decompressed copy while the chunk is loaded.
		if mem := b.Stats().MemoryBytes; mem < ch.RawBytes {
			t.Fatalf("memory %d < decompressed size %d", mem, ch.RawBytes)
		}
		got = append(got, ch.Records...)
		b.Ack(context.Background(), ch, nil)
	}
	for i, r := range got {
		if r.Offset != int64(i) || !bytes.Equal(r.Value, rec("t", 0, int64(i), 2000).Value) {
			t.Fatalf("record %d decoded as offset %d", i, r.Offset)
		}
	}
	if mem := b.Stats().MemoryBytes; mem != 0 {
		t.Fatalf("memory after ack = %d", mem)
	}
	// A corrupted compressed chunk is detected, not decoded into garbage.
	w := newChunkWriter(16, time.Now())
	w.add(rec("t", 0, 1, 3000))
	data, _ := w.seal(1, true)
	data[len(data)-3] ^= 0xff
	if _, err := decodeChunk(data, 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt compressed chunk: %v", err)
	}
}

func TestGCReclaimsDeletedChunks(t *testing.T) {
	c := testConfig(t)
	c.ChunkSize = 1 << 20
	c.MemoryLimit = 8 << 20
	c.DiskLimit = 1 << 30
	b := open(t, c)
	appendN(t, b, "t", 0, 0, 120, 1<<20-200) // ~120 MiB in 1 MiB chunks
	b.Flush(context.Background())
	b.refreshDisk()
	full := b.Stats().DiskUsage
	if full < 100<<20 {
		t.Fatalf("disk usage %d after writing 120 MiB", full)
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		ch, err := b.Next(ctx)
		cancel()
		if err != nil {
			break
		}
		if err := b.Ack(context.Background(), ch, nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := b.Stats()
		if s.DiskUsage < full/3 && s.GCRuns > 0 && s.GCReclaimed > 0 {
			t.Logf("disk usage %d → %d, %d GC runs", full, s.DiskUsage, s.GCRuns)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("space not reclaimed: usage %d of %d, %+v", s.DiskUsage, full, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFilesystemFullBlocksAndResumes(t *testing.T) {
	c := testConfig(t)
	b := open(t, c)
	appendN(t, b, "t", 0, 0, 10, 100)
	b.Flush(context.Background())
	// Demand more free space than any test machine has: the filesystem is
	// "full" for this buffer.
	b.mu.Lock()
	b.cfg.MinFreeSpace = 1 << 60
	b.mu.Unlock()
	b.refreshDisk()
	done := make(chan error, 1)
	go func() {
		for off := int64(10); off < 200; off++ {
			if err := b.Append(context.Background(), rec("t", 0, off, 1000)); err != nil {
				done <- err
				return
			}
		}
		_, err := b.Flush(context.Background())
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasPrefix(b.Stats().Blocked, "filesystem full") {
		if time.Now().After(deadline) {
			t.Fatalf("not blocked on a full filesystem: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := b.Stats(); s.DiskRecords != 10 {
		t.Fatalf("something was written while the filesystem was full: %+v", s)
	}
	// Space comes back: appends resume without anyone's help.
	b.mu.Lock()
	b.cfg.MinFreeSpace = minFreeFloor
	b.mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("appends did not resume: %+v", b.Stats())
	}
	if s := b.Stats(); s.DiskRecords != 200 || s.Blocked != "" || s.BlockedSeconds <= 0 {
		t.Fatalf("after resuming: %+v", s)
	}
}

func TestAckWaitsOnNearlyFullFilesystem(t *testing.T) {
	b := open(t, testConfig(t))
	appendN(t, b, "t", 0, 0, 10, 100)
	b.Flush(context.Background())
	ch, err := b.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	// Something else filled the disk: 1 MiB free.
	b.mu.Lock()
	b.fsFree = 1 << 20
	b.mu.Unlock()
	acked := make(chan error, 1)
	go func() { acked <- b.Ack(context.Background(), ch, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.Stats().AckBlocked, "acknowledgements wait") {
		if time.Now().After(deadline) {
			t.Fatalf("Ack did not wait for room: %+v", b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := b.Stats(); s.DiskChunks != 1 || s.InFlightChunks != 1 {
		t.Fatalf("chunk changed while the disk was full: %+v", s)
	}
	// The maintenance loop measures the real filesystem again within a
	// second and the Ack goes through.
	select {
	case err := <-acked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Ack still waiting after space came back: %+v", b.Stats())
	}
	if s := b.Stats(); s.DiskChunks != 0 || s.AckBlocked != "" {
		t.Fatalf("after ack: %+v", s)
	}
}

// An empty value-log file in a directory another process has open may be
// that process's, between creating it and writing its header: removing it
// would lose what it then writes. Only a directory nobody holds is repaired.
func TestOpenLeavesEmptyValueLogOfARunningBuffer(t *testing.T) {
	c := testConfig(t)
	running := open(t, c)
	defer running.Close()
	empty := filepath.Join(c.Dir, "000099.vlog")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := Open(c, nil); err == nil {
		b.Close()
		t.Fatal("a second Open of a directory in use succeeded")
	}
	if _, err := Inspect(c.Dir); err == nil {
		t.Fatal("Inspect of a directory in use succeeded")
	}
	if _, err := os.Stat(empty); err != nil {
		t.Fatalf("the running buffer's empty value-log file was removed: %v", err)
	}
}

// shipper buffer inspect is what an operator runs after a crash: it reads a
// directory a kill -9 left with an empty value-log file too.
func TestInspectAfterKillLeftEmptyValueLog(t *testing.T) {
	c := testConfig(t)
	b := open(t, c)
	appendN(t, b, "t", 0, 0, 10, 100)
	b.Flush(context.Background())
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "000099.vlog"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := Inspect(c.Dir)
	if err != nil {
		t.Fatalf("inspect with an empty value-log file: %v", err)
	}
	if inv.Records != 10 {
		t.Fatalf("inspect found %d records, want 10", inv.Records)
	}
}

func TestInspect(t *testing.T) {
	c := testConfig(t)
	b, _ := Open(c, nil)
	appendN(t, b, "t", 0, 0, 10, 100)
	appendN(t, b, "t", 1, 5, 5, 100)
	b.Flush(context.Background())
	appendN(t, b, "u", 0, 0, 3, 100)
	b.Flush(context.Background())
	if _, err := Inspect(c.Dir); err == nil {
		t.Fatal("Inspect opened a buffer an agent holds")
	}
	ch, _ := b.Next(ctxT(t))
	b.Ack(context.Background(), ch, []DeadLetter{{Record: ch.Records[0], Reasons: []string{"x"}}})
	appendN(t, b, "u", 0, 3, 2, 100) // written by Close
	b.Close()
	inv, err := Inspect(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Chunks) != 2 || inv.Records != 5 || inv.DeadLetters != 1 || inv.Chunks[0].State != "stored" {
		t.Fatalf("inventory = %+v", inv)
	}
	want := []OffsetRange{{"u", 0, 0, 2}}
	if fmt.Sprint(inv.Chunks[0].Ranges) != fmt.Sprint(want) {
		t.Fatalf("ranges = %v", inv.Chunks[0].Ranges)
	}
	// Read-only: the buffer opens and serves the same chunks afterwards.
	b2 := open(t, c)
	if s := b2.Stats(); s.DiskChunks != 2 || s.DiskRecords != 5 {
		t.Fatalf("after inspect: %+v", s)
	}
}

func TestResumeOffsets(t *testing.T) {
	c := testConfig(t)
	b, _ := Open(c, nil)
	tp0, tp1 := shipper.TopicPartition{Topic: "t", Partition: 0}, shipper.TopicPartition{Topic: "t", Partition: 1}
	appendN(t, b, "t", 0, 0, 10, 10)
	b.Flush(context.Background())
	appendN(t, b, "t", 0, 10, 5, 10)
	appendN(t, b, "t", 1, 40, 2, 10)
	if r := b.ResumeOffsets(); r[tp0] != 15 || r[tp1] != 42 {
		t.Fatalf("running: resume = %v", r)
	}
	b.Flush(context.Background())
	// Delivered records count as held: reading need not return to them.
	ch, _ := b.Next(ctxT(t))
	b.Ack(context.Background(), ch, nil)
	b.Close()

	b2, _ := Open(c, nil)
	if r := b2.ResumeOffsets(); r[tp0] != 15 || r[tp1] != 42 {
		t.Fatalf("after restart: resume = %v", r)
	}
	// A stored chunk found corrupt is quarantined; the next run must read
	// its records again, so resuming starts at its first offset.
	appendN(t, b2, "t", 0, 20, 5, 10)
	last, _ := b2.Flush(context.Background())
	// Corrupt the chunk holding t/0 10..14; Next quarantines it and serves
	// the next one.
	if err := b2.db.Update(func(txn *badger.Txn) error { return txn.Set(key(prefixChunk, last-1), []byte("SHC1junk")) }); err != nil {
		t.Fatal(err)
	}
	ch2, err := b2.Next(ctxT(t))
	if err != nil || ch2.Seq != last {
		t.Fatalf("Next = %v, %v; want the chunk after the corrupt one", ch2, err)
	}
	b2.Release(ch2)
	if s := b2.Stats(); s.Quarantined != 1 {
		t.Fatalf("quarantined = %d", s.Quarantined)
	}
	b2.Close()
	b3 := open(t, c)
	if r := b3.ResumeOffsets(); r[tp0] != 10 {
		t.Fatalf("after a quarantine: resume = %v, want t/0 at 10 (the quarantined chunk's first offset)", r)
	}
}

// A kill -9 between badger creating a value-log file and writing its header
// leaves the file empty; badger then refuses to open the directory ("Open
// existing file ... Create a new file"), and the agent could not start again
// (seen in CI's TestKillMidStream). Open must get past it.
func TestOpenAfterKillLeftEmptyValueLog(t *testing.T) {
	c := testConfig(t)
	b := open(t, c)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(c.Dir, "000099.vlog")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := Open(c, nil)
	if err != nil {
		t.Fatalf("reopen with an empty value-log file: %v", err)
	}
	defer b.Close()
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("the empty value-log file is still there: %v", err)
	}
}
