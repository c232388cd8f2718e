package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
	"github.com/shipper-agent/shipper/inputs/kafka"
	"github.com/shipper-agent/shipper/internal/hcldecode"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// Config is the agent's whole configuration: its own settings and one block
// per stage, each owned and validated by its package.
type Config struct {
	// DataDir holds the agent's state. Default "/var/lib/shipper".
	DataDir string `hcl:"data_dir"`
	// ShutdownTimeout bounds a graceful shutdown: stop consuming, deliver
	// what is buffered, commit, close. What is not delivered by then stays
	// on disk for the next start. Default 30s.
	ShutdownTimeout time.Duration `hcl:"shutdown_timeout"`

	Log           LogConfig            `hcl:"log,block"`
	API           APIConfig            `hcl:"api,block"`
	Kafka         kafka.Config         `hcl:"kafka,block"`
	Buffer        buffer.Config        `hcl:"buffer,block"`
	Elasticsearch elasticsearch.Config `hcl:"elasticsearch,block"`
	// DeadLetter configures the dead-letter store (in the buffer's
	// directory): records Elasticsearch can never accept as they are.
	DeadLetter buffer.DeadLetterConfig `hcl:"dead_letter,block"`
}

// LogConfig configures the agent's own logs (on stderr).
type LogConfig struct {
	// Level: "debug", "info", "warn" or "error". Default "info".
	Level string `hcl:"level"`
	// Format: "json" or "text". Default "json".
	Format string `hcl:"format"`
}

// APIConfig configures the HTTP API.
type APIConfig struct {
	// Address to listen on, host:port. Default "127.0.0.1:8686": loopback
	// only, since the API can trigger flushes, replays and purges.
	Address string `hcl:"address"`
	// Token, when set, is the bearer token the mutating endpoints (flush,
	// dead-letter replay and purge) require: "Authorization: Bearer
	// <token>". Required when Address is not a loopback address. Health,
	// status and metrics stay open (probes and scrapers). Default "".
	Token shipper.Secret `hcl:"token,optional"`
	// Pprof serves Go's profiles at /debug/pprof/ (behind Token when set).
	// Default false.
	Pprof bool `hcl:"pprof,optional"`
}

// DefaultConfig returns the defaults documented on Config and on each
// package's Config.
func DefaultConfig() Config {
	return Config{
		DataDir:         "/var/lib/shipper",
		ShutdownTimeout: 30 * time.Second,
		Log:             LogConfig{Level: "info", Format: "json"},
		API:             APIConfig{Address: "127.0.0.1:8686"},
		Kafka:           kafka.DefaultConfig(),
		Buffer:          buffer.DefaultConfig(),
		Elasticsearch:   elasticsearch.DefaultConfig(),
		DeadLetter:      buffer.DefaultDeadLetterConfig(),
	}
}

// resolve fills settings derived from others.
func (c *Config) resolve() {
	if c.Buffer.Dir == "" && c.DataDir != "" {
		c.Buffer.Dir = filepath.Join(c.DataDir, "buffer")
	}
	c.Buffer.DeadLetter = c.DeadLetter
}

// Validate reports every invalid setting, each with its path in the file.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, &shipper.FieldError{Path: "data_dir", Err: errors.New("must be set")})
	}
	if c.ShutdownTimeout < time.Second {
		errs = append(errs, &shipper.FieldError{Path: "shutdown_timeout", Err: fmt.Errorf("must be at least 1s, got %s", c.ShutdownTimeout)})
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		errs = append(errs, &shipper.FieldError{Path: "log.level", Err: err})
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		errs = append(errs, &shipper.FieldError{Path: "log.format", Err: fmt.Errorf("must be \"json\" or \"text\", got %q", c.Log.Format)})
	}
	if host, _, err := net.SplitHostPort(c.API.Address); err != nil {
		errs = append(errs, &shipper.FieldError{Path: "api.address", Err: fmt.Errorf("want host:port: %v", err)})
	} else if !loopback(host) && c.API.Token == "" {
		errs = append(errs, &shipper.FieldError{Path: "api.token", Err: fmt.Errorf(
			"must be set when api.address (%s) is not a loopback address: anyone who reaches it could flush, replay or purge dead letters", c.API.Address)})
	}
	errs = append(errs,
		hcldecode.Nest("kafka", c.Kafka.Validate()),
		hcldecode.Nest("buffer", c.Buffer.Validate()),
		hcldecode.Nest("elasticsearch", c.Elasticsearch.Validate()),
		hcldecode.Nest("dead_letter", c.DeadLetter.Validate(c.Buffer.DiskLimit)))
	return errors.Join(errs...)
}

// loopback says whether a listen host only accepts local connections: a
// loopback IP or "localhost". An empty host or 0.0.0.0 listens everywhere.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ConfigError is a configuration that cannot be used. Its message lists
// every problem with file:line:col and a snippet of the file.
type ConfigError struct{ Text string }

func (e *ConfigError) Error() string { return e.Text }

// LoadConfig reads, decodes and validates a configuration file.
func LoadConfig(path string) (Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, src)
}

// ParseConfig decodes and validates a configuration; filename is used in
// error messages.
func ParseConfig(filename string, src []byte) (Config, error) {
	cfg := DefaultConfig()
	body, files, diags := hcldecode.ParseFile(filename, src)
	if !diags.HasErrors() {
		pos, d := hcldecode.Decode(body, hcldecode.EvalContext(), &cfg)
		diags = append(diags, d...)
		if !diags.HasErrors() {
			cfg.resolve()
			diags = append(diags, pos.Diagnostics(cfg.Validate())...)
		}
	}
	if diags.HasErrors() {
		return Config{}, &ConfigError{Text: hcldecode.FormatDiagnostics(files, diags)}
	}
	return cfg, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("want debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// MemoryOverhead is the memory the agent uses beyond buffer.memory_limit:
// 32 MiB for the Go runtime and libraries, twice kafka.fetch_max_bytes for
// fetched data (a response and the records copied out of it), badger's
// memtables (which grow with memory_limit), two chunks' worth per delivery
// worker (its bulk request body and the copies made building it), and one
// page of a dead-letter replay (4 MiB of values, with its bulk bodies).
// docs/benchmarks.md measures it under a 2 GiB backlog.
func (c Config) MemoryOverhead() int64 {
	return 32<<20 + 2*int64(c.Kafka.FetchMaxBytes) + c.Buffer.StoreMemory() + int64(c.Elasticsearch.MaxInFlight)*2*int64(c.Buffer.ChunkSize) + 2*replayPageBytes
}

// SoftMemoryLimit is the Go runtime's soft memory limit for this
// configuration: the buffer's ceiling plus the overhead. Near it the
// garbage collector works harder instead of letting the heap grow.
func (c Config) SoftMemoryLimit() int64 {
	return int64(c.Buffer.MemoryLimit) + c.MemoryOverhead()
}
