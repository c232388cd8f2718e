package elasticsearch

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// validJSON agrees with json.Valid on every valid UTF-8 input (go test
// -fuzz FuzzValidJSON ./outputs/elasticsearch/ searches for a difference;
// the seeds run in every test run).
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":"\u0040"}`, `{"a":[1,2,{"b":null}]}`, `{"a":1e5}`, `{"a":-0.5E-3}`,
		"{\"a\":\"x\ty\"}", `{"a":01}`, `{"a":1.}`, `{"a":"\x"}`, `{"a":true,}`, `[1]`, `"s"`, `{"a":"\ud800"}`,
		` {"a" : 1 } `, `{"a":1}{}`, `{"a":tru}`, `{"a":.5}`, `{"a":+1}`, `{"a":1}x`, `{"a":-}`, `{"a":1E}`, `{"a":"\u00"}`,
		`{"a":[}`, `{"a":]}`, `{,}`, `{"a" 1}`, `{"a":1,"b":}`, "{\"a\":\"\x01\"}", `{"a":nul}`, `{"a":[1,]}`, ``, ` `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return // appendDocument never parses invalid UTF-8 as JSON
		}
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

// A record nested deeper than json.Valid allows is not JSON to shipper
// either, and a million levels do not exhaust the stack.
func TestValidJSONDeepNesting(t *testing.T) {
	for _, depth := range []int{maxNesting - 1, maxNesting + 1, 1 << 20} {
		v := []byte(`{"a":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`)
		if got, want := validJSON(v), json.Valid(v); got != want {
			t.Errorf("depth %d: validJSON %v, json.Valid %v", depth, got, want)
		}
	}
	if !validJSON([]byte(`{"a":` + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + `}`)) {
		t.Error("9,000 levels: want valid")
	}
}

// BenchmarkValidJSON: validJSON beside json.Valid on a log event of about
// 500 bytes (go test -run X -bench ValidJSON ./outputs/elasticsearch/).
func BenchmarkValidJSON(b *testing.B) {
	for _, impl := range []struct {
		name string
		f    func([]byte) bool
	}{{"validJSON", validJSON}, {"json.Valid", json.Valid}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(benchDoc)))
			for b.Loop() {
				if !impl.f(benchDoc) {
					b.Fatal("not valid")
				}
			}
		})
	}
}
