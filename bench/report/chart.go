package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Chart is a PNG drawn for a report.
type Chart struct {
	File  string // base name, in the report's directory
	Title string // also the image's alt text
}

// The charts' size: 16 × 9 cm at 150 dots per inch (945 × 531 pixels); a
// bar chart is as tall as its bars need (barHeight).
const (
	chartWidth  = 16 * vg.Centimeter
	chartHeight = 9 * vg.Centimeter
	chartDPI    = 150
)

// DrawCharts draws the charts of every report into dir as PNG files and
// returns them per bench: a bar chart per group and unit with more than one
// figure that has runs, then a line chart per chart of series.
func DrawCharts(dir string, reports []Report) (map[string][]Chart, error) {
	charts := make(map[string][]Chart)
	taken := make(map[string]bool)
	name := func(bench string, parts ...string) string {
		base := bench
		for _, p := range parts {
			base += "-" + slug(p)
		}
		file := base + ".png"
		for i := 2; taken[file]; i++ {
			file = fmt.Sprintf("%s-%d.png", base, i)
		}
		taken[file] = true
		return file
	}
	for _, r := range reports {
		for _, g := range barGroups(r.Figures) {
			parts := []string{g.group}
			if g.unitsInGroup > 1 {
				parts = append(parts, g.unit)
			}
			c := Chart{File: name(r.Bench, parts...), Title: g.group + " (" + g.unit + ")"}
			p, err := barPlot(c.Title, g.figures)
			if err == nil {
				err = savePlot(filepath.Join(dir, c.File), p, barHeight(len(g.figures)))
			}
			if err != nil {
				return nil, fmt.Errorf("chart %s of %s: %w", c.Title, r.Bench, err)
			}
			charts[r.Bench] = append(charts[r.Bench], c)
		}
		for _, sc := range seriesCharts(r.Series) {
			c := Chart{File: name(r.Bench, sc.chart), Title: sc.chart}
			p, err := linePlot(sc.chart, sc.series)
			if err == nil {
				err = savePlot(filepath.Join(dir, c.File), p, chartHeight)
			}
			if err != nil {
				return nil, fmt.Errorf("chart %s of %s: %w", c.Title, r.Bench, err)
			}
			charts[r.Bench] = append(charts[r.Bench], c)
		}
	}
	return charts, nil
}

// barGroup is the figures with runs of one group and unit.
type barGroup struct {
	group, unit  string
	figures      []Figure
	unitsInGroup int // how many units of the group have a chart
}

// barGroups gathers the figures with runs by group and unit, in the order
// they first appear, keeping those with more than one figure.
func barGroups(figures []Figure) []barGroup {
	var groups []barGroup
	for _, f := range figures {
		if f.N == 0 {
			continue
		}
		i := slices.IndexFunc(groups, func(g barGroup) bool { return g.group == f.Group && g.unit == f.Unit })
		if i < 0 {
			groups = append(groups, barGroup{group: f.Group, unit: f.Unit})
			i = len(groups) - 1
		}
		groups[i].figures = append(groups[i].figures, f)
	}
	groups = slices.DeleteFunc(groups, func(g barGroup) bool { return len(g.figures) < 2 })
	for i := range groups {
		for _, g := range groups {
			if g.group == groups[i].group {
				groups[i].unitsInGroup++
			}
		}
	}
	return groups
}

// seriesChart is the series drawn together in one line chart.
type seriesChart struct {
	chart  string
	series []Series
}

// seriesCharts gathers the series with points by chart, in the order they
// first appear.
func seriesCharts(series []Series) []seriesChart {
	var charts []seriesChart
	for _, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		i := slices.IndexFunc(charts, func(c seriesChart) bool { return c.chart == s.Chart })
		if i < 0 {
			charts = append(charts, seriesChart{chart: s.Chart})
			i = len(charts) - 1
		}
		charts[i].series = append(charts[i].series, s)
	}
	return charts
}

// newPlot is a plot with the report's fonts.
func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Title.Padding = vg.Points(6)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(11)
		a.Tick.Label.Font.Size = vg.Points(10)
		a.Tick.Marker = groupedTicks{}
	}
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	return p
}

// barHeight is the height of a bar chart of n bars: 1 cm a bar, 3 cm for
// the title and the axis.
func barHeight(n int) vg.Length {
	return max(5*vg.Centimeter, 3*vg.Centimeter+vg.Length(n)*vg.Centimeter)
}

