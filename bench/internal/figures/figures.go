// Package figures is the machine-readable side of a benchmark's results: the
// headline figures (each a median with min and max over its runs) and the
// time series worth a chart, written as JSON beside the program's text
// results. bench/report reads every such file of one `make bench` run and
// draws the dated report and its charts from them; the text file stays the
// full record.
//
// The JSON is the contract between the two modules (bench/report is a
// module of its own so that its plotting library stays out of the agent's
// go.mod): a change here is a change there.
package figures

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/shipper-agent/shipper/bench/internal/machine"
	smoke "github.com/shipper-agent/shipper/bench/internal/quick"
)

// Stat is a figure over N runs: their median, minimum and maximum.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Of returns the Stat of xs; N is 0 for none.
func Of(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Format writes the stat as "median [min–max]" with format for each
// number: just the value for one run, "–" for none.
func (s Stat) Format(format string) string {
	switch s.N {
	case 0:
		return "–"
	case 1:
		return fmt.Sprintf(format, s.Median)
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", s.Median, s.Min, s.Max)
}

// Better says which way a figure improves, for the report's wording.
type Better string

// The directions of Figure.Better.
const (
	Higher Better = "higher"
	Lower  Better = "lower"
	Either Better = "" // a property, not a score (a ratio to a ceiling, a setting)
)

// Figure is one headline number of a benchmark.
type Figure struct {
	// Group gathers figures compared with each other: the report draws one
	// bar chart per group and unit (for example "throughput into
	// Elasticsearch" with a bar per contender).
	Group string `json:"group"`
	// Name is the contender or the case ("shipper", "benthos", "64MiB").
	Name string `json:"name"`
	// Unit is what the numbers count ("docs/s", "CPU s per million
	// docs", "MiB", "s", "ratio").
	Unit string `json:"unit"`
	Stat
	Better Better `json:"better,omitempty"`
	// Note says what the reader must know to read the figure (a reason a
	// row has no runs, a goal and whether it was met).
	Note string `json:"note,omitempty"`
}

// Point is one sample of a series.
type Point struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// Series is a line over time (or another x) worth a chart.
type Series struct {
	// Chart gathers series drawn together, with the same units.
	Chart  string  `json:"chart"`
	Name   string  `json:"name"`
	XUnit  string  `json:"x_unit"`
	YUnit  string  `json:"y_unit"`
	Points []Point `json:"points"`
}

// Report is one benchmark program's run.
type Report struct {
	Bench   string    `json:"bench"` // the program: "peerbench"
	Title   string    `json:"title"` // what it measures, one line
	Command string    `json:"command"`
	Date    time.Time `json:"date"`
	Commit  string    `json:"commit"`
	Load    string    `json:"load"` // load averages at the start, as machine.Load
	Quick   bool      `json:"quick"`
	// Took is the run's wall time, in seconds.
	Took float64 `json:"took_s"`
	// Results is the text results file beside this one (its base name).
	Results string   `json:"results"`
	Figures []Figure `json:"figures"`
	Series  []Series `json:"series,omitempty"`
}

// New starts the report of a run of bench (the program's directory name
// under bench/cmd) described by in; Command is how to run it again.
func New(bench, title string, in machine.Info, quick bool) *Report {
	return &Report{
		Bench: bench, Title: title,
		Command: smoke.Command(bench, quick),
		Date:    in.Date, Commit: in.Commit, Load: in.Load, Quick: quick,
	}
}

// Add records a figure over the runs xs (none: a row with N 0, whose note
// should say why).
func (r *Report) Add(group, name, unit string, better Better, xs []float64, note string) {
	r.Figures = append(r.Figures, Figure{Group: group, Name: name, Unit: unit, Stat: Of(xs), Better: better, Note: note})
}

// AddSeries records a series.
func (r *Report) AddSeries(s Series) { r.Series = append(r.Series, s) }

// JSONPath is where the figures of a text results file go: out with its
// extension replaced by .json ("" when out is "": stdout runs keep none).
func JSONPath(out string) string {
	if out == "" {
		return ""
	}
	if i := strings.LastIndexByte(out, '.'); i > strings.LastIndexByte(out, '/') {
		out = out[:i]
	}
	return out + ".json"
}

// WriteBeside writes the report beside the text results file out (see
// JSONPath), stamping Took since start and Results; nothing when out is "".
func (r *Report) WriteBeside(out string, start time.Time) error {
	path := JSONPath(out)
	if path == "" {
		return nil
	}
	r.Took = time.Since(start).Seconds()
	r.Results = out[strings.LastIndexByte(out, '/')+1:]
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("figures: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("figures: %w", err)
	}
	return nil
}
