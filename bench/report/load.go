package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The types below mirror the JSON that every benchmark program writes
// beside its text results. The format is defined by
// bench/internal/figures/figures.go in the main module; this module cannot
// import that internal package, so a change there must be made here too.

// Report is one benchmark program's run.
type Report struct {
	Bench   string    `json:"bench"`
	Title   string    `json:"title"`
	Command string    `json:"command"`
	Date    time.Time `json:"date"`
	Commit  string    `json:"commit"`
	Load    string    `json:"load"`
	Quick   bool      `json:"quick"`
	Took    float64   `json:"took_s"` // wall time, seconds
	Results string    `json:"results"`
	Figures []Figure  `json:"figures"`
	Series  []Series  `json:"series,omitempty"`
}

// Figure is one headline number: the median, minimum and maximum over N
// runs (N 0: no runs, Note says why).
type Figure struct {
	Group  string  `json:"group"`
	Name   string  `json:"name"`
	Unit   string  `json:"unit"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
	Better string  `json:"better,omitempty"` // "higher", "lower" or ""
	Note   string  `json:"note,omitempty"`
}

// Point is one sample of a series.
type Point struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// Series is a line worth a chart; series with the same Chart are drawn
// together.
type Series struct {
	Chart  string  `json:"chart"`
	Name   string  `json:"name"`
	XUnit  string  `json:"x_unit"`
	YUnit  string  `json:"y_unit"`
	Points []Point `json:"points"`
}

// benchOrder is the order of `make bench`; other programs follow,
// alphabetically.
var benchOrder = []string{"bufferbench", "restartbench", "membench", "poolbench", "consumebench", "outputbench", "peerbench"}

// errNoReports is returned by Load for a directory without JSON files.
var errNoReports = errors.New("no *.json files")

// Load reads every *.json file in dir as a Report, in the order of
// `make bench`. A report without a bench name is named after its file.
func Load(dir string) ([]Report, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	if len(paths) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		return nil, fmt.Errorf("load %s: %w (the figures a `make bench` run writes beside its text results)", dir, errNoReports)
	}
	reports := make([]Report, 0, len(paths))
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("load %s: %w", path, err)
		}
		if r.Bench == "" {
			r.Bench = strings.TrimSuffix(filepath.Base(path), ".json")
		}
		reports = append(reports, r)
	}
	slices.SortStableFunc(reports, func(a, b Report) int {
		ra, rb := benchRank(a.Bench), benchRank(b.Bench)
		if ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Bench, b.Bench)
	})
	return reports, nil
}

// benchRank is bench's place in benchOrder, or after all of them.
func benchRank(bench string) int {
	if i := slices.Index(benchOrder, bench); i >= 0 {
		return i
	}
	return len(benchOrder)
}
