package main

import (
	"bytes"
	"errors"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two benches as their programs write them: peerbench with a group of three
// figures with runs and one without (N 0, a note), a second group of two and
// a lone figure; bufferbench with a series chart.
const (
	peersJSON = `{
  "bench": "peerbench",
  "title": "shipper beside Benthos and Filebeat",
  "command": "peerbench -out bench/results/2026-11-30/peers.txt",
  "date": "2026-11-30T10:41:07Z",
  "commit": "b48a324d0c3f1e2a9b8c7d6e5f4a3b2c1d0e9f8a",
  "load": "0.52 0.61 0.70",
  "quick": false,
  "took_s": 331.4,
  "results": "peers.txt",
  "figures": [
    {"group": "throughput into Elasticsearch", "name": "shipper", "unit": "docs/s", "median": 48213.7, "min": 46102, "max": 49876.2, "n": 3, "better": "higher"},
    {"group": "throughput into Elasticsearch", "name": "benthos", "unit": "docs/s", "median": 39120, "min": 37011, "max": 41500, "n": 3, "better": "higher"},
    {"group": "throughput into Elasticsearch", "name": "filebeat", "unit": "docs/s", "median": 22011.4, "min": 21000, "max": 23900, "n": 3, "better": "higher"},
    {"group": "throughput into Elasticsearch", "name": "logstash", "unit": "docs/s", "n": 0, "note": "not installed: no JVM peer"},
    {"group": "CPU per million docs", "name": "shipper", "unit": "CPU s", "median": 14.26, "min": 13.9, "max": 15.02, "n": 3, "better": "lower"},
    {"group": "CPU per million docs", "name": "benthos", "unit": "CPU s", "median": 21.7, "min": 20.1, "max": 22.3, "n": 3, "better": "lower"},
    {"group": "peak RSS", "name": "shipper", "unit": "MiB", "median": 61.2, "min": 60, "max": 63.5, "n": 3, "better": "lower"}
  ]
}`
	bufferJSON = `{
  "bench": "bufferbench",
  "title": "buffer throughput against the raw disk",
  "command": "bufferbench -out bench/results/2026-11-30/buffer.txt",
  "date": "2026-11-30T10:02:11Z",
  "commit": "b48a324d0c3f1e2a9b8c7d6e5f4a3b2c1d0e9f8a",
  "load": "0.10 0.25 0.31",
  "quick": false,
  "took_s": 412.9,
  "results": "buffer.txt",
  "figures": [
    {"group": "write", "name": "buffer", "unit": "MB/s", "median": 182.4, "min": 171.2, "max": 190.3, "n": 5, "better": "higher"}
  ],
  "series": [
    {"chart": "Write throughput / run", "name": "buffer", "x_unit": "s", "y_unit": "MB/s", "points": [{"x":0,"y":120},{"x":1,"y":170},{"x":2,"y":185}]},
    {"chart": "Write throughput / run", "name": "raw disk", "x_unit": "s", "y_unit": "MB/s", "points": [{"x":0,"y":150},{"x":1,"y":200},{"x":2,"y":205}]}
  ]
}`
)

// The charts the fixture gives; the lone "peak RSS" and "write" figures
// get none.
var wantCharts = []string{
	"bufferbench-write-throughput-run.png",
	"peerbench-throughput-into-elasticsearch.png",
	"peerbench-cpu-per-million-docs.png",
}

// writeRun writes the fixture's JSON into root/results/2026-11-30 and
// returns that directory; quick marks peerbench's run quick.
func writeRun(t *testing.T, root string, quick bool) string {
	t.Helper()
	dir := filepath.Join(root, "results", "2026-11-30")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	peers := peersJSON
	if quick {
		peers = strings.Replace(peers, `"quick": false`, `"quick": true`, 1)
	}
	for name, body := range map[string]string{"peers.json": peers, "buffer.json": bufferJSON} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runReport runs the command with args.
func runReport(args ...string) error {
	return run(args, io.Discard, io.Discard)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReportDrawsChartsAndREADME(t *testing.T) {
	dir := writeRun(t, t.TempDir(), false)
	if err := runReport("-dir", dir); err != nil {
		t.Fatal(err)
	}

	for _, name := range wantCharts {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("chart: %v", err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
			t.Errorf("%s is %v", name, b)
		}
	}
	pngs, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pngs) != len(wantCharts) {
		t.Errorf("charts %v, want %v", pngs, wantCharts)
	}

	readme := readFile(t, filepath.Join(dir, "README.md"))
	for _, want := range []string{
		"# make bench, 2026-11-30\n",
		"`b48a324d0c3f1e2a9b8c7d6e5f4a3b2c1d0e9f8a`",
		"0.52 0.61 0.70",
		"`peerbench -out bench/results/2026-11-30/peers.txt`, took 5 min 31 s.",
		"| throughput into Elasticsearch | shipper | 48,200 | 46,100–49,900 | 3 | docs/s |  |",
		"| throughput into Elasticsearch | benthos | 39,100 | 37,000–41,500 | 3 | docs/s |  |",
		"| throughput into Elasticsearch | filebeat | 22,000 | 21,000–23,900 | 3 | docs/s |  |",
		"| throughput into Elasticsearch | logstash | — | — | 0 | docs/s | not installed: no JVM peer |",
		"| CPU per million docs | shipper | 14.3 | 13.9–15.0 | 3 | CPU s |  |",
		"| write | buffer | 182 | 171–190 | 5 | MB/s |  |",
		"![throughput into Elasticsearch (docs/s)](peerbench-throughput-into-elasticsearch.png)",
		"![CPU per million docs (CPU s)](peerbench-cpu-per-million-docs.png)",
		"![Write throughput / run](bufferbench-write-throughput-run.png)",
		"[peers.txt](peers.txt)",
		"[buffer.txt](buffer.txt)",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md lacks %q:\n%s", want, readme)
		}
	}
	if strings.Contains(readme, "Smoke") {
		t.Errorf("README.md calls a full run smoke:\n%s", readme)
	}
	if b, p := strings.Index(readme, "## bufferbench"), strings.Index(readme, "## peerbench"); b < 0 || p < b {
		t.Errorf("bufferbench at %d, peerbench at %d: want bufferbench first", b, p)
	}
}

func TestBarGroupsLeaveOutFiguresWithoutRuns(t *testing.T) {
	figures := []Figure{
		{Group: "g", Name: "a", Unit: "u", N: 3},
		{Group: "g", Name: "none", Unit: "u", N: 0, Note: "why"},
		{Group: "g", Name: "b", Unit: "u", N: 3},
		{Group: "g", Name: "c", Unit: "other", N: 3}, // alone in its unit
		{Group: "h", Name: "a", Unit: "u", N: 3},
		{Group: "h", Name: "none", Unit: "u", N: 0}, // h has one figure with runs
	}
	groups := barGroups(figures)
	if len(groups) != 1 {
		t.Fatalf("groups %+v, want g in u only", groups)
	}
	var names []string
	for _, f := range groups[0].figures {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); groups[0].group != "g" || got != "a,b" {
		t.Errorf("group %q with %s, want g with a,b", groups[0].group, got)
	}
}

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	for _, b := range []string{"peerbench", "zzzbench", "bufferbench", "aaabench", "membench"} {
		if err := os.WriteFile(filepath.Join(dir, b+".json"), []byte(`{"bench":"`+b+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reports, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range reports {
		got = append(got, r.Bench)
	}
	if want := "bufferbench membench peerbench aaabench zzzbench"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "buffer.txt"), []byte("text only"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runReport("-dir", empty); !errors.Is(err, errNoReports) {
		t.Errorf("a directory without JSON: %v, want errNoReports", err)
	}
	if err := runReport("-dir", filepath.Join(empty, "missing")); err == nil {
		t.Error("a missing directory: no error")
	}

	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "broken.json"), []byte(`{"bench": "x", "figures": [}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runReport("-dir", bad); err == nil || !strings.Contains(err.Error(), "broken.json") {
		t.Errorf("a broken file: %v, want an error naming broken.json", err)
	}
}

// docsBefore and docsAfter surround the markers in the docs file of the
// tests; docsAfter ends without a newline.
const (
	docsBefore = "# Benchmarks\r\n\nSome text | with a pipe.\n\n## Latest run\n\n" + beginMarker + "\n"
	docsAfter  = endMarker + "\n\n## Caveats\n\nMore text, no final newline."
)

func TestDocsSummary(t *testing.T) {
	root := t.TempDir()
	dir := writeRun(t, root, false)
	docs := filepath.Join(root, "docs", "benchmarks.md")
	if err := os.MkdirAll(filepath.Dir(docs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(docs, []byte(docsBefore+"an older summary\n"+docsAfter), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := runReport("-dir", dir, "-docs", docs); err != nil {
		t.Fatal(err)
	}
	first := readFile(t, docs)
	if !strings.HasPrefix(first, docsBefore) || !strings.HasSuffix(first, "\n"+docsAfter) {
		t.Fatalf("the text outside the markers changed:\n%s", first)
	}
	summary := strings.TrimSuffix(strings.TrimPrefix(first, docsBefore), docsAfter)
	for _, want := range []string{
		"Latest `make bench`: 2026-11-30, commit `b48a324` ([the full report](../results/2026-11-30/README.md)).",
		"| throughput into Elasticsearch | shipper | 48,200 (46,100–49,900) | docs/s |  |",
		"| throughput into Elasticsearch | logstash | no runs | docs/s | not installed: no JVM peer |",
		"![throughput into Elasticsearch (docs/s)](../results/2026-11-30/peerbench-throughput-into-elasticsearch.png)",
		"![Write throughput / run](../results/2026-11-30/bufferbench-write-throughput-run.png)",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	if strings.Contains(summary, "older summary") {
		t.Errorf("the old summary is still there:\n%s", summary)
	}

	// Again, with paths relative to the working directory: the same file.
	t.Chdir(root)
	if err := runReport("-dir", "results/2026-11-30", "-docs", "docs/benchmarks.md"); err != nil {
		t.Fatal(err)
	}
	if second := readFile(t, docs); second != first {
		t.Errorf("a second run changed the docs:\n%s\nthen:\n%s", first, second)
	}
}

func TestDocsWithoutMarkers(t *testing.T) {
	for name, doc := range map[string]string{
		"none":           "# Benchmarks\n\nNo markers.\n",
		"begin only":     "# Benchmarks\n" + beginMarker + "\nold\n",
		"end then begin": endMarker + "\n" + beginMarker + "\n",
		"begin last":     "# Benchmarks\n" + beginMarker,
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			dir := writeRun(t, root, false)
			docs := filepath.Join(root, "benchmarks.md")
			if err := os.WriteFile(docs, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			err := runReport("-dir", dir, "-docs", docs)
			if err == nil || !strings.Contains(err.Error(), beginMarker+"\n"+endMarker) {
				t.Errorf("err %v, want one that gives the marker lines to add", err)
			}
			if got := readFile(t, docs); got != doc {
				t.Errorf("docs changed to %q", got)
			}
		})
	}
}

func TestQuickRefusesDocs(t *testing.T) {
	root := t.TempDir()
	dir := writeRun(t, root, true)
	docs := filepath.Join(root, "benchmarks.md")
	doc := docsBefore + docsAfter
	if err := os.WriteFile(docs, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	err := runReport("-dir", dir, "-docs", docs)
	if !errors.Is(err, errQuickDocs) || !strings.Contains(err.Error(), "peerbench") {
		t.Errorf("err %v, want errQuickDocs naming peerbench", err)
	}
	if got := readFile(t, docs); got != doc {
		t.Errorf("docs changed to %q", got)
	}
	readme := readFile(t, filepath.Join(dir, "README.md"))
	if !strings.Contains(readme, "**Smoke figures, not results.** peerbench ran with BENCH_QUICK") {
		t.Errorf("README.md does not say the figures are smoke:\n%s", readme)
	}
}

func TestReplaceBetweenMarkersKeepsBytes(t *testing.T) {
	doc := []byte(docsBefore + "x\ny\n" + docsAfter)
	got, err := replaceBetweenMarkers(doc, "new\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := docsBefore + "new\n" + docsAfter; !bytes.Equal(got, []byte(want)) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFormatNumber(t *testing.T) {
	for x, want := range map[float64]string{
		0:         "0",
		0.0123456: "0.0123",
		0.5:       "0.500",
		1.5:       "1.50",
		12.345:    "12.3",
		182.4:     "182",
		999.6:     "1,000",
		1234:      "1,230",
		48213.7:   "48,200",
		1234567:   "1,230,000",
		-1234:     "-1,230",
	} {
		if got := formatNumber(x); got != want {
			t.Errorf("formatNumber(%v) = %q, want %q", x, got, want)
		}
	}
}

func TestSlug(t *testing.T) {
	for s, want := range map[string]string{
		"throughput into Elasticsearch": "throughput-into-elasticsearch",
		"CPU s / 1M docs":               "cpu-s-1m-docs",
		"  --Write throughput / run!":   "write-throughput-run",
		"":                              "chart",
	} {
		if got := slug(s); got != want {
			t.Errorf("slug(%q) = %q, want %q", s, got, want)
		}
	}
}

func TestShortCommit(t *testing.T) {
	for c, want := range map[string]string{
		"b48a324d0c3f1e2a9b8c7d6e5f4a3b2c1d0e9f8a":                                  "b48a324",
		"b48a324d0c3f1e2a9b8c7d6e5f4a3b2c1d0e9f8a +uncommitted changes to Makefile": "b48a324 +uncommitted",
		"unknown": "unknown",
	} {
		if got := shortCommit(c); got != want {
			t.Errorf("shortCommit(%q) = %q, want %q", c, got, want)
		}
	}
}

func TestChartNames(t *testing.T) {
	dir := t.TempDir()
	two := func(group, unit string) []Figure {
		return []Figure{
			{Group: group, Name: "a", Unit: unit, Median: 2, Min: 1, Max: 3, N: 3},
			{Group: group, Name: "b", Unit: unit, Median: 5, Min: 4, Max: 6, N: 3},
		}
	}
	r := Report{
		Bench:   "xbench",
		Figures: append(append(two("Latency", "s"), two("Latency", "ms")...), two("size", "MiB")...),
		Series: []Series{
			{Chart: "size", Name: "heap", Points: []Point{{0, 1}, {1, 2}}},
			{Chart: "empty", Name: "none"},
		},
	}
	charts, err := DrawCharts(dir, []Report{r})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range charts["xbench"] {
		got = append(got, c.File)
		if _, err := os.Stat(filepath.Join(dir, c.File)); err != nil {
			t.Error(err)
		}
	}
	want := "xbench-latency-s.png xbench-latency-ms.png xbench-size.png xbench-size-2.png"
	if strings.Join(got, " ") != want {
		t.Errorf("charts %v, want %s", got, want)
	}
}

func TestTickLabels(t *testing.T) {
	var labels []string
	for _, tick := range (groupedTicks{}).Ticks(0, 520000) {
		if tick.Label != "" {
			labels = append(labels, tick.Label)
		}
	}
	if got, want := strings.Join(labels, " "), "0 250,000 500,000"; got != want {
		t.Errorf("labels %q, want %q", got, want)
	}
}
