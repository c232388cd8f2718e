package elasticsearch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
)

// topLevelKeyDecoder is the reference: encoding/json's tokenizer, which
// unescapes every key. hasTopLevelKey must agree with it on valid JSON.
func topLevelKeyDecoder(obj []byte, key string) bool {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		return false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if k, _ := t.(string); k == key {
			return true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

func TestHasTopLevelKey(t *testing.T) {
	cases := []struct {
		obj  string
		want bool
	}{
		{`{"@timestamp":"x"}`, true},
		{`{"a":1,"@timestamp":2}`, true},
		{` { "a" : [1,{"@timestamp":1}] , "@timestamp" : null } `, true},
		{`{"\u0040timestamp":"x"}`, true},
		{`{"a":{"@timestamp":"x"}}`, false},
		{`{"a":["@timestamp"]}`, false},
		{`{"a":"@timestamp"}`, false},
		{`{"a":"\"@timestamp\":1"}`, false},
		{`{"a\\":"@timestamp","b":1}`, false},
		{`{"@timestamps":1}`, false},
		{`{"x@timestamp":1}`, false},
		{`{}`, false},
		{`{"a":{},"b":[[],{}],"@timestamp":{}}`, true},
	}
	for _, c := range cases {
		if got := hasTopLevelKey([]byte(c.obj), "@timestamp"); got != c.want {
			t.Errorf("%s: %v, want %v", c.obj, got, c.want)
		}
		if ref := topLevelKeyDecoder([]byte(c.obj), "@timestamp"); ref != c.want {
			t.Fatalf("the reference disagrees with the table on %s", c.obj)
		}
	}
}

// randomJSON builds a random JSON value whose strings are drawn from a few
// that look like the key, contain it, or escape it.
func randomJSON(r *rand.Rand, depth int) any {
	strs := []string{"@timestamp", "timestamp", "a", "@timestamp\"", "x\\", "\u0040timestamp", "@timestamps", "é"}
	switch k := r.IntN(6); {
	case depth > 3 || k == 0:
		return strs[r.IntN(len(strs))]
	case k == 1:
		return r.IntN(100)
	case k == 2:
		var a []any
		for range r.IntN(4) {
			a = append(a, randomJSON(r, depth+1))
		}
		return a
	default:
		m := map[string]any{}
		for range r.IntN(5) {
			m[strs[r.IntN(len(strs))]] = randomJSON(r, depth+1)
		}
		return m
	}
}

// On random objects, the scan agrees with encoding/json's tokenizer,
// escapes included (json.Marshal escapes some characters; "\u0040" is
// written by hand below).
func TestHasTopLevelKeyAgreesWithDecoder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		m := map[string]any{}
		for range r.IntN(5) {
			m[[]string{"@timestamp", "a", "timestamp", "b\"c"}[r.IntN(4)]] = randomJSON(r, 1)
		}
		b, _ := json.Marshal(m)
		if r.IntN(4) == 0 {
			b = bytes.Replace(b, []byte(`"@timestamp"`), []byte(`"\u0040timestamp"`), 1)
		}
		if got, want := hasTopLevelKey(b, "@timestamp"), topLevelKeyDecoder(b, "@timestamp"); got != want {
			t.Fatalf("case %d, %s: %v, the decoder says %v", i, b, got, want)
		}
	}
}

// benchDoc is a log event of about 500 bytes with its own @timestamp, as
// the benchmarks produce.
var benchDoc = []byte(`{"@timestamp":"2026-11-30T00:00:00.123Z","level":"info","service":"checkout","host":"node-17",` +
	`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","http":{"method":"POST","path":"/api/v1/orders","status":201,` +
	`"duration_ms":42},"user":{"id":"u-123456","tier":"gold"},"message":"` + strings.Repeat("order accepted ", 14) + `"}`)

// BenchmarkHasTopLevelKey: the scan beside the decoder it replaced, on the
// same document (go test -bench HasTopLevelKey ./outputs/elasticsearch/).
func BenchmarkHasTopLevelKey(b *testing.B) {
	for _, impl := range []struct {
		name string
		f    func([]byte, string) bool
	}{{"scan", hasTopLevelKey}, {"decoder", topLevelKeyDecoder}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(benchDoc)))
			for b.Loop() {
				if !impl.f(benchDoc, "@timestamp") {
					b.Fatal("key not found")
				}
			}
		})
	}
}

// BenchmarkAppendItem: one bulk item (action line and document) per op.
func BenchmarkAppendItem(b *testing.B) {
	o := &Output{cfg: DefaultConfig()}
	r := &shipper.Record{Topic: "app-logs", TopicID: "abcdefgh", Partition: 3, Offset: 123456, Value: benchDoc, Time: time.Now()}
	var dst []byte
	b.SetBytes(int64(len(benchDoc)))
	for b.Loop() {
		dst = o.appendItem(dst[:0], "logs-app-2026.11.30", r)
	}
	if !bytes.Contains(dst, []byte(`"_id":"`+r.DocumentID()+`"`)) {
		b.Fatal(fmt.Sprintf("no id in %s", dst))
	}
}
