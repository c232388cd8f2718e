package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
)

// bufferCmd runs `shipper buffer <subcommand>`.
func bufferCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "inspect" {
		fmt.Fprintln(stderr, "Usage: shipper buffer inspect -dir DIR [-json]")
		return errUsage
	}
	fs := flag.NewFlagSet("buffer inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "/var/lib/shipper/buffer", "buffer directory (the agent must be stopped)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return flagError(err)
	}
	inv, err := buffer.Inspect(*dir)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(inv)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSTATE\tRECORDS\tSTORED\tRAW\tAGE\tOFFSETS (topic/partition:first-last)")
	for _, c := range inv.Chunks {
		var ranges []string
		for _, r := range c.Ranges {
			ranges = append(ranges, fmt.Sprintf("%s/%d:%d-%d", r.Topic, r.Partition, r.First, r.Last))
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", c.Seq, c.State, c.Records, shipper.ByteSize(c.Bytes),
			shipper.ByteSize(c.RawBytes), c.Age(now).Round(time.Second), strings.Join(ranges, " "))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "total: %d chunks (%d quarantined), %d records, %s stored (%s raw), %d dead letters; directory uses %s\n",
		len(inv.Chunks), inv.Quarantined, inv.Records, shipper.ByteSize(inv.Bytes), shipper.ByteSize(inv.RawBytes),
		inv.DeadLetters, shipper.ByteSize(inv.DiskUsage))
	return nil
}
