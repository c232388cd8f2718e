package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/compress"
)

// testRecord is a record to encode; nil Key or Value is null.
type testRecord struct {
	key, value []byte
	headers    []batchHeader
}

// encodeBatch encodes a v2 record batch as a broker sends it, its records
// at base, base+1, ...; attrs may hold a kafka-go compression code.
func encodeBatch(t testing.TB, base int64, attrs int16, producerID int64, ts int64, recs ...testRecord) []byte {
	t.Helper()
	var body []byte
	for i, r := range recs {
		var rec []byte
		rec = append(rec, 0)
		rec = binary.AppendVarint(rec, int64(i)) // timestamp delta
		rec = binary.AppendVarint(rec, int64(i)) // offset delta
		for _, b := range [][]byte{r.key, r.value} {
			if b == nil {
				rec = binary.AppendVarint(rec, -1)
			} else {
				rec = binary.AppendVarint(rec, int64(len(b)))
				rec = append(rec, b...)
			}
		}
		rec = binary.AppendVarint(rec, int64(len(r.headers)))
		for _, h := range r.headers {
			rec = binary.AppendVarint(rec, int64(len(h.key)))
			rec = append(rec, h.key...)
			if h.value == nil {
				rec = binary.AppendVarint(rec, -1)
				continue
			}
			rec = binary.AppendVarint(rec, int64(len(h.value)))
			rec = append(rec, h.value...)
		}
		body = binary.AppendVarint(body, int64(len(rec)))
		body = append(body, rec...)
	}
	if code := attrs & attrCompression; code != 0 {
		var buf bytes.Buffer
		w := compress.Compression(code).Codec().NewWriter(&buf)
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		body = buf.Bytes()
	}
	b := make([]byte, batchHeaderLen, batchHeaderLen+len(body))
	binary.BigEndian.PutUint64(b[0:], uint64(base))
	binary.BigEndian.PutUint32(b[8:], uint32(batchHeaderLen-batchLenOffset+len(body)))
	b[16] = 2
	binary.BigEndian.PutUint16(b[21:], uint16(attrs))
	binary.BigEndian.PutUint32(b[23:], uint32(max(len(recs)-1, 0)))
	binary.BigEndian.PutUint64(b[27:], uint64(ts))
	binary.BigEndian.PutUint64(b[35:], uint64(ts+int64(len(recs))))
	binary.BigEndian.PutUint64(b[43:], uint64(producerID))
	binary.BigEndian.PutUint32(b[57:], uint32(len(recs)))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[batchCRCStart:], castagnoli))
	return b
}

// TestBatchRecords: every compression, null and empty keys and values,
// headers, offsets and timestamps (create time and log-append time) come
// back as written; a partial last batch ends the input quietly.
func TestBatchRecords(t *testing.T) {
	recs := []testRecord{
		{key: []byte("k"), value: []byte("v1"), headers: []batchHeader{{"h", []byte("x")}, {"h", nil}}},
		{key: nil, value: []byte{}},
		{key: []byte{}, value: nil},
	}
	for _, tc := range []struct {
		name  string
		attrs int16
	}{{"none", 0}, {"gzip", 1}, {"snappy", 2}, {"lz4", 3}, {"zstd", 4}, {"log-append time", attrLogAppendTime}} {
		t.Run(tc.name, func(t *testing.T) {
			raw := encodeBatch(t, 100, tc.attrs, 7, 1_700_000_000_000, recs...)
			two := append(raw[:len(raw):len(raw)], encodeBatch(t, 103, 0, 7, 0, testRecord{value: []byte("next")})...)
			// A partial third batch: the broker cut the response short.
			two = append(two, raw[:30]...)
			b, rest, ok, err := nextBatch(two)
			if err != nil || !ok {
				t.Fatalf("nextBatch: %v, %v", ok, err)
			}
			var got []batchRecord
			if err := b.each(func(r *batchRecord) error { got = append(got, *r); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || b.lastOffset() != 102 {
				t.Fatalf("%d records, last offset %d", len(got), b.lastOffset())
			}
			for i, r := range got {
				w := recs[i]
				wantTime := time.UnixMilli(1_700_000_000_000 + int64(i)).UTC()
				if tc.attrs&attrLogAppendTime != 0 {
					wantTime = time.UnixMilli(1_700_000_000_000 + 3).UTC()
				}
				if r.offset != 100+int64(i) || !r.time.Equal(wantTime) ||
					!bytes.Equal(r.key, w.key) || (r.key == nil) != (w.key == nil) ||
					!bytes.Equal(r.value, w.value) || (r.value == nil) != (w.value == nil) || len(r.headers) != len(w.headers) {
					t.Fatalf("record %d = %+v, want %+v at offset %d, time %v", i, r, w, 100+i, wantTime)
				}
			}
			if h := got[0].headers; h[0].key != "h" || string(h[0].value) != "x" || h[1].value != nil {
				t.Fatalf("headers %+v", h)
			}
			b2, rest, ok, err := nextBatch(rest)
			if err != nil || !ok || b2.baseOffset != 103 {
				t.Fatalf("second batch: %+v, %v, %v", b2, ok, err)
			}
			if _, _, ok, err := nextBatch(rest); ok || err != nil {
				t.Fatalf("partial batch: ok %v, err %v; want the end of the input", ok, err)
			}
		})
	}
}

// TestBatchErrors: a corrupt batch and one of the old message format are
// errors, never records.
func TestBatchErrors(t *testing.T) {
	raw := encodeBatch(t, 0, 0, -1, 0, testRecord{value: []byte("v")})
	corrupt := bytes.Clone(raw)
	corrupt[len(corrupt)-1] ^= 0xff
	if _, _, _, err := nextBatch(corrupt); err == nil {
		t.Fatal("a corrupt batch was read")
	}
	old := bytes.Clone(raw)
	old[16] = 1
	if _, _, _, err := nextBatch(old); !errors.Is(err, errOldFormat) {
		t.Fatalf("old format: %v", err)
	}
}
