package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Start-up and management calls. Unlike bulk requests, which the delivery
// loop retries by its own rules (a retry policy stacked under the client
// would multiply attempts and hide outcomes from the pool), these are plain
// request/response calls that only need to wait for the cluster: they go
// through go-retryablehttp, with its jittered backoff, bounded by the
// caller's context.

// controlAttemptTimeout bounds one attempt of a management call.
const controlAttemptTimeout = 10 * time.Second

// ClusterInfo is what the start-up check learned about the cluster.
type ClusterInfo struct {
	Name    string `json:"cluster_name"`
	Version string `json:"version"`
}

// ErrIncompatible marks a definitive start-up failure: the cluster answered,
// and what it answered rules out delivering (not Elasticsearch 8.x, a
// template refused as invalid). Waiting longer does not help.
//
// Refused credentials (401, 403) are not definitive: delivery holds on
// them, as it does at any time, until they are accepted (a secret rotated).
var ErrCredentials = errors.New("elasticsearch refused the credentials")

// ErrIncompatible marks a definitive start-up failure; see ErrCredentials
// for what is not one.
var ErrIncompatible = errors.New("elasticsearch refused")

// ErrTLS marks a start-up check that failed because a node's certificate
// did not verify (or the node refused ours). The error says which setting
// to check. It is not definitive either: the pool keeps probing the nodes
// with the same TLS configuration, and sends wait until one verifies.
var ErrTLS = errors.New("elasticsearch TLS")

