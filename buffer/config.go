package buffer

import (
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
	// Compression of stored chunks: "none" or "zstd". Default "none".
	Compression string `hcl:"compression,optional"`
	// MinFreeSpace is the free space the buffer leaves on its filesystem:
	// below it appends block, as at disk_limit, so that a disk filled by
	// anything else never makes a write fail half-way. At least 112MiB
	// (minFreeFloor: badger maps value-log files at twice their size).
	// Default 256MiB.
	MinFreeSpace shipper.ByteSize `hcl:"min_free_space,optional"`
	// DeadLetter configures the dead-letter store, which lives in Dir. The
	// agent sets it from its top-level dead_letter block. Default
	// DefaultDeadLetterConfig().
	DeadLetter DeadLetterConfig `hcl:"-"`
}

// minFreeFloor covers the files badger may extend without asking: a
// value-log file is mapped at twice valueLogFileSize, and each memtable
// has a write-ahead log. Writing into a mapped file on a full filesystem
// kills the process with SIGBUS, so this room must always exist: two
// value-log files, two memtable logs (each mapped at twice the memtable
// size) and slack for table files.
const minFreeFloor = 2*valueLogFileSize + 2*2*maxMemTableSize + (16 << 20)

// maxChunkSize bounds chunk_size.
const maxChunkSize = 256 << 20

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		ChunkSize:     4 << 20,
		FlushInterval: time.Second,
		MemoryLimit:   64 << 20,
		DiskLimit:     10 << 30,
		SyncWrites:    true,
		Compression:   "none",
		MinFreeSpace:  256 << 20,
		DeadLetter:    DefaultDeadLetterConfig(),
	}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var p shipper.Problems
	bad := p.Addf
	if c.Dir == "" {
		bad("dir", "must be set")
	}
	// Any chunk fits the store (large ones are stored in pieces), but a
	// chunk is loaded whole for delivery: larger ones only cost memory.
	if c.ChunkSize < 64<<10 || c.ChunkSize > maxChunkSize {
		bad("chunk_size", "must be between 64KiB and %s, got %s", shipper.ByteSize(maxChunkSize), c.ChunkSize)
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
	if c.Compression != "none" && c.Compression != "zstd" {
		bad("compression", "must be \"none\" or \"zstd\", got %q", c.Compression)
	}
	if c.MinFreeSpace < minFreeFloor {
		bad("min_free_space", "must be at least %s (room for badger's next value-log and memtable files), got %s",
			shipper.ByteSize(minFreeFloor), c.MinFreeSpace)
	}
	// DeadLetter is validated by its owner, the agent's dead_letter block,
	// and by Open.
	return p.Err()
}
