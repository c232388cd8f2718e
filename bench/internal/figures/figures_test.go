package figures

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/machine"
)

func TestOf(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want Stat
	}{
		{nil, Stat{}},
		{[]float64{3}, Stat{3, 3, 3, 1}},
		{[]float64{5, 1, 3}, Stat{3, 1, 5, 3}},
		{[]float64{4, 1, 2, 10}, Stat{3, 1, 10, 4}},
	} {
		if got := Of(c.xs); got != c.want {
			t.Errorf("Of(%v) = %+v, want %+v", c.xs, got, c.want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want string
	}{
		{nil, "–"},
		{[]float64{2.5}, "2.50"},
		{[]float64{3, 1, 2, 10}, "2.50 [1.00–10.00]"},
	} {
		if got := Of(c.xs).Format("%.2f"); got != c.want {
			t.Errorf("Of(%v).Format = %q, want %q", c.xs, got, c.want)
		}
	}
}

func TestJSONPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "",
		"bench/results/peers.txt": "bench/results/peers.json",
		"a.b/peers":               "a.b/peers.json",
	} {
		if got := JSONPath(in); got != want {
			t.Errorf("JSONPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteBeside(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.txt")
	r := New("xbench", "a test", machine.Info{Date: time.Unix(0, 0).UTC(), Commit: "abc"}, true)
	r.Add("throughput", "shipper", "docs/s", Higher, []float64{2, 1, 3}, "")
	r.AddSeries(Series{Chart: "memory", Name: "RssAnon", XUnit: "s", YUnit: "MiB", Points: []Point{{0, 1}, {1, 2}}})
	if err := r.WriteBeside(out, time.Now()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(JSONPath(out))
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Results != "x.txt" || got.Bench != "xbench" || !got.Quick || len(got.Figures) != 1 ||
		got.Figures[0].Stat != (Stat{2, 1, 3, 3}) || len(got.Series) != 1 || len(got.Series[0].Points) != 2 {
		t.Errorf("read back %+v", got)
	}
}
