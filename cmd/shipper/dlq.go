package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"text/tabwriter"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/agent"
)

const dlqUsage = `Usage: shipper dlq <command> [flags]

The dead-letter store holds records Elasticsearch can never accept as they
are, with every reason seen. These commands talk to the running agent's API,
found with -addr or from the api block of -config; while it refuses
connections (the agent is starting) they try again for up to -connect-wait (10s).
The api.token of -config, else $SHIPPER_API_TOKEN, goes as a bearer token.

Commands:
  list     [-topic T] [-reason R] [-json]   list entries, oldest first (-json: one JSON object per line)
  replay   [-topic T] [-reason R] [-dry-run] re-send entries through the normal path (e.g. after a mapping
                                             fix); delivered ones are removed, the others keep their new reason
  purge    (-topic T | -reason R | -all)     delete entries

-reason matches an entry's type (mapper_parsing_exception, request_too_large, ...)
or any part of its reasons, case-insensitive.
`

// dlqCmd runs `shipper dlq <subcommand>`.
func dlqCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay" && args[0] != "purge") {
		fmt.Fprint(stderr, dlqUsage)
		return errUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := addAPIFlags(fs)
	topic := fs.String("topic", "", "only entries of this topic")
	reason := fs.String("reason", "", "only entries whose type is, or whose reasons contain, this text")
	asJSON := fs.Bool("json", false, "list: print one JSON object per entry")
	dryRun := fs.Bool("dry-run", false, "replay: say what would be re-sent, send nothing")
	all := fs.Bool("all", false, "purge: delete every entry")
	if err := fs.Parse(args[1:]); err != nil {
		return flagError(err)
	}
	c, err := api.client()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *topic != "" {
		q.Set("topic", *topic)
	}
	if *reason != "" {
		q.Set("reason", *reason)
	}
	switch sub {
	case "list":
		return dlqList(ctx, c, q, *asJSON, stdout)
	case "replay":
		if *dryRun {
			q.Set("dry_run", "true")
		}
		var res agent.ReplayResult
		if err := c.do(ctx, "POST", "/api/dlq/replay", q, &res); err != nil {
			return err
		}
		verb := "re-sent"
		if res.DryRun {
			verb = "would re-send"
		}
		fmt.Fprintf(stdout, "%s %d entries", verb, res.Matched)
		if !res.DryRun {
			fmt.Fprintf(stdout, ": %d delivered and removed, %d dead-lettered again", res.Delivered, res.DeadLettered)
		}
		fmt.Fprintln(stdout)
		for _, k := range sortedKeys(res.ByType) {
			fmt.Fprintf(stdout, "  type %s: %d\n", k, res.ByType[k])
		}
		for _, k := range sortedKeys(res.ByTopic) {
			fmt.Fprintf(stdout, "  topic %s: %d\n", k, res.ByTopic[k])
		}
		return nil
	default: // purge
		if *topic == "" && *reason == "" && !*all {
			fmt.Fprintln(stderr, "shipper dlq purge: say what to delete: -topic, -reason or -all")
			return errUsage
		}
		if *all {
			q.Set("all", "true")
		}
		var res agent.PurgeResult
		if err := c.do(ctx, "POST", "/api/dlq/purge", q, &res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "purged %d entries\n", res.Purged)
		return nil
	}
}

func dlqList(ctx context.Context, c apiClient, q url.Values, asJSON bool, stdout io.Writer) error {
	q.Set("limit", "1000")
	var tw *tabwriter.Writer
	enc := json.NewEncoder(stdout)
	if !asJSON {
		q.Set("value_bytes", "1") // the table shows sizes, not values
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTOPIC/PARTITION@OFFSET\tSIZE\tATTEMPTS\tTYPE\tLAST REASON")
	} else {
		q.Set("value_bytes", "0") // whole values
	}
	total := 0
	var store agent.DeadLetterList
	for {
		var page agent.DeadLetterList
		if err := c.do(ctx, "GET", "/api/dlq", q, &page); err != nil {
			return err
		}
		store = page
		for _, e := range page.Entries {
			total++
			if asJSON {
				if err := enc.Encode(e); err != nil {
					return err
				}
				continue
			}
			last := ""
			if len(e.Reasons) > 0 {
				last = e.Reasons[len(e.Reasons)-1]
			}
			if len(last) > 100 {
				last = last[:100] + "…"
			}
			fmt.Fprintf(tw, "%s\t%s/%d@%d\t%s\t%d\t%s\t%s\n", e.ID, e.Topic, e.Partition, e.Offset,
				shipper.ByteSize(e.Size), e.Attempts, e.Type, last)
		}
		if page.Next == "" {
			break
		}
		q.Set("after", page.Next)
	}
	if !asJSON {
		tw.Flush()
		fmt.Fprintf(stdout, "%d entries listed; the store holds %d (%s of %s)\n", total, store.Store.Entries,
			shipper.ByteSize(store.Store.Bytes), shipper.ByteSize(store.Store.MaxBytes))
	}
	return nil
}

func sortedKeys(m map[string]int) []string { return slices.Sorted(maps.Keys(m)) }
