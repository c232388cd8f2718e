// Package workload supplies the records the buffer benchmarks append:
// pools of values generated once, before any timing, so the measured time
// is the buffer's and not the generator's.
package workload

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// Topic and Partitions are where the records claim to come from: records
// are spread round-robin over the partitions, offsets ascending in each.
const (
	Topic      = "bench-logs"
	Partitions = 6
)

// poolSize is how many distinct values a set holds. At about 270 B per
// loggen value it is ~50 MiB, far larger than a chunk, so compression never
// sees a value twice within one chunk.
const poolSize = 200_000

// Set is a pool of record values that record i cycles through.
type Set struct {
	Name   string
	values [][]byte
	keys   [][]byte
	base   time.Time
}

// Names lists the sets New accepts.
var Names = []string{"loggen", "1KiB"}

// New returns the named set:
//
//	loggen  the e2e suite's sample logs, loggen.Record(i): JSON, text and
//	        stack-trace lines of ~100–250 B, and every 97th an 11–14 KiB JSON
//	        document (mean ~270 B); highly compressible.
//	1KiB    fixed 1024-byte values of random base64 text: compressible
//	        only by the alphabet (zstd's worst realistic case).
func New(name string) (*Set, error) {
	s := &Set{Name: name, values: make([][]byte, poolSize), keys: make([][]byte, poolSize),
		base: time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)}
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, 768)
	for i := range poolSize {
		s.keys[i] = []byte(strconv.Itoa(i))
		switch name {
		case "loggen":
			s.values[i] = loggen.Record(i)
		case "1KiB":
			for j := range raw {
				raw[j] = byte(rng.Uint32())
			}
			s.values[i] = []byte(base64.StdEncoding.EncodeToString(raw))
		default:
			return nil, fmt.Errorf("unknown record set %q (want one of %v)", name, Names)
		}
	}
	return s, nil
}

// Record fills r with record i. The bytes alias the pool: the buffer's
// Append copies them.
func (s *Set) Record(i int, r *shipper.Record) {
	j := i % poolSize
	r.Topic = Topic
	r.Partition = int32(i % Partitions)
	r.Offset = int64(i / Partitions)
	r.Key = s.keys[j]
	r.Value = s.values[j]
	r.Time = s.base.Add(time.Duration(i) * time.Millisecond)
}

// MeanValueSize is the mean size of a value in the pool.
func (s *Set) MeanValueSize() float64 {
	var n int
	for _, v := range s.values {
		n += len(v)
	}
	return float64(n) / float64(len(s.values))
}

// Block returns n bytes of values, back to back: realistic data for the
// raw-disk comparison.
func (s *Set) Block(n int) []byte {
	b := make([]byte, 0, n)
	for i := 0; len(b) < n; i++ {
		b = append(b, s.values[i%poolSize]...)
	}
	return b[:n]
}
