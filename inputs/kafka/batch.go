package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/segmentio/kafka-go/compress"
)

// Record batches (Kafka's message format v2), read from a fetch response's
// bytes. kafka-go's protocol package decodes every batch of a response
// into pages of its own, at least 64 KiB per batch: a response of many
// small batches (one record each, as a low-traffic producer writes them)
// would take hundreds of times its size in memory. Here the response is
// one byte slice, and records alias it (or a batch's decompressed bytes)
// until they are appended, which copies them.

const (
	batchHeaderLen = 61 // baseOffset through recordsCount
	batchLenOffset = 12 // what precedes the batch length's count: baseOffset and batchLength
	batchCRCStart  = 21 // attributes onwards are covered by the CRC

	attrCompression   = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20

	controlAbort = 0 // control record type of an abort marker
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// batch is one record batch's header and its records' bytes (decompressed).
type batch struct {
	baseOffset      int64
	lastOffsetDelta int32
	attributes      int16
	firstTimestamp  int64
	maxTimestamp    int64
	producerID      int64
	count           int32
	records         []byte
}

func (b *batch) transactional() bool { return b.attributes&attrTransactional != 0 }
func (b *batch) control() bool       { return b.attributes&attrControl != 0 }

// lastOffset is the offset of the batch's last record, also when
// compaction removed records from it.
func (b *batch) lastOffset() int64 { return b.baseOffset + int64(b.lastOffsetDelta) }

// batchRecord is one record of a batch; Key and Value alias the batch's
// bytes. A nil Key or Value is a null one.
type batchRecord struct {
	offset  int64
	time    time.Time
	key     []byte
	value   []byte
	headers []batchHeader
}

type batchHeader struct {
	key   string
	value []byte
}

// errOldFormat marks message sets of format v0/v1 (Kafka before 0.11).
var errOldFormat = errors.New("message format v0/v1 (written by Kafka clients before 0.11) is not supported")

// nextBatch reads the first batch of raw and returns it and the rest. A
// batch cut short at the end of raw (brokers may send a partial last one)
// ends the input: ok is false, err nil.
func nextBatch(raw []byte) (b batch, rest []byte, ok bool, err error) {
	if len(raw) < batchLenOffset {
		return b, nil, false, nil
	}
	length := int64(binary.BigEndian.Uint32(raw[8:12]))
	total := batchLenOffset + length
	if int64(len(raw)) < total {
		return b, nil, false, nil
	}
	if len(raw) > 16 && raw[16] != 2 {
		return b, nil, false, errOldFormat
	}
	if total < batchHeaderLen {
		return b, nil, false, fmt.Errorf("record batch of %d bytes, shorter than its header", total)
	}
	data := raw[:total]
	if crc := binary.BigEndian.Uint32(data[17:21]); crc != crc32.Checksum(data[batchCRCStart:], castagnoli) {
		return b, nil, false, fmt.Errorf("record batch at offset %d: checksum mismatch", int64(binary.BigEndian.Uint64(data)))
	}
	b = batch{
		baseOffset:      int64(binary.BigEndian.Uint64(data[0:8])),
		attributes:      int16(binary.BigEndian.Uint16(data[21:23])),
		lastOffsetDelta: int32(binary.BigEndian.Uint32(data[23:27])),
		firstTimestamp:  int64(binary.BigEndian.Uint64(data[27:35])),
		maxTimestamp:    int64(binary.BigEndian.Uint64(data[35:43])),
		producerID:      int64(binary.BigEndian.Uint64(data[43:51])),
		count:           int32(binary.BigEndian.Uint32(data[57:61])),
		records:         data[batchHeaderLen:],
	}
	if code := b.attributes & attrCompression; code != 0 {
		codec := compress.Compression(code).Codec()
		if codec == nil {
			return b, nil, false, fmt.Errorf("record batch at offset %d: unknown compression %d", b.baseOffset, code)
		}
		r := codec.NewReader(bytes.NewReader(b.records))
		dec, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return b, nil, false, fmt.Errorf("record batch at offset %d: %s: %w", b.baseOffset, codec.Name(), err)
		}
		b.records = dec
	}
	return b, raw[total:], true, nil
}

// each calls fn for every record of the batch, in order.
func (b *batch) each(fn func(*batchRecord) error) error {
	p := b.records
	for i := int32(0); i < b.count; i++ {
		var r batchRecord
		var err error
		if r, p, err = b.record(p); err != nil {
			return fmt.Errorf("record %d of the batch at offset %d: %w", i, b.baseOffset, err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return nil
}

// record decodes one record from p.
func (b *batch) record(p []byte) (batchRecord, []byte, error) {
	var r batchRecord
	length, p, err := varint(p)
	if err != nil || length < 0 || int64(len(p)) < length {
		return r, nil, errors.New("bad length")
	}
	rest := p[length:]
	p = p[:length]
	if len(p) < 1 {
		return r, nil, errors.New("no attributes")
	}
	p = p[1:] // attributes, unused
	var tsDelta, offDelta, n int64
	if tsDelta, p, err = varint(p); err != nil {
		return r, nil, err
	}
	if offDelta, p, err = varint(p); err != nil {
		return r, nil, err
	}
	if r.key, p, err = nullableBytes(p); err != nil {
		return r, nil, fmt.Errorf("key: %w", err)
	}
	if r.value, p, err = nullableBytes(p); err != nil {
		return r, nil, fmt.Errorf("value: %w", err)
	}
	if n, p, err = varint(p); err != nil || n < 0 || n > int64(len(p)) {
		return r, nil, errors.New("bad header count")
	}
	if n > 0 {
		r.headers = make([]batchHeader, n)
		for i := range r.headers {
			var k []byte
			if k, p, err = nullableBytes(p); err != nil {
				return r, nil, fmt.Errorf("header key: %w", err)
			}
			r.headers[i].key = string(k)
			if r.headers[i].value, p, err = nullableBytes(p); err != nil {
				return r, nil, fmt.Errorf("header value: %w", err)
			}
		}
	}
	r.offset = b.baseOffset + offDelta
	ts := b.firstTimestamp + tsDelta
	if b.attributes&attrLogAppendTime != 0 {
		ts = b.maxTimestamp
	}
	r.time = time.UnixMilli(ts).UTC()
	return r, rest, nil
}

func varint(p []byte) (int64, []byte, error) {
	v, n := binary.Varint(p)
	if n <= 0 {
		return 0, nil, errors.New("bad varint")
	}
	return v, p[n:], nil
}

// nullableBytes reads a varint length (-1: null) and that many bytes; the
// result aliases p, and is empty but not nil for length 0.
func nullableBytes(p []byte) ([]byte, []byte, error) {
	l, p, err := varint(p)
	switch {
	case err != nil:
		return nil, nil, err
	case l == -1:
		return nil, p, nil
	case l < -1 || l > int64(len(p)):
		return nil, nil, fmt.Errorf("bad length %d", l)
	}
	return p[:l:l], p[l:], nil
}

// controlType returns a control record's type (0 abort, 1 commit) from its
// key: version int16, type int16.
func controlType(key []byte) int16 {
	if len(key) < 4 {
		return -1
	}
	return int16(binary.BigEndian.Uint16(key[2:4]))
}
