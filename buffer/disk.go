package buffer

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/shipper-agent/shipper"
)

// Disk accounting and space reclamation.
//
// Three things bound the disk: the stored size of undelivered chunks
// (disk_limit), what the directory really occupies (also disk_limit: badger
// keeps deleted values until value-log GC rewrites their file), and the
// filesystem's free space (min_free_space, whatever else fills the disk).
// At any of them appends and seals wait; they resume when deliveries and GC
// give space back, or when someone else frees the filesystem.

// diskBlocked says why n more bytes cannot go to disk now, or "". The
// caller holds b.mu.
func (b *Buffer) diskBlocked(n int64) string {
	limit := int64(b.cfg.DiskLimit)
	switch {
	case b.diskUsed > 0 && b.diskUsed+n > limit:
		return "disk_limit reached"
	case b.diskUsage > 0 && b.diskUsage+n > limit && len(b.order) > 0:
		// Deleted chunks not reclaimed yet: GC will give the space back.
		b.kickGC()
		return "disk_limit reached (reclaiming deleted chunks)"
	case b.fsFree > 0 && b.fsFree-n < int64(b.cfg.MinFreeSpace):
		b.kickGC()
		return "filesystem full: " + shipper.ByteSize(b.fsFree).String() + " free, min_free_space is " + b.cfg.MinFreeSpace.String()
	}
	return ""
}

// waitBlocked records why appends wait and waits for a change, counting the
// time spent. The caller holds b.mu.
func (b *Buffer) waitBlocked(ctx context.Context, reason string) error {
	b.setBlocked(reason)
	return b.wait(ctx)
}

// setBlocked records why appends wait ("" once they do not), logging each
// new reason and accumulating the wall time spent blocked, however many
// goroutines wait. The caller holds b.mu.
func (b *Buffer) setBlocked(reason string) {
	if reason == b.blocked {
		return
	}
	now := time.Now()
	switch {
	case b.blocked == "":
		b.blockedSince = now
	case reason == "":
		b.blockedTotal += now.Sub(b.blockedSince)
	}
	if reason != "" {
		b.log.Warn("buffer full: appends wait (the Kafka input pauses)", "reason", reason)
	} else {
		b.log.Info("buffer appends resumed")
	}
	b.blocked = reason
}

// minFreeForAcks is the free space an Ack needs: its deletions go to
// badger's memtable logs, which are mapped files that grow page by page, and
// touching a page the filesystem cannot allocate is a SIGBUS. The buffer's
// own chunk writes stop earlier, at min_free_space; only something else
// filling the disk brings free space this low.
const minFreeForAcks = 4*maxMemTableSize + (16 << 20)

// waitAckRoom waits until the filesystem has room for an Ack, ctx ends or
// the buffer closes. The chunk stays in flight meanwhile: its documents are
// in Elasticsearch already, and it is sent again if the process stops
// before the Ack.
func (b *Buffer) waitAckRoom(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.fsFree > 0 && b.fsFree < minFreeForAcks {
		if b.closed {
			return ErrClosed
		}
		if b.ackBlocked == "" {
			b.ackBlocked = "filesystem full: " + shipper.ByteSize(b.fsFree).String() + " free; acknowledgements wait for " +
				shipper.ByteSize(minFreeForAcks).String()
			b.log.Warn("buffer: acknowledgements wait for disk space", "reason", b.ackBlocked)
		}
		if err := b.wait(ctx); err != nil {
			return err
		}
		b.refreshFree()
	}
	b.ackBlocked = ""
	return nil
}

func (b *Buffer) kickGC() {
	select {
	case b.gcKick <- struct{}{}:
	default:
	}
}

// refreshFree updates the filesystem's free space. The caller holds b.mu.
func (b *Buffer) refreshFree() {
	var st unix.Statfs_t
	if err := unix.Statfs(b.cfg.Dir, &st); err == nil {
		b.fsFree = int64(st.Bavail) * int64(st.Bsize)
	}
}

// refreshDisk measures the directory and the filesystem.
func (b *Buffer) refreshDisk() {
	usage := dirUsage(b.cfg.Dir)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.diskUsage = usage
	b.refreshFree()
}

// dirUsage is the space the files under dir occupy (allocated blocks, so
// badger's sparse, pre-sized files count only what they hold).
func dirUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// maintainLoop refreshes the disk figures every second, wakes appends that
// wait for space, and runs value-log GC when enough was deleted or space is
// short.
func (b *Buffer) maintainLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastGC time.Time
	for {
		select {
		case <-b.stop.Done():
			return
		case <-tick.C:
		case <-b.gcKick:
		}
		b.refreshDisk()
		b.mu.Lock()
		waiting := b.blocked != "" || b.ackBlocked != ""
		due := b.freed >= valueLogFileSize || (b.freed > 0 && waiting)
		if waiting {
			b.notify() // space may have come back
		}
		b.mu.Unlock()
		if due && time.Since(lastGC) >= 2*time.Second {
			b.runGC()
			lastGC = time.Now()
		}
	}
}

// gcSentinel is a key written and dropped to make badger flush its memtable
// and compact: value-log GC only knows which values are garbage from the
// discard statistics compaction produces, and a buffer with few, large
// values rarely compacts on its own.
var gcSentinel = []byte("g/")

// runGC gives the space of deleted chunks back to the filesystem.
func (b *Buffer) runGC() {
	before := dirUsage(b.cfg.Dir)
	b.mu.Lock()
	b.freed = 0
	b.mu.Unlock()
	start := time.Now()
	b.dbWrites.Lock()
	err := b.db.Update(func(txn *badger.Txn) error { return txn.Set(gcSentinel, []byte{1}) })
	if err == nil {
		err = b.db.DropPrefix(gcSentinel)
	}
	b.dbWrites.Unlock()
	if err != nil {
		b.log.Warn("buffer gc: compaction failed", "err", err)
		return
	}
	runs := int64(0)
	for b.stop.Err() == nil {
		// Exclusive of the buffer's writes too: badger v4.9.6's value-log
		// rewrite reads the memtable's max version without a lock while
		// a write sets it (a data race -race reported in
		// TestGCReclaimsDeletedChunks). Writes wait one rewrite at most.
		b.dbWrites.Lock()
		err := b.db.RunValueLogGC(0.5)
		b.dbWrites.Unlock()
		if err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				b.log.Warn("buffer gc", "err", err)
			}
			break
		}
		runs++
	}
	after := dirUsage(b.cfg.Dir)
	b.mu.Lock()
	b.gcRuns += runs
	if after < before {
		b.gcReclaimed += before - after
	}
	b.diskUsage = after
	b.refreshFree()
	b.notify()
	b.mu.Unlock()
	b.log.Debug("buffer gc", "files", runs, "reclaimed", shipper.ByteSize(max(before-after, 0)).String(), "took", time.Since(start))
}
