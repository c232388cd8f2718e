// Package buffer is shipper's disk-backed chunk buffer: it lets Kafka
// consumption run ahead of a slow or absent Elasticsearch without memory
// growing, and makes a kill -9 lose nothing.
//
// # Chunk lifecycle
//
//	          Append                 size or age          write ok
//	records ─────────▶ open (memory) ───────────▶ sealed ─────────▶ stored (disk)
//	                                           (memory, being written)     │  ▲
//	                                                              Next     │  │ Release
//	                                                                       ▼  │ (shutdown)
//	                                         Ack: deleted ◀──────────── in flight (memory)
//	                              (dead letters stored in the same txn)    │
//	                                                                       │ checksum fails
//	                                                                       ▼
//	                                                                  quarantined
//
// Appends wait (back-pressure) while memory_limit would be exceeded by a new
// open chunk, while the stored chunks, or the directory, reach disk_limit,
// while the filesystem has less than min_free_space, and while chunk writes
// fail. A chunk in flight when the process dies is stored still, and is
// delivered again after the restart (its documents are then found already
// indexed).
//
// # Badger key layout
//
//	c/<seq uint64 BE>  chunk data: header (magic, CRC32C, flags) + records, optionally zstd
//	m/<seq uint64 BE>  chunk metadata (JSON): records, bytes, created, offset ranges
//	q/<seq uint64 BE>  metadata of a quarantined chunk (its c/ data is kept for inspection)
//	d/<n uint64 BE>    a dead letter (JSON): the record and why it cannot be indexed
//	g/                 GC sentinel, written and dropped to force a compaction
//
// Big-endian sequence numbers make byte order FIFO order. Data and metadata
// are written, and deleted, in one transaction. Opening the buffer reads only
// m/ and q/ keys, so start-up does not depend on how much is buffered.
//
// # Watermarks
//
// Watermarks tells the Kafka input how far it may commit: per partition, the
// first offset of the oldest undelivered chunk holding it (open, being
// written, stored, in flight, or quarantined in this run), else the last
// appended offset + 1.
//
// # Disk space
//
// Deleted chunks give disk space back only after badger's value-log GC
// rewrites or removes their files, and GC only acts on discard statistics
// that compaction produces. A maintenance loop measures the directory and the
// filesystem every second and, when enough was deleted or space is short,
// forces a flush and compaction (by dropping the g/ sentinel) and runs GC.
package buffer
