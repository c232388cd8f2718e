package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper/agent"
)

// statusCmd runs `shipper status`: the running agent's state as a table,
// or as the API's JSON with -json.
func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: shipper status [-json] [-addr HOST:PORT | -config FILE]\n\n"+
			"The running agent's input, buffer and output, from GET /api/status.\n\n")
		fs.PrintDefaults()
	}
	api := addAPIFlags(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON document as it is, for scripts")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.do(ctx, "GET", "/api/status", nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := fmt.Fprintf(stdout, "%s\n", raw)
		return err
	}
	var st agent.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("GET /api/status: %w", err)
	}
	printStatus(stdout, st)
	return nil
}

// printStatus writes the status as a few readable lines and tables.
func printStatus(w io.Writer, st agent.Status) {
	fmt.Fprintf(w, "shipper %s, up %s\n\n", st.Version, st.Uptime)

	in := st.Input
	fmt.Fprintf(w, "input    generation %d, %d records read (%s), %d filtered, %d fetch errors, %d commits (%d failed)\n",
		in.Generation, in.Records, human(in.Bytes), in.Filtered, in.FetchErrors, in.Commits, in.CommitErrors)
	if len(in.Partitions) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PARTITION\tPOSITION\tCOMMITTED\tEND\tLAG\tERROR")
		for _, p := range in.Partitions {
			fmt.Fprintf(tw, "  %s/%d\t%d\t%d\t%d\t%d\t%s\n", p.Topic, p.Partition, p.Position, p.Committed, p.HighWatermark, p.Lag, p.Error)
		}
		tw.Flush()
	}
	for _, tp := range slices.Sorted(maps.Keys(in.Skipped)) {
		fmt.Fprintf(w, "         %s: %d records deleted by retention before they were read (see the dead-letter store)\n", tp, in.Skipped[tp])
	}

	b := st.Buffer
	fmt.Fprintf(w, "\nbuffer   %d records open; %d chunks (%d records, %s) on disk, %s used of %s; memory %s of %s; %d dead letters\n",
		b.OpenRecords, b.DiskChunks, b.DiskRecords, human(b.DiskBytes), human(b.DiskUsage), human(b.DiskLimit),
		human(b.MemoryBytes), human(b.MemoryLimit), b.DeadLetters)
	if b.OldestChunkAge != "" {
		fmt.Fprintf(w, "         oldest chunk %s old\n", b.OldestChunkAge)
	}
	if b.Blocked != "" {
		fmt.Fprintf(w, "         appends blocked (Kafka paused): %s\n", b.Blocked)
	}
	if b.AckBlocked != "" {
		fmt.Fprintf(w, "         acknowledgements blocked: %s\n", b.AckBlocked)
	}
	if b.Quarantined > 0 {
		fmt.Fprintf(w, "         %d corrupt chunks quarantined\n", b.Quarantined)
	}

	o := st.Output
	fmt.Fprintf(w, "\noutput   %d indexed, %d duplicates, %d skipped, %d dead-lettered, %d retries; bulk limit %s\n",
		o.Indexed, o.Duplicates, o.Skipped, o.DeadLettered, o.Retries, human(o.BulkLimit))
	win := o.Window
	mode := "adaptive"
	if !win.Adaptive {
		mode = "fixed"
	}
	fmt.Fprintf(w, "         %d bulk requests in flight, limit %d of %d (%s)", win.InFlight, int(win.Limit), win.Max, mode)
	var cuts []string
	for _, k := range slices.Sorted(maps.Keys(win.Cuts)) {
		if win.Cuts[k] > 0 {
			cuts = append(cuts, fmt.Sprintf("%s %d", k, win.Cuts[k]))
		}
	}
	if len(cuts) > 0 {
		fmt.Fprintf(w, "; cut by %s", strings.Join(cuts, ", "))
	}
	fmt.Fprintln(w)
	if o.Held != nil {
		fmt.Fprintf(w, "         HELD since %s (%d documents): %s\n", o.Held.Since.UTC().Format(time.RFC3339), o.Held.Documents, o.Held.Reason)
	}
	if len(o.Nodes) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tSTATE\tSINCE\tIN FLIGHT\tSTALLS\tHEDGES\tREASON")
		for _, n := range o.Nodes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\t%s\n", n.URL, n.State, n.Since.UTC().Format(time.RFC3339), n.InFlight,
				n.Stalls, n.Hedges, n.Reason)
		}
		tw.Flush()
	}
	if len(st.RecentErrors) > 0 {
		fmt.Fprintln(w, "\nrecent warnings and errors, newest first")
		for _, e := range st.RecentErrors {
			line := fmt.Sprintf("  %s %-5s %s: %s", e.Time.UTC().Format(time.RFC3339), e.Level, e.Component, e.Message)
			if e.Err != "" {
				line += ": " + e.Err
			} else if e.Reason != "" {
				line += ": " + e.Reason
			}
			if e.Count > 1 {
				line += fmt.Sprintf(" (×%d)", e.Count)
			}
			fmt.Fprintln(w, line)
		}
	}
}

