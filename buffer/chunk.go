package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/shipper-agent/shipper"
)

// Chunk encoding (the value stored under a chunk key, split into pieces
// when larger than pieceSize; see pieces.go):
//
//	magic "SHC4" | crc32c(stored) uint32 BE | flags byte | stored
//	stored  = payload, or zstd(payload) when flags has flagZstd
//	payload = record*
//	record  = uvarint len(topic) topic | uvarint len(topic id) topic id |
//	          varint partition | varint offset |
//	          varint unix-millis | uvarint len(key) key | uvarint len(value)+1 value |
//	          uvarint headers | (uvarint len(key) key | uvarint len(value) value)*
//
// A record's value length is stored plus one, and 0 stands for a null
// value (a tombstone), so that it stays distinct from an empty one.
// Older chunks are still read: "SHC3" has no topic id; "SHC2" also stores
// the value length as it is (a
// null and an empty value both read as null), and "SHC1", written before
// records carried headers, ends each record after its value.
//
// The checksum covers what is stored, so a torn or corrupted value is
// detected on load, before decompression, instead of being delivered as
// garbage.
var (
	chunkMagic   = [4]byte{'S', 'H', 'C', '4'}
	chunkMagicV3 = [4]byte{'S', 'H', 'C', '3'}
	chunkMagicV2 = [4]byte{'S', 'H', 'C', '2'}
	chunkMagicV1 = [4]byte{'S', 'H', 'C', '1'}
)

const (
	chunkHeaderLen = 9
	flagZstd       = 1 << 0
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks a stored chunk that cannot be decoded.
var ErrCorrupt = errors.New("corrupt chunk")

// chunkWriter accumulates encoded records of the open chunk. Records are
// encoded on append so the open chunk costs its encoded size in memory and
// nothing per record.
type chunkWriter struct {
	buf     []byte
	records int
	ranges  map[shipper.TopicPartition]*OffsetRange
	created time.Time
}

func newChunkWriter(capacity int, now time.Time) *chunkWriter {
	w := &chunkWriter{buf: make([]byte, chunkHeaderLen, capacity+chunkHeaderLen), created: now,
		ranges: make(map[shipper.TopicPartition]*OffsetRange)}
	copy(w.buf, chunkMagic[:])
	return w
}

// encodedLen is an upper bound of a record's encoded size.
func encodedLen(r *shipper.Record) int {
	n := len(r.Topic) + len(r.TopicID) + len(r.Key) + len(r.Value) + 8*binary.MaxVarintLen64
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 2*binary.MaxVarintLen64
	}
	return n
}

