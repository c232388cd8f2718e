// Command report turns the figures of one `make bench` run into a dated
// report: it reads every benchmark's JSON figures in a results directory
// (bench/results/<date>/), draws PNG charts beside them, writes the
// directory's README.md, and with -docs puts a summary between the marker
// lines of a markdown file:
//
//	go -C bench/report run . -dir ../results/2026-11-30 -docs ../../docs/benchmarks.md
//
// It is a module of its own so that its plotting library, gonum.org/v1/plot,
// stays out of the agent's go.mod.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// errQuickDocs refuses -docs for a run with smoke figures.
var errQuickDocs = errors.New("not updating the docs")

// run is the command with its arguments; it reports what it wrote to
// stdout.
func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the results `directory` of one make bench run (bench/results/<date>), holding its *.json figures")
	docs := fs.String("docs", "", "a markdown `file` whose lines between "+beginMarker+" and "+endMarker+" get a summary of the run (\"\": none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: report -dir DIR [-docs FILE]")
	}
	reports, err := Load(*dir)
	if err != nil {
		return err
	}
	charts, err := DrawCharts(*dir, reports)
	if err != nil {
		return err
	}
	if err := WriteREADME(*dir, reports, charts); err != nil {
		return err
	}
	n := 0
	for _, c := range charts {
		n += len(c)
	}
	fmt.Fprintf(stdout, "report: %d benchmarks, %d charts, %s\n", len(reports), n, *dir+"/README.md")
	if *docs == "" {
		return nil
	}
	if quick := quickBenches(reports); len(quick) > 0 {
		return fmt.Errorf("%w %s: %s ran with BENCH_QUICK, and smoke figures are no results to publish; rerun `make bench` without it",
			errQuickDocs, *docs, strings.Join(quick, ", "))
	}
	if err := UpdateDocs(*docs, *dir, reports, charts); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report: summary in %s\n", *docs)
	return nil
}
