package elasticsearch

import (
	"net/url"
	"strings"
	"time"

	"github.com/shipper-agent/shipper"
)

// Config configures the Elasticsearch output.
type Config struct {
	// URLs of the Elasticsearch nodes (or of a load balancer in front of
	// them). An entry may hold several URLs separated by commas.
	// Default ["http://127.0.0.1:9200"].
	URLs []string `hcl:"urls,optional"`
	// Index receives the documents. Default "shipper-logs".
	Index string `hcl:"index,optional"`
	// Username and Password for HTTP basic authentication. Default none.
	Username string         `hcl:"username,optional"`
	Password shipper.Secret `hcl:"password,optional"`
	// APIKey is a base64-encoded Elasticsearch API key; it takes
	// precedence over Username/Password. Default none.
	APIKey shipper.Secret `hcl:"api_key,optional"`
	// Workers is the number of chunks delivered concurrently, and so the
	// number of bulk requests in flight. Default 2.
	Workers int `hcl:"workers,optional"`
	// MaxBulkBytes splits a chunk into several bulk requests when its
	// request body would exceed this size. Default 8MiB.
	MaxBulkBytes shipper.ByteSize `hcl:"max_bulk_bytes,optional"`
	// RequestTimeout bounds one bulk request from start to response. Default 60s.
	RequestTimeout time.Duration `hcl:"request_timeout,optional"`
	// DialTimeout bounds opening a TCP connection. Default 5s.
	DialTimeout time.Duration `hcl:"dial_timeout,optional"`
	// TLSHandshakeTimeout bounds a TLS handshake. Default 10s.
	TLSHandshakeTimeout time.Duration `hcl:"tls_handshake_timeout,optional"`
	// IdleConnTimeout retires pooled connections idle this long; keep it
	// below the idle timeout of any firewall, NAT or proxy in between.
	// Default 30s.
	IdleConnTimeout time.Duration `hcl:"idle_conn_timeout,optional"`
	// KeepAlive is the TCP keepalive idle time (then probes every
	// KeepAlive/3, 3 probes). Default 15s.
	KeepAlive time.Duration `hcl:"keepalive,optional"`
	// RetryInitialBackoff and RetryMaxBackoff bound the jittered exponential
	// backoff between attempts to deliver a chunk. Retries never give up:
	// data stays in the buffer until delivered. Defaults 500ms and 30s.
	RetryInitialBackoff time.Duration `hcl:"retry_initial_backoff,optional"`
	RetryMaxBackoff     time.Duration `hcl:"retry_max_backoff,optional"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		URLs:                []string{"http://127.0.0.1:9200"},
		Index:               "shipper-logs",
		Workers:             2,
		MaxBulkBytes:        8 << 20,
		RequestTimeout:      60 * time.Second,
		DialTimeout:         5 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     30 * time.Second,
		KeepAlive:           15 * time.Second,
		RetryInitialBackoff: 500 * time.Millisecond,
		RetryMaxBackoff:     30 * time.Second,
	}
}

// Addresses returns the configured URLs with comma-separated entries split.
func (c Config) Addresses() []string {
	var out []string
	for _, u := range c.URLs {
		for _, p := range strings.Split(u, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, strings.TrimRight(p, "/"))
			}
		}
	}
	return out
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var p shipper.Problems
	bad := p.Addf
	addrs := c.Addresses()
	if len(addrs) == 0 {
		bad("urls", "at least one URL is required")
	}
	for _, a := range addrs {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("urls", "%q is not an http:// or https:// URL", a)
		} else if u.User != nil {
			bad("urls", "%s: put credentials in username/password or api_key, not in the URL", u.Redacted())
		}
	}
	if c.Index == "" || c.Index != strings.ToLower(c.Index) || strings.ContainsAny(c.Index, ` "*\<|,>/?#:`) ||
		strings.HasPrefix(c.Index, "_") || strings.HasPrefix(c.Index, "-") {
		bad("index", "%q is not a valid index name (lowercase, no spaces or \\/*?\"<>|,#:, not starting with _ or -)", c.Index)
	}
	if c.Workers < 1 || c.Workers > 64 {
		bad("workers", "must be between 1 and 64, got %d", c.Workers)
	}
	if c.MaxBulkBytes < 64<<10 {
		bad("max_bulk_bytes", "must be at least 64KiB, got %s", c.MaxBulkBytes)
	}
	p.Positive(map[string]time.Duration{
		"request_timeout": c.RequestTimeout, "dial_timeout": c.DialTimeout,
		"tls_handshake_timeout": c.TLSHandshakeTimeout, "idle_conn_timeout": c.IdleConnTimeout,
		"keepalive": c.KeepAlive, "retry_initial_backoff": c.RetryInitialBackoff,
		"retry_max_backoff": c.RetryMaxBackoff,
	})
	if c.RetryMaxBackoff < c.RetryInitialBackoff {
		bad("retry_max_backoff", "must be at least retry_initial_backoff (%s)", c.RetryInitialBackoff)
	}
	return p.Err()
}