// barPlot draws figures as horizontal bars at their medians with an error
// bar from min to max, the first figure at the top.
func barPlot(title string, figures []Figure) (*plot.Plot, error) {
	p := newPlot(title)
	p.X.Label.Text = caption(figures)
	p.Y.Tick.Marker = plot.DefaultTicks{} // replaced by NominalY
	p.Y.Tick.Label.Font.Size = vg.Points(11)

	n := len(figures)
	medians := make(plotter.Values, n)
	ranges := make(rangeBars, n)
	labels := plotter.XYLabels{XYs: make(plotter.XYs, n), Labels: make([]string, n)}
	names := make([]string, n)
	for i, f := range figures {
		j := n - 1 - i // NominalY puts the first name at the bottom
		medians[j] = f.Median
		ranges[j] = rangeBar{y: float64(j), f: f}
		labels.XYs[j] = plotter.XY{X: f.Max, Y: float64(j)}
		labels.Labels[j] = formatNumber(f.Median)
		names[j] = f.Name
	}
	bars, err := plotter.NewBarChart(medians, 0.55*vg.Centimeter)
	if err != nil {
		return nil, err
	}
	bars.Horizontal = true
	bars.Color = plotutil.Color(1)
	bars.LineStyle.Width = 0
	errs, err := plotter.NewXErrorBars(ranges)
	if err != nil {
		return nil, err
	}
	errs.LineStyle.Width = vg.Points(1.2)
	errs.CapWidth = 0.3 * vg.Centimeter
	values, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, err
	}
	for i := range values.TextStyle {
		values.TextStyle[i].Font.Size = vg.Points(9)
		values.TextStyle[i].YAlign = draw.YCenter
	}
	values.Offset = vg.Point{X: vg.Points(6)}
	grid := plotter.NewGrid()
	grid.Horizontal.Color = nil // it would cross the bars
	p.Add(grid, bars, errs, values)
	p.NominalY(names...)
	if p.X.Min > 0 {
		p.X.Min = 0
	}
	return p, nil
}

// caption says what a bar and its error bar are.
func caption(figures []Figure) string {
	lo, hi := figures[0].N, figures[0].N
	for _, f := range figures {
		lo, hi = min(lo, f.N), max(hi, f.N)
	}
	runs := strconv.Itoa(lo)
	if lo != hi {
		runs += "–" + strconv.Itoa(hi)
	}
	s := "median of " + runs + " runs, bars min–max"
	if lo == 1 && hi == 1 {
		s = "1 run"
	}
	switch b := figures[0].Better; b {
	case "higher", "lower":
		s += "; " + b + " is better"
	}
	return s
}

// rangeBars are the error bars of figures: the median at X, min and max as
// the distances below and above it.
type rangeBars []rangeBar

type rangeBar struct {
	y float64
	f Figure
}

func (r rangeBars) Len() int                    { return len(r) }
func (r rangeBars) XY(i int) (float64, float64) { return r[i].f.Median, r[i].y }
func (r rangeBars) XError(i int) (float64, float64) {
	return r[i].f.Median - r[i].f.Min, r[i].f.Max - r[i].f.Median
}

// linePlot draws series as lines with a legend.
func linePlot(title string, series []Series) (*plot.Plot, error) {
	p := newPlot(title)
	p.Add(plotter.NewGrid())
	var xunits, yunits []string
	for i, s := range series {
		xys := make(plotter.XYs, len(s.Points))
		for j, pt := range s.Points {
			xys[j] = plotter.XY{X: pt.X, Y: pt.Y}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", s.Name, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / 7) // solid until the colours repeat
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.Name, l)
		if !slices.Contains(xunits, s.XUnit) {
			xunits = append(xunits, s.XUnit)
		}
		if !slices.Contains(yunits, s.YUnit) {
			yunits = append(yunits, s.YUnit)
		}
	}
	p.X.Label.Text = strings.Join(xunits, " / ")
	p.Y.Label.Text = strings.Join(yunits, " / ")
	// Room above the lines for the legend, at the top left: about 13
	// points of the plot's 200 per entry.
	frac := min(0.5, float64(len(series))*13/200)
	p.Y.Max += (p.Y.Max - p.Y.Min) * frac / (1 - frac)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	return p, nil
}

// savePlot writes p as a PNG file of chartWidth × height.
func savePlot(path string, p *plot.Plot, height vg.Length) error {
	c := vgimg.NewWith(vgimg.UseWH(chartWidth, height), vgimg.UseDPI(chartDPI))
	pad := vg.Points(6)
	p.Draw(draw.Crop(draw.New(c), pad, -pad, pad, -pad))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// groupedTicks are the default ticks labelled without trailing zeros and
// with thousands separated: 0, 2.5, 250,000.
type groupedTicks struct{}

// Ticks implements plot.Ticker.
func (groupedTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label != "" {
			// 12 digits drop the float noise of multiples like 0.1 × 3.
			v, _ := strconv.ParseFloat(strconv.FormatFloat(t.Value, 'g', 12, 64), 64)
			ticks[i].Label = groupThousands(strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	return ticks
}

// slug is s in lower case with every run of other characters than a–z and
// 0–9 replaced by "-", none at either end.
func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(c)
			dash = false
		} else {
			dash = true
		}
	}
	if b.Len() == 0 {
		return "chart"
	}
	return b.String()
}
