package kafka_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/inputs/kafka"
)

// fieldPaths returns the set of paths, sorted, of the *shipper.FieldErrors
// in err, which may be an errors.Join of several. It fails the test for an error
// that is not a FieldError.
func fieldPaths(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var paths []string
	for _, e := range errs {
		var fe *shipper.FieldError
		if !errors.As(e, &fe) {
			t.Errorf("error %q is not a *shipper.FieldError", e)
			continue
		}
		if !strings.HasPrefix(e.Error(), fe.Path+": ") {
			t.Errorf("error %q does not start with its key %q", e, fe.Path)
		}
		paths = append(paths, fe.Path)
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

func TestConfigValidate(t *testing.T) {
	valid := func() kafka.Config {
		c := kafka.DefaultConfig()
		c.Topics = []string{"logs"}
		return c
	}
	tests := []struct {
		name   string
		modify func(*kafka.Config)
		want   []string // the settings reported, sorted
	}{
		{"defaults with topics", func(*kafka.Config) {}, nil},
		{"several brokers in one entry", func(c *kafka.Config) { c.Brokers = []string{"a:9092, b:9092", "c:9092"} }, nil},
		{"latest", func(c *kafka.Config) { c.StartOffset = "latest" }, nil},
		{"no brokers", func(c *kafka.Config) { c.Brokers = nil }, []string{"brokers"}},
		{"only empty brokers", func(c *kafka.Config) { c.Brokers = []string{"", " , "} }, []string{"brokers"}},
		{"broker without port", func(c *kafka.Config) { c.Brokers = []string{"a:9092,kafka"} }, []string{"brokers"}},
		{"no topics", func(c *kafka.Config) { c.Topics = nil }, []string{"topics"}},
		{"no group", func(c *kafka.Config) { c.GroupID = "" }, []string{"group_id"}},
		{"unknown start offset", func(c *kafka.Config) { c.StartOffset = "newest" }, []string{"start_offset"}},
		{"zero commit interval", func(c *kafka.Config) { c.CommitInterval = 0 }, []string{"commit_interval"}},
		// Only the bad value is reported, not its comparison with heartbeat_interval.
		{"negative session timeout", func(c *kafka.Config) { c.SessionTimeout = -time.Second },
			[]string{"session_timeout"}},
		{"zero heartbeat interval", func(c *kafka.Config) { c.HeartbeatInterval = 0 }, []string{"heartbeat_interval"}},
		{"heartbeat not below session timeout", func(c *kafka.Config) { c.HeartbeatInterval = c.SessionTimeout },
			[]string{"heartbeat_interval"}},
		{"zero rebalance timeout", func(c *kafka.Config) { c.RebalanceTimeout = 0 }, []string{"rebalance_timeout"}},
		{"zero fetch max wait", func(c *kafka.Config) { c.FetchMaxWait = 0 }, []string{"fetch_max_wait"}},
		{"zero dial timeout", func(c *kafka.Config) { c.DialTimeout = 0 }, []string{"dial_timeout"}},
		{"fetch max bytes below 1KiB", func(c *kafka.Config) { c.FetchMaxBytes = 1023 }, []string{"fetch_max_bytes"}},
		{"fetch max bytes of 1KiB", func(c *kafka.Config) { c.FetchMaxBytes = 1024 }, nil},
		{"fetch max bytes over 1GiB", func(c *kafka.Config) { c.FetchMaxBytes = 1<<30 + 1 }, []string{"fetch_max_bytes"}},
		{"unknown isolation level", func(c *kafka.Config) { c.IsolationLevel = "committed" }, []string{"isolation_level"}},
		{"read_uncommitted", func(c *kafka.Config) { c.IsolationLevel = "read_uncommitted" }, nil},
		{"every problem at once", func(c *kafka.Config) { *c = kafka.Config{} }, []string{
			"brokers", "commit_interval", "dial_timeout", "fetch_max_bytes", "fetch_max_wait", "group_id",
			"heartbeat_interval", "isolation_level", "rebalance_timeout", "session_timeout", "start_offset", "topic_refresh_interval", "topics",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if got := fieldPaths(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("Validate() reports %q, want %q; error: %v", got, tt.want, err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := kafka.DefaultConfig()
	if err := c.Validate(); !slices.Equal(fieldPaths(t, err), []string{"topics"}) {
		t.Errorf("DefaultConfig().Validate() = %v, want only topics reported", err)
	}
	if got, want := c.BrokerList(), []string{"127.0.0.1:9092"}; !slices.Equal(got, want) {
		t.Errorf("default BrokerList() = %q, want %q", got, want)
	}
	if c.GroupID != "shipper" || c.StartOffset != "earliest" || c.CommitInterval != time.Second {
		t.Errorf("DefaultConfig() = %+v: want group shipper, start earliest, commit every 1s", c)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	c := kafka.DefaultConfig() // no topics
	in, err := kafka.New(c, nil, nil, nil)
	if in != nil || err == nil {
		t.Fatalf("New(invalid) = %v, %v; want an error", in, err)
	}
	var fe *shipper.FieldError
	if !errors.As(err, &fe) || fe.Path != "topics" {
		t.Errorf("New(invalid) error %q: want a *shipper.FieldError for topics", err)
	}
}

func TestConfigBrokerList(t *testing.T) {
	tests := []struct {
		brokers []string
		want    []string
	}{
		{nil, nil},
		{[]string{"a:1"}, []string{"a:1"}},
		{[]string{"a:1,b:2", "c:3"}, []string{"a:1", "b:2", "c:3"}},
		{[]string{" a:1 , b:2 ", ""}, []string{"a:1", "b:2"}},
		{[]string{",a:1,,b:2,"}, []string{"a:1", "b:2"}},
		{[]string{" , "}, nil},
	}
	for _, tt := range tests {
		c := kafka.Config{Brokers: tt.brokers}
		if got := c.BrokerList(); !slices.Equal(got, tt.want) {
			t.Errorf("BrokerList() of %q = %q, want %q", tt.brokers, got, tt.want)
		}
	}
}
