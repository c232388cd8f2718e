package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The lines of a docs file between which the summary goes.
const (
	beginMarker = "<!-- make bench report: begin -->"
	endMarker   = "<!-- make bench report: end -->"
)

// WriteREADME writes dir/README.md: the run's date, commits, load and
// quickness, then per bench its command, time, figures, charts and a link
// to its text results.
func WriteREADME(dir string, reports []Report, charts map[string][]Chart) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# make bench, %s\n\n", runDate(dir, reports))
	if quick := quickBenches(reports); len(quick) > 0 {
		fmt.Fprintf(&b, "> **Smoke figures, not results.** %s ran with BENCH_QUICK "+
			"(short runs, few repetitions) to check that the programs work; do not quote these figures.\n\n",
			strings.Join(quick, ", "))
	}
	b.WriteString("Drawn by bench/report from each program's `*.json` figures; its text results file is the full record.\n\n")
	commits := distinctCommits(reports)
	if len(commits) == 1 {
		fmt.Fprintf(&b, "Commit: `%s`.\n\n", commits[0])
	} else {
		b.WriteString("Commits:\n\n")
		for _, c := range commits {
			fmt.Fprintf(&b, "- `%s`\n", c)
		}
		b.WriteString("\n")
	}
	b.WriteString("| program | started (UTC) | took | load averages at start (1, 5, 15 min) | commit |\n| --- | --- | --- | --- | --- |\n")
	for _, r := range reports {
		started := "?"
		if !r.Date.IsZero() {
			started = r.Date.UTC().Format("2006-01-02 15:04")
		}
		name := r.Bench
		if r.Quick {
			name += " (quick)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | `%s` |\n", cell(name), started, formatTook(r.Took), cell(r.Load), cell(shortCommit(r.Commit)))
	}
	for _, r := range reports {
		fmt.Fprintf(&b, "\n## %s\n\n", heading(r))
		if r.Command != "" {
			fmt.Fprintf(&b, "`%s`, ", r.Command)
		}
		fmt.Fprintf(&b, "took %s.\n\n", formatTook(r.Took))
		writeFullTable(&b, r.Figures)
		writeImages(&b, charts[r.Bench], "")
		if r.Results != "" {
			fmt.Fprintf(&b, "\nFull results: [%s](%s)\n", r.Results, linkPath("", r.Results))
		}
	}
	file := filepath.Join(dir, "README.md")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write README: %w", err)
	}
	return nil
}

// UpdateDocs replaces the lines between the markers in the markdown file
// docs with a summary of the run in dir, its links relative to docs.
func UpdateDocs(docs, dir string, reports []Report, charts map[string][]Chart) error {
	old, err := os.ReadFile(docs)
	if err != nil {
		return fmt.Errorf("update docs: %w", err)
	}
	rel, err := relDir(docs, dir)
	if err != nil {
		return fmt.Errorf("update docs %s: %w", docs, err)
	}
	doc, err := replaceBetweenMarkers(old, Summary(rel, dir, reports, charts))
	if err != nil {
		return fmt.Errorf("update docs %s: %w", docs, err)
	}
	if bytes.Equal(doc, old) {
		return nil
	}
	st, err := os.Stat(docs)
	if err != nil {
		return fmt.Errorf("update docs: %w", err)
	}
	if err := os.WriteFile(docs, doc, st.Mode().Perm()); err != nil {
		return fmt.Errorf("update docs: %w", err)
	}
	return nil
}

