package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/agent"
)

const dlqUsage = `Usage: shipper dlq <command> [flags]

The dead-letter store holds records Elasticsearch can never accept as they
are, with every reason seen. These commands talk to the running agent's API,
found with -addr or from the api block of -config; while it refuses
connections (the agent is starting) they try again for up to -wait (10s).
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
	addr := fs.String("addr", "", "the agent's API address, host:port (default: api.address from -config)")
	path := fs.String("config", "/etc/shipper/shipper.hcl", "configuration file, to find the agent's API")
	topic := fs.String("topic", "", "only entries of this topic")
	reason := fs.String("reason", "", "only entries whose type is, or whose reasons contain, this text")
	asJSON := fs.Bool("json", false, "list: print one JSON object per entry")
	dryRun := fs.Bool("dry-run", false, "replay: say what would be re-sent, send nothing")
	all := fs.Bool("all", false, "purge: delete every entry")
	wait := fs.Duration("wait", 10*time.Second, "how long to keep trying while the agent's API refuses connections (the agent is starting); 0: try once")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	c, err := newAPIClient(*addr, *path, *wait)
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

// newAPIClient finds the agent's API: at addr, or at the api.address of
// the configuration file. A wildcard listen address is reached on
// loopback. The token is the file's api.token, else $SHIPPER_API_TOKEN
// (never a flag: command lines are visible to every user of the host).
func newAPIClient(addr, configPath string, wait time.Duration) (apiClient, error) {
	token := shipper.Secret(os.Getenv("SHIPPER_API_TOKEN"))
	if addr == "" {
		cfg, err := agent.LoadConfig(configPath)
		if err != nil {
			return apiClient{}, fmt.Errorf("finding the agent's API (give -addr, or -config for its api.address): %w", err)
		}
		addr = cfg.API.Address
		if cfg.API.Token != "" {
			token = cfg.API.Token
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return apiClient{}, fmt.Errorf("-addr %q: want host:port: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return apiClient{base: "http://" + net.JoinHostPort(host, port), token: token, wait: wait}, nil
}

// apiClient calls the agent's API.
type apiClient struct {
	base  string
	token shipper.Secret // api.token, sent as a bearer token when set
	// wait bounds the retries of a request the agent's API refused to
	// connect: it is starting (go-retryablehttp, jittered backoff).
	wait time.Duration
}

// do sends a request and decodes its JSON answer into v. An answer other
// than 2xx is an error carrying the API's message. A refused connection is
// tried again for up to c.wait: nothing was sent, so a replay or purge is
// never sent twice; any other failure is returned at once.
func (c apiClient) do(ctx context.Context, method, path string, q url.Values, v any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
	}
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.RetryWaitMin, rc.RetryWaitMax = 100*time.Millisecond, time.Second
	rc.RetryMax = math.MaxInt32
	rc.Backoff = retryablehttp.LinearJitterBackoff
	deadline := time.Now().Add(c.wait)
	rc.CheckRetry = func(ctx context.Context, _ *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return errors.Is(err, syscall.ECONNREFUSED) && time.Now().Before(deadline), err
	}
	rc.ErrorHandler = func(_ *http.Response, err error, attempts int) (*http.Response, error) {
		if attempts > 1 {
			return nil, fmt.Errorf("%w (%d attempts in %s)", err, attempts, c.wait)
		}
		return nil, err
	}
	res, err := rc.Do(req)
	if err != nil {
		return fmt.Errorf("the agent's API at %s: %w", c.base, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, e.Error)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

func sortedKeys(m map[string]int) []string { return slices.Sorted(maps.Keys(m)) }
