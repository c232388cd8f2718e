package kafka

import (
	"strings"
	"time"

	"github.com/shipper-agent/shipper"
)

// Config configures the Kafka input.
type Config struct {
	// Brokers to bootstrap from, "host:port". An entry may hold several
	// comma-separated brokers. Default ["127.0.0.1:9092"].
	Brokers []string `hcl:"brokers,optional"`
	// Topics to consume. Required.
	Topics []string `hcl:"topics,optional"`
	// GroupID is the consumer group; agents sharing it share the
	// partitions. Default "shipper".
	GroupID string `hcl:"group_id,optional"`
	// StartOffset applies to partitions the group has never committed:
	// "earliest" or "latest". Default "earliest".
	StartOffset string `hcl:"start_offset,optional"`
	// CommitInterval is how often delivered offsets are committed. Offsets
	// are committed only once Elasticsearch holds every record below them.
	// Default 1s.
	CommitInterval time.Duration `hcl:"commit_interval,optional"`
	// SessionTimeout: the group drops a member silent this long. Default 30s.
	SessionTimeout time.Duration `hcl:"session_timeout,optional"`
	// HeartbeatInterval between group heartbeats. Default 3s.
	HeartbeatInterval time.Duration `hcl:"heartbeat_interval,optional"`
	// RebalanceTimeout bounds a rebalance. Default 30s.
	RebalanceTimeout time.Duration `hcl:"rebalance_timeout,optional"`
	// IsolationLevel is "read_committed" (records of aborted transactions
	// are never read; records of open transactions wait for their commit)
	// or "read_uncommitted". Control records are never read. Default
	// "read_committed".
	IsolationLevel string `hcl:"isolation_level,optional"`
	// FetchMaxBytes bounds the fetched data held at once across all
	// assigned partitions, whatever their number: the brokers' fetch
	// responses share it. A single record batch larger than this is still
	// fetched, alone. Default 8MiB.
	FetchMaxBytes shipper.ByteSize `hcl:"fetch_max_bytes,optional"`
	// FetchMaxWait bounds how long a fetch waits for data. Default 500ms.
	FetchMaxWait time.Duration `hcl:"fetch_max_wait,optional"`
	// DialTimeout bounds connecting to a broker. Default 10s.
	DialTimeout time.Duration `hcl:"dial_timeout,optional"`
	// TLS connects to the brokers over TLS when its enabled is true
	// (TLSConfig, security.go). Default: plain TCP.
	TLS TLSConfig `hcl:"tls,block"`
	// SASL authenticates to the brokers when its mechanism is set
	// (SASLConfig, security.go). Default: no authentication.
	SASL SASLConfig `hcl:"sasl,block"`
	// TopicRefreshInterval is how often the topics' partition counts and
	// ids are checked: a topic created after the agent started, given more
	// partitions, or deleted and created again makes the group rebalance
	// to read it. Default 10s.
	TopicRefreshInterval time.Duration `hcl:"topic_refresh_interval,optional"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Brokers:           []string{"127.0.0.1:9092"},
		GroupID:           "shipper",
		StartOffset:       "earliest",
		CommitInterval:    time.Second,
		SessionTimeout:    30 * time.Second,
		HeartbeatInterval: 3 * time.Second,
		RebalanceTimeout:  30 * time.Second,
		IsolationLevel:    "read_committed",
		FetchMaxBytes:     8 << 20,
		FetchMaxWait:      500 * time.Millisecond,
		DialTimeout:       10 * time.Second,

		TopicRefreshInterval: 10 * time.Second,
	}
}

// BrokerList returns the brokers with comma-separated entries split.
func (c Config) BrokerList() []string {
	var out []string
	for _, b := range c.Brokers {
		for _, p := range strings.Split(b, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var p shipper.Problems
	bad := p.Addf
	if len(c.BrokerList()) == 0 {
		bad("brokers", "at least one broker is required")
	}
	for _, b := range c.BrokerList() {
		if !strings.Contains(b, ":") {
			bad("brokers", "%q: want host:port", b)
		}
	}
	if len(c.Topics) == 0 {
		bad("topics", "at least one topic is required")
	}
	if c.GroupID == "" {
		bad("group_id", "must be set")
	}
	if c.StartOffset != "earliest" && c.StartOffset != "latest" {
		bad("start_offset", "must be \"earliest\" or \"latest\", got %q", c.StartOffset)
	}
	p.Positive(map[string]time.Duration{
		"commit_interval": c.CommitInterval, "session_timeout": c.SessionTimeout,
		"heartbeat_interval": c.HeartbeatInterval, "rebalance_timeout": c.RebalanceTimeout,
		"fetch_max_wait": c.FetchMaxWait, "dial_timeout": c.DialTimeout,
		"topic_refresh_interval": c.TopicRefreshInterval,
	})
	if c.HeartbeatInterval > 0 && c.SessionTimeout > 0 && c.HeartbeatInterval >= c.SessionTimeout {
		bad("heartbeat_interval", "must be shorter than session_timeout (%s)", c.SessionTimeout)
	}
	if c.FetchMaxBytes < 1<<10 {
		bad("fetch_max_bytes", "must be at least 1KiB, got %s", c.FetchMaxBytes)
	}
	if c.FetchMaxBytes > 1<<30 {
		bad("fetch_max_bytes", "must be at most 1GiB, got %s", c.FetchMaxBytes)
	}
	if c.IsolationLevel != "read_committed" && c.IsolationLevel != "read_uncommitted" {
		bad("isolation_level", "must be \"read_committed\" or \"read_uncommitted\", got %q", c.IsolationLevel)
	}
	c.validateSecurity(&p)
	return p.Err()
}
