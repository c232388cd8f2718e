package buffer

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ChunkInfo describes one chunk found by Inspect.
type ChunkInfo struct {
	Meta
	// State is "stored" (awaiting delivery) or "quarantined" (corrupt, set aside).
	State string `json:"state"`
}

// Inventory is what a buffer directory holds.
type Inventory struct {
	Dir         string      `json:"dir"`
	Chunks      []ChunkInfo `json:"chunks"`
	Records     int64       `json:"records"`
	Bytes       int64       `json:"bytes"`
	RawBytes    int64       `json:"raw_bytes"`
	Quarantined int         `json:"quarantined"`
	DeadLetters int64       `json:"dead_letters"`
	DiskUsage   int64       `json:"disk_usage"`
}

// Inspect lists the chunks of a buffer directory without changing them. It
// reads only metadata. It fails if an agent has the buffer open. Like Open,
// it removes the empty value-log files a kill -9 can leave (they hold
// nothing, and badger refuses a directory that has one).
func Inspect(dir string) (*Inventory, error) {
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return nil, fmt.Errorf("no buffer in %s: %w", dir, err)
	}
	// The one repair Open makes too, so that the directory a kill -9 left
	// can be read; never in a directory an agent holds.
	if err := removeEmptyValueLogs(dir, slog.New(slog.DiscardHandler)); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	cfg := DefaultConfig()
	cfg.Dir = dir
	opts := badgerOptions(cfg, slog.New(slog.DiscardHandler)).WithReadOnly(true)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open buffer %s (is an agent running on it?): %w", dir, err)
	}
	defer db.Close()
	inv := &Inventory{Dir: dir, DiskUsage: dirUsage(dir)}
	err = db.View(func(txn *badger.Txn) error {
		for _, p := range []struct {
			prefix []byte
			state  string
		}{{prefixMeta, "stored"}, {prefixQuar, "quarantined"}} {
			err := forEachMeta(txn, p.prefix, func(key []byte, m Meta, err error) error {
				if err != nil {
					return fmt.Errorf("chunk metadata %x: %w", key, err)
				}
				inv.Chunks = append(inv.Chunks, ChunkInfo{Meta: m, State: p.state})
				inv.Records += int64(m.Records)
				inv.Bytes += m.Bytes
				inv.RawBytes += m.RawBytes
				if p.state == "quarantined" {
					inv.Quarantined++
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		inv.DeadLetters = countPrefix(txn, prefixDead)
		return nil
	})
	sort.Slice(inv.Chunks, func(i, j int) bool { return inv.Chunks[i].Seq < inv.Chunks[j].Seq })
	return inv, err
}

// Age is how long ago the chunk was opened.
func (c ChunkInfo) Age(now time.Time) time.Duration { return now.Sub(c.Created) }
