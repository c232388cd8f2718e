package logtopic

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"testing"
)

func TestValuesAreCompactJSONOfTheSize(t *testing.T) {
	for name, f := range map[string]func(int, int) []byte{"Value": Value, "VariedValue": VariedValue} {
		for _, size := range []int{500, 1000} {
			for i := range 1000 {
				v := f(i, size)
				if len(v) != size || !json.Valid(v) || bytes.ContainsAny(v, "\r\n") || !bytes.HasPrefix(v, []byte(`{"@timestamp":"`)) {
					t.Fatalf("%s(%d, %d) = %d bytes %q: want compact JSON of %d bytes with a leading @timestamp", name, i, size, len(v), v, size)
				}
			}
		}
		if !bytes.Equal(f(7, 500), f(7, 500)) {
			t.Errorf("%s is not deterministic", name)
		}
	}
	// Fixed fields longer than the size are kept whole.
	if v := VariedValue(1, 10); !json.Valid(v) {
		t.Errorf("VariedValue(1, 10) = %q: not JSON", v)
	}
}

// VariedValue's point: its events gzip like logs, not like one repeated
// phrase.
func TestVariedValuesGzipLikeLogs(t *testing.T) {
	ratio := func(f func(int, int) []byte) float64 {
		var raw, z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
		for i := range 5000 {
			raw.Write(f(i, 500))
			raw.WriteByte('\n')
		}
		zw.Write(raw.Bytes())
		zw.Close()
		return float64(raw.Len()) / float64(z.Len())
	}
	if r := ratio(VariedValue); r < 2 || r > 6 {
		t.Errorf("VariedValue events gzip %.1f× at BestSpeed; want real logs' 2–6×", r)
	}
	if r := ratio(Value); r < 10 {
		t.Errorf("Value events gzip %.1f×; they were meant to be highly compressible", r)
	}
}