// Summary is the docs' part on the run in dir, reached from the docs at
// rel: its date and commit, a link to its README, and per bench a compact
// table of the figures and the charts.
func Summary(rel, dir string, reports []Report, charts map[string][]Chart) string {
	var b strings.Builder
	var short []string
	for _, c := range distinctCommits(reports) {
		short = append(short, "`"+shortCommit(c)+"`")
	}
	fmt.Fprintf(&b, "\nLatest `make bench`: %s, commit %s ([the full report](%s)).\n",
		runDate(dir, reports), strings.Join(short, ", "), linkPath(rel, "README.md"))
	for _, r := range reports {
		fmt.Fprintf(&b, "\n### %s\n\n", heading(r))
		b.WriteString("| group | name | median (min–max) | unit | note |\n| --- | --- | --- | --- | --- |\n")
		for _, f := range r.Figures {
			v := "no runs"
			if f.N > 0 {
				v = formatNumber(f.Median)
				if f.Min != f.Max {
					v += " (" + formatRange(f) + ")"
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(f.Group), cell(f.Name), v, cell(f.Unit), cell(f.Note))
		}
		writeImages(&b, charts[r.Bench], rel)
	}
	b.WriteString("\n")
	return b.String()
}

// replaceBetweenMarkers returns doc with the lines between its marker lines
// replaced by body; the marker lines and everything outside them are kept
// byte for byte.
func replaceBetweenMarkers(doc []byte, body string) ([]byte, error) {
	begin, afterBegin := findLine(doc, 0, beginMarker)
	end := -1
	if begin >= 0 {
		end, _ = findLine(doc, afterBegin, endMarker)
	}
	if begin < 0 || end < 0 {
		missing := beginMarker
		if begin >= 0 {
			missing = endMarker + " after " + beginMarker
		}
		return nil, fmt.Errorf("no line %s; add these two lines where the summary of the latest run goes:\n\n%s\n%s", missing, beginMarker, endMarker)
	}
	out := make([]byte, 0, len(doc)+len(body))
	out = append(out, doc[:afterBegin]...)
	out = append(out, body...)
	if body != "" && !strings.HasSuffix(body, "\n") {
		out = append(out, '\n')
	}
	return append(out, doc[end:]...), nil
}

// findLine finds the first line from offset from on that is marker (give
// or take trailing spaces and a carriage return): the offsets of its start
// and of the next line's, or -1.
func findLine(doc []byte, from int, marker string) (start, next int) {
	for start = from; start < len(doc); start = next {
		next = len(doc)
		if i := bytes.IndexByte(doc[start:], '\n'); i >= 0 {
			next = start + i + 1
		}
		if strings.TrimRight(string(doc[start:next]), " \t\r\n") == marker {
			return start, next
		}
	}
	return -1, -1
}

// writeFullTable writes the README's table of figures.
func writeFullTable(b *strings.Builder, figures []Figure) {
	if len(figures) == 0 {
		b.WriteString("No figures.\n")
		return
	}
	b.WriteString("| group | name | median | min–max | runs | unit | note |\n| --- | --- | ---: | ---: | ---: | --- | --- |\n")
	for _, f := range figures {
		median, rng := "—", "—"
		if f.N > 0 {
			median, rng = formatNumber(f.Median), formatRange(f)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %d | %s | %s |\n", cell(f.Group), cell(f.Name), median, rng, f.N, cell(f.Unit), cell(f.Note))
	}
}

// writeImages writes the charts as inline images, linked from rel.
func writeImages(b *strings.Builder, charts []Chart, rel string) {
	for _, c := range charts {
		fmt.Fprintf(b, "\n![%s](%s)\n", strings.NewReplacer("[", "(", "]", ")").Replace(c.Title), linkPath(rel, c.File))
	}
}

// heading is a bench's heading: its name and title.
func heading(r Report) string {
	if r.Title == "" {
		return r.Bench
	}
	return r.Bench + ": " + r.Title
}

// runDate is the day the run started (UTC): of its earliest report, or
// dir's name when no report has a date.
func runDate(dir string, reports []Report) string {
	var first time.Time
	for _, r := range reports {
		if !r.Date.IsZero() && (first.IsZero() || r.Date.Before(first)) {
			first = r.Date
		}
	}
	if first.IsZero() {
		return filepath.Base(dir)
	}
	return first.UTC().Format("2006-01-02")
}

// quickBenches are the benches that ran with BENCH_QUICK.
func quickBenches(reports []Report) []string {
	var quick []string
	for _, r := range reports {
		if r.Quick {
			quick = append(quick, r.Bench)
		}
	}
	return quick
}

// distinctCommits are the reports' commits, each once, in their order.
func distinctCommits(reports []Report) []string {
	var commits []string
	for _, r := range reports {
		c := r.Commit
		if c == "" {
			c = "unknown"
		}
		if !slices.Contains(commits, c) {
			commits = append(commits, c)
		}
	}
	return commits
}

// shortCommit shortens a commit as the benches write it ("<hash>" or
// "<hash> +uncommitted changes to <files>") to 7 hex digits, marking
// uncommitted changes.
func shortCommit(c string) string {
	hash, rest, _ := strings.Cut(c, " ")
	if len(hash) >= 12 && strings.Trim(strings.ToLower(hash), "0123456789abcdef") == "" {
		hash = hash[:7]
	} else {
		return c
	}
	if strings.Contains(rest, "uncommitted") {
		hash += " +uncommitted"
	}
	return hash
}

// relDir is dir as a slash-separated path relative to the directory of
// the file docs.
func relDir(docs, dir string) (string, error) {
	from, err := filepath.Abs(filepath.Dir(docs))
	if err != nil {
		return "", err
	}
	to, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(from, to)
	if err != nil {
		return "", err
	}
	return filepath.ToSlash(rel), nil
}

// linkPath is file in the directory reached at rel ("": the same one).
func linkPath(rel, file string) string {
	return strings.ReplaceAll(path.Join(rel, file), " ", "%20")
}

// cell is s made safe for a markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\r\n", " ", "\n", " ").Replace(s)
}

// formatRange is a figure's min–max.
func formatRange(f Figure) string {
	if f.Min == f.Max {
		return formatNumber(f.Min)
	}
	return formatNumber(f.Min) + "–" + formatNumber(f.Max)
}

// formatNumber writes x to 3 significant figures, with thousands separated
// by commas: 0.0123, 1.50, 12.3, 1,230, 123,000.
func formatNumber(x float64) string {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	e := int(math.Floor(math.Log10(math.Abs(x))))
	scale := math.Pow10(e - 2)
	r := math.Round(x/scale) * scale
	if e = int(math.Floor(math.Log10(math.Abs(r)))); e >= 2 {
		return groupThousands(strconv.FormatFloat(r, 'f', 0, 64))
	}
	return strconv.FormatFloat(r, 'f', 2-e, 64)
}

// groupThousands puts commas between the thousands of a decimal number's
// integer part: "-1234567.5" → "-1,234,567.5".
func groupThousands(s string) string {
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	whole, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if hasFrac {
		b.WriteString("." + frac)
	}
	return sign + b.String()
}

// formatTook is a run's wall time in seconds as minutes and seconds.
func formatTook(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	switch {
	case s <= 0:
		return "?"
	case d < time.Minute:
		return strconv.FormatFloat(s, 'f', 1, 64) + " s"
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
}
