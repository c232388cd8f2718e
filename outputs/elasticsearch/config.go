package elasticsearch

import (
	"encoding/json"
	"net/url"
	"os"
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
	// Index is where each document goes: a name, or a pattern over the
	// record, e.g. "logs-{topic}-{+yyyy.MM.dd}": {topic}, a document
	// field {[field]} or {[a][b]}, and the event's date {+yyyy.MM.dd}
	// (UTC; the document's @timestamp, else the Kafka timestamp). Names
	// are lower-cased and characters Elasticsearch refuses become '_'; a
	// record that still has no valid name is dead-lettered
	// ("index_routing"). See route.go. Default "shipper-logs".
	Index string `hcl:"index,optional"`
	// DataStream says Index names data streams: documents are written with
	// create (the only action a data stream takes) and always carry
	// @timestamp. It requires document_id = "offset". Default false.
	DataStream bool `hcl:"data_stream,optional"`
	// Pipeline is an ingest pipeline every bulk request runs through.
	// Default "": none.
	Pipeline string `hcl:"pipeline,optional"`
	// StartupTimeout bounds the start-up check (Output.Check): waiting for
	// a node to answer, checking it is Elasticsearch 8.x, installing the
	// template. Past it the agent logs an error and delivers anyway, its
	// nodes probed as usual; a cluster that answers but rules delivery out
	// (another version, a refused template) stops the agent at once.
	// Refused credentials do not: delivery holds until they are accepted.
	// Default 2m.
	StartupTimeout time.Duration `hcl:"startup_timeout,optional"`
	// TemplateFile is a JSON index template (the body of PUT
	// _index_template/<name>, e.g. index_patterns, template.mappings,
	// data_stream) installed at start. Default "": none.
	TemplateFile string `hcl:"template_file,optional"`
	// TemplateName names the template installed. Default "shipper".
	TemplateName string `hcl:"template_name,optional"`
	// Credentials: at most one scheme, basic (Username with Password or
	// PasswordFile), APIKey(File) or BearerToken(File); default none. Each
	// secret is given either in the configuration (as env("NAME") to keep
	// it out of the file) or as a file, e.g. a Kubernetes secret mounted as
	// a file. A file is read at start (a missing, unreadable or empty file
	// is a configuration error) and again when it changes (its path is
	// checked at most once a second, when a request is sent), so a rotated
	// secret applies without a restart; a final newline is dropped. A file
	// that cannot be read again keeps the last value read. Secrets are
	// never logged. Elasticsearch refusing the credentials (401, 403) holds
	// delivery until they are accepted (see auth.go).

	// Username for HTTP basic authentication; needs Password or
	// PasswordFile. Default none.
	Username string `hcl:"username,optional"`
	// Password for basic authentication. Default none.
	Password shipper.Secret `hcl:"password,optional"`
	// PasswordFile holds the password instead of Password. Default none.
	PasswordFile string `hcl:"password_file,optional"`
	// APIKey is an Elasticsearch API key, sent as "Authorization: ApiKey":
	// its encoded form (base64 of id:api_key, the "encoded" field of the
	// create API key answer), or id:api_key, which is encoded for it.
	// Default none.
	APIKey shipper.Secret `hcl:"api_key,optional"`
	// APIKeyFile holds the API key instead of APIKey. Default none.
	APIKeyFile string `hcl:"api_key_file,optional"`
	// BearerToken is sent as "Authorization: Bearer <token>": an
	// Elasticsearch access token or service account token, or a JWT.
	// Default none.
	BearerToken shipper.Secret `hcl:"bearer_token,optional"`
	// BearerTokenFile holds the token instead of BearerToken. Default none.
	BearerTokenFile string `hcl:"bearer_token_file,optional"`
	// TLS configures HTTPS to the nodes, which https:// URLs turn on: the
	// CA that verifies them, a client certificate, the server name
	// (TLSConfig, tls.go). Default: the system's roots, no client
	// certificate.
	TLS TLSConfig `hcl:"tls,block"`
	// MaxInFlight is the most bulk requests in flight at once, retries
	// included, and the number of chunks delivered concurrently (each
	// delivery worker holds one chunk and sends one request at a time).
	// 1 to 64. Default 4.
	MaxInFlight int `hcl:"max_in_flight,optional"`
	// AdaptiveConcurrency lets the number of bulk requests in flight adapt
	// within [1, max_in_flight]: halved on a 429, a whole-request 5xx or a
	// request that got no answer, cut by a quarter when answers slow to
	// three times the cluster's base latency, grown by one while answers
	// are good and the window is full (window.go). Off: always
	// max_in_flight. Default true.
	AdaptiveConcurrency bool `hcl:"adaptive_concurrency,optional"`
	// Compression of bulk request bodies: "none" or "gzip" (fastest
	// level; Content-Encoding: gzip). Default "none": measured on one host
	// gzip costs more CPU than the bytes it saves (docs/benchmarks.md);
	// across a network billed or limited by the byte, turn it on.
	Compression string `hcl:"compression,optional"`
	// MaxBulkBytes splits a chunk into several bulk requests when its
	// request body would exceed this size (a single larger document is sent
	// alone). At most 100MiB, Elasticsearch's default
	// http.max_content_length; a smaller limit of a node or proxy is learned
	// at run time from its 413 answers. Default 8MiB.
	MaxBulkBytes shipper.ByteSize `hcl:"max_bulk_bytes,optional"`
	// DocumentID is how document ids are made: "offset" gives every
	// record its own document, <topic>-<topic id>-<partition>-<offset>,
	// written with create (a replay finds it and counts it a duplicate).
	// "key" gives every record key one document, <topic>-<topic id>-<key>
	// (the key as it is when it is UTF-8 text of at most 256 bytes without
	// control characters and not starting with '#'; else '#' and its
	// SHA-256 in hex), written with index and the offset as an external
	// version, so the document holds the latest record of the key whatever
	// the order of delivery, and replays change nothing: a compacted topic
	// mirrored. Records without a key get offset ids. Default "offset".
	DocumentID string `hcl:"document_id,optional"`
	// Tombstones says what becomes of a record with a null value (a Kafka
	// tombstone): "skip" (nothing is indexed; the record counts as done),
	// "dead_letter", or "delete" (with document_id = "key": the key's
	// document is deleted, unless it holds a later offset). A record with an
	// empty value is always skipped: there is nothing to index. Default
	// "skip".
	Tombstones string `hcl:"tombstones,optional"`
	// InvalidUTF8 says what becomes of a value that is not valid UTF-8:
	// "base64" indexes {"message": <the value with invalid bytes replaced by
	// U+FFFD>, "message_base64": <the exact bytes>}; "dead_letter" stores it
	// as a dead letter. Default "base64".
	InvalidUTF8 string `hcl:"invalid_utf8,optional"`
	// MetadataField, when set, adds the record's Kafka metadata to each
	// document under this top-level field: topic, partition, offset, key
	// (a string; key_base64 too when it is not UTF-8), timestamp, and the
	// headers named in MetadataHeaders (header name -> value as a string;
	// the last of repeated keys). A document whose own object already has
	// the field keeps its own. Default "": off.
	MetadataField string `hcl:"metadata_field,optional"`
	// MetadataHeaders are the Kafka header names copied under
	// MetadataField (.headers). Default none.
	MetadataHeaders []string `hcl:"metadata_headers,optional"`
	// MaxItemAttempts is how many times the delivery loop sends a document
	// that Elasticsearch keeps failing for its own sake (a per-item 500, or a
	// 409 other than "already indexed") before dead-lettering it with every
	// reason seen. Failures of the cluster (429, 502, 503, 504, whole-request
	// errors) do not count. 1 to 1000, default 10.
	MaxItemAttempts int `hcl:"max_item_attempts,optional"`
	// RequestTimeout bounds the wait for an answer once a request is
	// written: past it, the node counts a stall (response). A request with
	// its hedges or its one re-route ends within twice this; a chunk split
	// into several requests gives each its own. Default 60s.
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
	// ConnMaxLifetime retires a connection this old once it is idle, so
	// that load balancers can rebalance. Default 5m.
	ConnMaxLifetime time.Duration `hcl:"conn_max_lifetime,optional"`
	// StallTimeout: a request body that drains no bytes, or an answer
	// that delivers none, for this long is a stall: its connection is
	// closed, the node counts it, and the request goes to another node.
	// The kernel's TCP_USER_TIMEOUT is twice this. Default 10s.
	StallTimeout time.Duration `hcl:"stall_timeout,optional"`
	// HedgeAfter is the least time to wait for an answer to a written
	// request before sending it again (a hedge): first on a fresh
	// connection to the same node, then to another node. The wait grows
	// with what the node has shown: three times its slowest recent answer
	// for that size. The first answer wins; documents are created under
	// deterministic ids, so a second copy is a 409. 0 turns hedging off.
	// Default 2s.
	HedgeAfter time.Duration `hcl:"hedge_after,optional"`
	// HedgeBudget bounds hedges to this share of the requests of the last
	// minute (at least 3 a minute); hedging also pauses for 30s after a
	// 429. Default 0.1.
	HedgeBudget float64 `hcl:"hedge_budget,optional"`
	// ProbeInterval is how often a dead node is probed with a plain TCP
	// connect (jittered by ±25%); once it accepts connections, a GET / on
	// a fresh connection brings it back. Default 1s.
	ProbeInterval time.Duration `hcl:"probe_interval,optional"`
	// ResurrectMax bounds the backoff of full probes of a node that
	// accepts connections but does not answer them. Default 30s.
	ResurrectMax time.Duration `hcl:"resurrect_max,optional"`
	// PipelineStallTimeout: when chunks wait, a node looks alive and no
	// bulk request has returned for this long, the delivery workers are
	// restarted; if that does not help within as long again, /api/health
	// reports the pipeline wedged. At least 2 × request_timeout. Default 5m.
	PipelineStallTimeout time.Duration `hcl:"pipeline_stall_timeout,optional"`
	// RetryInitialBackoff and RetryMaxBackoff bound the jittered exponential
	// backoff between attempts to deliver a chunk (used by the delivery
	// loop). Retries give up on a document only as max_item_attempts says:
	// data stays in the buffer until delivered or dead-lettered. Defaults
	// 500ms and 30s.
	RetryInitialBackoff time.Duration `hcl:"retry_initial_backoff,optional"`
	RetryMaxBackoff     time.Duration `hcl:"retry_max_backoff,optional"`
}