func (w *chunkWriter) add(r *shipper.Record) {
	b := w.buf
	b = binary.AppendUvarint(b, uint64(len(r.Topic)))
	b = append(b, r.Topic...)
	b = binary.AppendUvarint(b, uint64(len(r.TopicID)))
	b = append(b, r.TopicID...)
	b = binary.AppendVarint(b, int64(r.Partition))
	b = binary.AppendVarint(b, r.Offset)
	b = binary.AppendVarint(b, r.Time.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	if r.Value == nil {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(r.Value))+1)
		b = append(b, r.Value...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	w.buf = b
	w.records++
	tp := r.TP()
	if rg, ok := w.ranges[tp]; ok {
		rg.Last = r.Offset
	} else {
		w.ranges[tp] = &OffsetRange{Topic: tp.Topic, Partition: tp.Partition, First: r.Offset, Last: r.Offset}
	}
}

// rangeList returns the chunk's offset ranges so far.
func (w *chunkWriter) rangeList() []OffsetRange {
	out := make([]OffsetRange, 0, len(w.ranges))
	for _, rg := range w.ranges {
		out = append(out, *rg)
	}
	return out
}

// seal finishes the encoding and returns the value to store and its
// metadata. With compress, the value is a new, compressed buffer.
func (w *chunkWriter) seal(seq uint64, compress bool) ([]byte, Meta) {
	raw := int64(len(w.buf))
	data := w.buf
	if compress {
		data = make([]byte, chunkHeaderLen, chunkHeaderLen+len(w.buf)/4)
		copy(data, chunkMagic[:])
		data[8] = flagZstd
		data = zstdEncoder.EncodeAll(w.buf[chunkHeaderLen:], data)
	}
	binary.BigEndian.PutUint32(data[4:8], crcOf(data[chunkHeaderLen:]))
	m := Meta{Seq: seq, Records: w.records, Bytes: int64(len(data)), RawBytes: raw, Created: w.created}
	m.Ranges = w.rangeList()
	sortRanges(m.Ranges)
	return data, m
}

// zstdEncoder and zstdDecoder are stateless for EncodeAll/DecodeAll and safe
// for concurrent use; one of each serves every buffer.
var (
	zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
)

// decodeChunk decodes a stored chunk. The records' Key and Value alias data
// (or, for a compressed chunk, its decompressed copy).
func decodeChunk(data []byte, want int) ([]shipper.Record, error) {
	if len(data) < chunkHeaderLen {
		return nil, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	var withHeaders, nullable, withTopicID bool
	switch [4]byte(data[:4]) {
	case chunkMagic:
		withHeaders, nullable, withTopicID = true, true, true
	case chunkMagicV3:
		withHeaders, nullable = true, true
	case chunkMagicV2:
		withHeaders = true
	case chunkMagicV1:
	default:
		return nil, fmt.Errorf("%w: bad header", ErrCorrupt)
	}
	payload := data[chunkHeaderLen:]
	if got := crcOf(payload); got != binary.BigEndian.Uint32(data[4:8]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	switch data[8] {
	case 0:
	case flagZstd:
		var err error
		if payload, err = zstdDecoder.DecodeAll(payload, nil); err != nil {
			return nil, fmt.Errorf("%w: decompress: %v", ErrCorrupt, err)
		}
	default:
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, data[8])
	}
	recs := make([]shipper.Record, 0, want)
	// Topic names and ids repeat in every record; share one string per
	// distinct value.
	var lastTopic, lastTopicID string
	for len(payload) > 0 {
		var r shipper.Record
		var ok bool
		var topic []byte
		if topic, payload, ok = readBytes(payload); !ok {
			return nil, fmt.Errorf("%w: record %d: topic", ErrCorrupt, len(recs))
		}
		if string(topic) != lastTopic {
			lastTopic = string(topic)
		}
		r.Topic = lastTopic
		if withTopicID {
			var id []byte
			if id, payload, ok = readBytes(payload); !ok {
				return nil, fmt.Errorf("%w: record %d: topic id", ErrCorrupt, len(recs))
			}
			if string(id) != lastTopicID {
				lastTopicID = string(id)
			}
			r.TopicID = lastTopicID
		}
		var p, off, ms int64
		if p, payload, ok = readVarint(payload); !ok {
			return nil, fmt.Errorf("%w: record %d: partition", ErrCorrupt, len(recs))
		}
		if off, payload, ok = readVarint(payload); !ok {
			return nil, fmt.Errorf("%w: record %d: offset", ErrCorrupt, len(recs))
		}
		if ms, payload, ok = readVarint(payload); !ok {
			return nil, fmt.Errorf("%w: record %d: time", ErrCorrupt, len(recs))
		}
		r.Partition, r.Offset, r.Time = int32(p), off, time.UnixMilli(ms).UTC()
		if r.Key, payload, ok = readBytes(payload); !ok {
			return nil, fmt.Errorf("%w: record %d: key", ErrCorrupt, len(recs))
		}
		if nullable {
			r.Value, payload, ok = readNullable(payload)
		} else {
			r.Value, payload, ok = readBytes(payload)
		}
		if !ok {
			return nil, fmt.Errorf("%w: record %d: value", ErrCorrupt, len(recs))
		}
		if withHeaders {
			if r.Headers, payload, ok = readHeaders(payload); !ok {
				return nil, fmt.Errorf("%w: record %d: headers", ErrCorrupt, len(recs))
			}
		}
		recs = append(recs, r)
	}
	if len(recs) != want {
		return nil, fmt.Errorf("%w: %d records, metadata says %d", ErrCorrupt, len(recs), want)
	}
	return recs, nil
}

// readHeaders reads a record's headers; their values alias b.
func readHeaders(b []byte) ([]shipper.Header, []byte, bool) {
	n, w := binary.Uvarint(b)
	// Each header takes at least two bytes: a bound before allocating.
	if w <= 0 || n > uint64(len(b)-w)/2 {
		return nil, b, false
	}
	b = b[w:]
	if n == 0 {
		return nil, b, true
	}
	hs := make([]shipper.Header, n)
	for i := range hs {
		var k []byte
		var ok bool
		if k, b, ok = readBytes(b); !ok {
			return nil, b, false
		}
		hs[i].Key = string(k)
		if hs[i].Value, b, ok = readBytes(b); !ok {
			return nil, b, false
		}
	}
	return hs, b, true
}

func readVarint(b []byte) (int64, []byte, bool) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}

func readBytes(b []byte) ([]byte, []byte, bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || uint64(len(b)-n) < l {
		return nil, b, false
	}
	b = b[n:]
	if l == 0 {
		return nil, b, true
	}
	return b[:l:l], b[l:], true
}

// readNullable reads a length-plus-one prefixed value: nil for 0, else a
// (possibly empty, never nil) slice aliasing b.
func readNullable(b []byte) ([]byte, []byte, bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n)+1 {
		return nil, b, false
	}
	b = b[n:]
	if l == 0 {
		return nil, b, true
	}
	l--
	return b[:l:l], b[l:], true
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
