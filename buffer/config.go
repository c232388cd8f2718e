package buffer

import (
	"errors"
	"fmt"
	"time"

	"github.com/shipper-agent/shipper"
)

// Config configures the chunk buffer. Zero values are not defaults: start
// from DefaultConfig.
type Config struct {
	// Dir holds the buffer's files. Default: "<data_dir>/buffer", set by the agent.
	Dir string `hcl:"dir,optional"`
	// ChunkSize seals the open chunk when it reaches this many bytes. Default 4MiB.
	ChunkSize shipper.ByteSize `hcl:"chunk_size,optional"`
	// FlushInterval seals the open chunk at this age even if it is not full. Default 1s.
	FlushInterval time.Duration `hcl:"flush_interval,optional"`
	// MemoryLimit bounds chunk bytes held in memory: the open chunk, a chunk
	// being written and chunks loaded for delivery. Appends block at the
	// limit. Default 64MiB.
	MemoryLimit shipper.ByteSize `hcl:"memory_limit,optional"`
	// DiskLimit bounds the bytes of chunks stored on disk. Appends block at
	// the limit until deliveries free space. Default 10GiB.
	DiskLimit shipper.ByteSize `hcl:"disk_limit,optional"`
	// SyncWrites fsyncs every chunk write. Without it a chunk survives a
	// process crash but not a power loss; Kafka offsets are committed only
	// after delivery, so such a loss is re-read from Kafka. Default true.
	SyncWrites bool `hcl:"sync_writes,optional"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		ChunkSize:     4 << 20,
		FlushInterval: time.Second,
		MemoryLimit:   64 << 20,
		DiskLimit:     10 << 30,
		SyncWrites:    true,
	}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &shipper.FieldError{Path: key, Err: fmt.Errorf(format, args...)})
	}
	if c.Dir == "" {
		bad("dir", "must be set")
	}
	if c.ChunkSize < 64<<10 {
		bad("chunk_size", "must be at least 64KiB, got %s", c.ChunkSize)
	}
	if c.FlushInterval < 10*time.Millisecond {
		bad("flush_interval", "must be at least 10ms, got %s", c.FlushInterval)
	}
	// The open chunk, a chunk being written and at least two loaded for
	// delivery must fit, or appends and deliveries would take turns.
	if c.MemoryLimit < 4*c.ChunkSize {
		bad("memory_limit", "must be at least 4 × chunk_size (%s), got %s", 4*c.ChunkSize, c.MemoryLimit)
	}
	if c.DiskLimit < 4*c.ChunkSize {
		bad("disk_limit", "must be at least 4 × chunk_size (%s), got %s", 4*c.ChunkSize, c.DiskLimit)
	}
	return errors.Join(errs...)
}