// maxBulkBytes is Elasticsearch's default http.max_content_length.
const maxBulkBytes = 100 << 20

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		URLs:                 []string{"http://127.0.0.1:9200"},
		Index:                "shipper-logs",
		MaxInFlight:          4,
		AdaptiveConcurrency:  true,
		Compression:          "none",
		MaxBulkBytes:         8 << 20,
		Tombstones:           "skip",
		StartupTimeout:       2 * time.Minute,
		TemplateName:         "shipper",
		DocumentID:           "offset",
		InvalidUTF8:          "base64",
		MaxItemAttempts:      10,
		RequestTimeout:       60 * time.Second,
		DialTimeout:          5 * time.Second,
		TLSHandshakeTimeout:  10 * time.Second,
		IdleConnTimeout:      30 * time.Second,
		KeepAlive:            15 * time.Second,
		ConnMaxLifetime:      5 * time.Minute,
		StallTimeout:         10 * time.Second,
		HedgeAfter:           2 * time.Second,
		HedgeBudget:          0.1,
		ProbeInterval:        time.Second,
		ResurrectMax:         30 * time.Second,
		PipelineStallTimeout: 5 * time.Minute,
		RetryInitialBackoff:  500 * time.Millisecond,
		RetryMaxBackoff:      30 * time.Second,
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
			bad("urls", "%s: put credentials in username/password, api_key or bearer_token, not in the URL", u.Redacted())
		}
	}
	c.validateCredentials(&p)
	c.validateTLS(&p)
	if _, err := parseIndexPattern(c.Index); err != nil {
		bad("index", "%v", err)
	}
	if c.StartupTimeout <= 0 {
		bad("startup_timeout", "must be positive, got %s", c.StartupTimeout)
	}
	if c.TemplateFile != "" {
		if b, err := os.ReadFile(c.TemplateFile); err != nil {
			bad("template_file", "%v", err)
		} else if !json.Valid(b) {
			bad("template_file", "%s is not valid JSON", c.TemplateFile)
		}
	}
	if c.TemplateName == "" || strings.ContainsAny(c.TemplateName, invalidIndexChars) {
		bad("template_name", "%q: want a name without spaces or %s", c.TemplateName, strings.TrimSpace(invalidIndexChars))
	}
	if c.DataStream && c.DocumentID != "offset" {
		bad("data_stream", `needs document_id = "offset": a data stream only takes create, never a document replaced by key`)
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 64 {
		bad("max_in_flight", "must be between 1 and 64, got %d", c.MaxInFlight)
	}
	if c.Compression != "none" && c.Compression != "gzip" {
		bad("compression", `must be "none" or "gzip", got %q`, c.Compression)
	}
	if c.MaxBulkBytes < 64<<10 {
		bad("max_bulk_bytes", "must be at least 64KiB, got %s", c.MaxBulkBytes)
	} else if c.MaxBulkBytes > maxBulkBytes {
		bad("max_bulk_bytes", "must be at most 100MiB (Elasticsearch's default http.max_content_length is 100mb; "+
			"a smaller node or proxy limit is learned at run time from 413 answers), got %s", c.MaxBulkBytes)
	}
	if c.Tombstones != "skip" && c.Tombstones != "dead_letter" && c.Tombstones != "delete" {
		bad("tombstones", `must be "skip", "dead_letter" or "delete", got %q`, c.Tombstones)
	}
	if c.DocumentID != "offset" && c.DocumentID != "key" {
		bad("document_id", `must be "offset" or "key", got %q`, c.DocumentID)
	}
	if c.Tombstones == "delete" && c.DocumentID != "key" {
		bad("tombstones", `"delete" needs document_id = "key": with offset ids no other record shares a tombstone's id`)
	}
	if c.MetadataField == "" && len(c.MetadataHeaders) > 0 {
		bad("metadata_headers", "needs metadata_field")
	}
	if c.MetadataField == timestampField || c.MetadataField == "message" || c.MetadataField == "message_base64" ||
		strings.ContainsAny(c.MetadataField, ".\"\\") || strings.HasPrefix(c.MetadataField, "_") {
		bad("metadata_field", "%q: want a plain field name, not @timestamp, message, message_base64, one starting with _ or with a dot", c.MetadataField)
	}
	if c.InvalidUTF8 != "base64" && c.InvalidUTF8 != "dead_letter" {
		bad("invalid_utf8", `must be "base64" or "dead_letter", got %q`, c.InvalidUTF8)
	}
	if c.MaxItemAttempts < 1 || c.MaxItemAttempts > 1000 {
		bad("max_item_attempts", "must be between 1 and 1000, got %d", c.MaxItemAttempts)
	}
	p.Positive(map[string]time.Duration{
		"request_timeout": c.RequestTimeout, "dial_timeout": c.DialTimeout,
		"tls_handshake_timeout": c.TLSHandshakeTimeout, "idle_conn_timeout": c.IdleConnTimeout,
		"keepalive": c.KeepAlive, "retry_initial_backoff": c.RetryInitialBackoff,
		"conn_max_lifetime": c.ConnMaxLifetime, "stall_timeout": c.StallTimeout,
		"probe_interval": c.ProbeInterval, "resurrect_max": c.ResurrectMax,
		"retry_max_backoff": c.RetryMaxBackoff,
	})
	if c.RetryMaxBackoff < c.RetryInitialBackoff {
		bad("retry_max_backoff", "must be at least retry_initial_backoff (%s)", c.RetryInitialBackoff)
	}
	if c.HedgeAfter < 0 {
		bad("hedge_after", "must be 0 (off) or positive, got %s", c.HedgeAfter)
	}
	if c.HedgeBudget < 0 || c.HedgeBudget > 1 {
		bad("hedge_budget", "must be between 0 and 1, got %g", c.HedgeBudget)
	}
	if c.PipelineStallTimeout < 2*c.RequestTimeout {
		bad("pipeline_stall_timeout", "must be at least 2 × request_timeout (%s), got %s", 2*c.RequestTimeout, c.PipelineStallTimeout)
	}
	if c.ResurrectMax < c.ProbeInterval {
		bad("resurrect_max", "must be at least probe_interval (%s)", c.ProbeInterval)
	}
	return p.Err()
}
