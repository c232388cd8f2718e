package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/agent"
)

// apiFlags are the flags of every command that talks to a running agent.
type apiFlags struct {
	addr, config *string
	connectWait  *time.Duration
}

func addAPIFlags(fs *flag.FlagSet) apiFlags {
	return apiFlags{
		addr:   fs.String("addr", "", "the agent's API address, host:port (default: api.address from -config)"),
		config: fs.String("config", "/etc/shipper/shipper.hcl", "configuration file, to find the agent's API and api.token"),
		connectWait: fs.Duration("connect-wait", 10*time.Second,
			"how long to keep trying while the agent's API refuses connections (the agent is starting); 0: try once"),
	}
}

func (f apiFlags) client() (apiClient, error) {
	return newAPIClient(*f.addr, *f.config, *f.connectWait)
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