// Check waits for the cluster, checks it is Elasticsearch 8.x, and, with
// template_file set, installs that index template. It retries while no
// node answers (or answers 5xx or 429), with jittered backoff, until ctx
// ends; it then returns an error wrapping ctx's, with the last failure. An
// answer that rules delivery out returns at once an error wrapping
// ErrIncompatible.
//
// The version comes from GET /_nodes/_local, which every Elasticsearch
// answers, not from GET / (a node may answer it 405).
func (o *Output) Check(ctx context.Context) (ClusterInfo, error) {
	c := o.controlClient()
	defer c.HTTPClient.CloseIdleConnections()
	var info ClusterInfo
	body, err := o.control(ctx, c, http.MethodGet, "/_nodes/_local?filter_path=cluster_name,nodes.*.version", nil)
	if err != nil {
		return info, err
	}
	var nodes struct {
		ClusterName string `json:"cluster_name"`
		Nodes       map[string]struct {
			Version string `json:"version"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(body, &nodes); err != nil || len(nodes.Nodes) == 0 {
		return info, fmt.Errorf("%w: GET /_nodes/_local answered no node version: %.200s", ErrIncompatible, body)
	}
	info.Name = nodes.ClusterName
	for _, n := range nodes.Nodes {
		info.Version = n.Version
	}
	if !strings.HasPrefix(info.Version, "8.") {
		return info, fmt.Errorf("%w: cluster %q runs version %s; shipper writes to Elasticsearch 8.x", ErrIncompatible, info.Name, info.Version)
	}
	if o.cfg.TemplateFile != "" {
		tmpl, err := os.ReadFile(o.cfg.TemplateFile)
		if err != nil {
			return info, fmt.Errorf("%w: template_file: %v", ErrIncompatible, err)
		}
		path := "/_index_template/" + url.PathEscape(o.cfg.TemplateName)
		if _, err := o.control(ctx, c, http.MethodPut, path, tmpl); err != nil {
			return info, fmt.Errorf("install index template %q from %s: %w", o.cfg.TemplateName, o.cfg.TemplateFile, err)
		}
		o.log.Info("elasticsearch index template installed", "name", o.cfg.TemplateName, "file", o.cfg.TemplateFile)
	}
	return info, nil
}

// controlClient returns a go-retryablehttp client for management calls:
// retries without limit (the context bounds them), jittered linear
// backoff capped at 10s, the configured nodes in turn.
func (o *Output) controlClient() *retryablehttp.Client {
	c := retryablehttp.NewClient()
	// A node that accepts and never answers must not hold start-up for a
	// whole request_timeout: the next attempt goes to the next node.
	c.HTTPClient = &http.Client{Timeout: min(o.cfg.RequestTimeout, controlAttemptTimeout),
		// The nodes' TLS, as every request to them.
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: o.cfg.DialTimeout}).DialContext,
			TLSClientConfig:     o.pool.tls,
			TLSHandshakeTimeout: o.cfg.TLSHandshakeTimeout,
		}}
	c.Logger = nil // attempts are logged sparsely below
	c.RetryMax = math.MaxInt32
	c.RetryWaitMin, c.RetryWaitMax = 250*time.Millisecond, 2*time.Second
	c.Backoff = func(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
		return time.Duration(math.Min(float64(retryablehttp.LinearJitterBackoff(min, max, attempt, resp)), float64(10*time.Second)))
	}
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.CheckRetry = func(ctx context.Context, res *http.Response, err error) (bool, error) {
		// A certificate that does not verify, ours or the node's, will
		// not verify on the next attempt either (go-retryablehttp only
		// knows the node's unknown authority).
		if err != nil {
			if _, cert := tlsProblem(err); cert {
				return false, err
			}
		}
		return retryablehttp.DefaultRetryPolicy(ctx, res, err)
	}
	addrs := o.cfg.Addresses()
	var next atomic.Int64
	c.PrepareRetry = func(req *http.Request) error {
		// The next node, so that one node down does not hold start-up.
		u, err := url.Parse(addrs[int(next.Add(1))%len(addrs)])
		if err != nil {
			return err
		}
		req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
		req.Host = u.Host
		// The credentials as they are now: a secret file fixed during
		// start-up applies to the next attempt.
		o.pool.auth.authorize(req.Header)
		return nil
	}
	c.RequestLogHook = func(_ retryablehttp.Logger, req *http.Request, attempt int) {
		// Attempts 1, 2, 4, 8...: an outage of minutes logs a few lines.
		if attempt > 0 && bits.OnesCount(uint(attempt)) == 1 {
			o.log.Warn("elasticsearch not answering yet; retrying", "url", req.URL.Redacted(), "attempt", attempt)
		}
	}
	return c
}

// control sends one management request and returns the answer's body. A
// 2xx is success; 401, 403 and other 4xx answers wrap ErrIncompatible.
func (o *Output) control(ctx context.Context, c *retryablehttp.Client, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, o.cfg.Addresses()[0]+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	o.pool.auth.authorize(req.Header)
	res, err := c.Do(req)
	if err != nil {
		// go-retryablehttp does not retry a certificate that does not
		// verify: say what is wrong and where to look.
		if problem, cert := tlsProblem(err); cert {
			return nil, fmt.Errorf("%w: %s %s: %s: %v", ErrTLS, method, path, problem, err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no elasticsearch node answered %s %s in time: %w (last: %v)", method, path, ctx.Err(), err)
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		return raw, nil
	case res.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("%w: %s %s answered %d: check the credentials (username/password, api_key or bearer_token, or their files): %s", ErrCredentials, method, path, res.StatusCode, oneLine(string(raw)))
	case res.StatusCode == http.StatusForbidden:
		// Authenticated, but without a privilege the check needs: bulk
		// writes may still be allowed, and tell by themselves.
		return nil, fmt.Errorf("%w: %s %s answered 403: the user lacks a privilege this start-up step needs "+
			"(the monitor cluster privilege for GET /_nodes/_local; manage_index_templates for a template), "+
			"which bulk writes may not need: %s", ErrCredentials, method, path, oneLine(string(raw)))
	case res.StatusCode >= 400 && res.StatusCode < 500:
		return nil, fmt.Errorf("%w: %s %s answered %d: %s", ErrIncompatible, method, path, res.StatusCode, oneLine(string(raw)))
	default:
		// Retries ended (the context) on a 5xx or 429.
		return nil, fmt.Errorf("no elasticsearch node answered %s %s in time: %w (last: %d %s)", method, path, context.DeadlineExceeded, res.StatusCode, oneLine(string(raw)))
	}
}