// human writes a byte count with a binary unit, one decimal.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// flushCmd runs `shipper flush`: seal the open chunk and deliver what the
// agent buffers now; with -wait, follow the flush until it is done.
func flushCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flush", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: shipper flush [-wait DURATION] [-addr HOST:PORT | -config FILE]\n\n"+
			"Seal the open chunk and deliver everything the agent buffers now (POST /api/flush).\n"+
			"Without -wait it returns at once with the flush's id; with -wait it follows the flush\n"+
			"(a progress bar on a terminal, a line every 5s otherwise) and exits 1 if it is not done in time.\n\n")
		fs.PrintDefaults()
	}
	api := addAPIFlags(fs)
	wait := fs.Duration("wait", 0, "follow the flush until done, for at most this long (0: do not wait)")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() > 0 || *wait < 0 {
		fs.Usage()
		return errUsage
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	var res agent.FlushResult
	if err := c.do(ctx, "POST", "/api/flush", nil, &res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "flush %s: sealed %d records; %d records in %d chunks to deliver\n",
		res.ID, res.Sealed, res.WaitingRecords, res.WaitingChunks)
	if res.Error != "" {
		return fmt.Errorf("flush %s: %s", res.ID, res.Error)
	}
	if *wait == 0 || res.Done {
		printFlushDone(stdout, res)
		return nil
	}
	total := res.WaitingRecords
	bar := isTerminal(stdout)
	deadline := time.Now().Add(*wait)
	lastLine := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for !res.Done {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := c.do(ctx, "GET", "/api/flush/"+url.PathEscape(res.ID), nil, &res); err != nil {
			return err
		}
		switch {
		case bar:
			fmt.Fprintf(stdout, "\r%s", progressBar(total-res.WaitingRecords, total, 30))
		case time.Since(lastLine) >= 5*time.Second:
			fmt.Fprintf(stdout, "flush %s: %d of %d records delivered\n", res.ID, total-res.WaitingRecords, total)
			lastLine = time.Now()
		}
		if !res.Done && time.Now().After(deadline) {
			if bar {
				fmt.Fprintln(stdout)
			}
			msg := fmt.Sprintf("flush %s not done within %s: %d records in %d chunks still to deliver", res.ID, *wait,
				res.WaitingRecords, res.WaitingChunks)
			if res.Held != "" {
				msg += "; delivery is held: " + res.Held
			}
			return fmt.Errorf("%s (follow it: GET /api/flush/%s)", msg, res.ID)
		}
	}
	if bar {
		fmt.Fprintln(stdout)
	}
	printFlushDone(stdout, res)
	return nil
}

func printFlushDone(w io.Writer, res agent.FlushResult) {
	if !res.Done {
		fmt.Fprintf(w, "follow it: GET /api/flush/%s\n", res.ID)
		return
	}
	fmt.Fprintf(w, "flush %s done: %d indexed, %d duplicates, %d skipped, %d dead-lettered since the agent started\n",
		res.ID, res.Output.Indexed, res.Output.Duplicates, res.Output.Skipped, res.Output.DeadLettered)
}

// progressBar draws [#####-----] done/total.
func progressBar(done, total int64, width int) string {
	filled := width
	if total > 0 {
		filled = int(int64(width) * min(done, total) / total)
	}
	return fmt.Sprintf("[%s%s] %d/%d records", strings.Repeat("#", filled), strings.Repeat("-", width-filled), done, total)
}

// isTerminal says whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
