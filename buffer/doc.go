// Package buffer is shipper's disk-backed chunk buffer: it lets Kafka
// consumption run ahead of a slow or absent Elasticsearch without memory
// growing, and makes a kill -9 lose nothing.
//
// # Chunk lifecycle
//
//	          Append                 size or age          write ok
//	records ─────────▶ open (memory) ───────────▶ sealed ─────────▶ stored (disk)
//	                                       (one slot; the write loop       │  ▲
//	                                        writes it, retrying failures)  │  │ Release
//	                                                                 Next  ▼  │ (shutdown)
//	                                         Ack: deleted ◀──────────── in flight (memory)
//	                          (its dead letters stored first, idempotently) │
//	                                                                       │ checksum fails
//	                                                                       ▼
//	                                                                  quarantined
//
// Appends wait (back-pressure) while memory_limit would be exceeded by a new
// open chunk, while the stored chunks, or the directory, reach disk_limit,
// while the filesystem has less than min_free_space, and while the sealed
// slot is taken (its write under way or failing). Every wait ends with its
// context: no caller waits on a failing write for good. A chunk in flight when the process dies is stored still, and is
// delivered again after the restart (its documents are then found already
// indexed).
//
// # Badger key layout
//
//	c/<seq uint64 BE>  chunk data: header (magic, CRC32C, flags) + records, optionally zstd
//	m/<seq uint64 BE>  chunk metadata (JSON): records, bytes, pieces, created, offset ranges
//	q/<seq uint64 BE>  metadata of a quarantined chunk (its c/ data is kept for inspection)
//	d/<seq uint64 BE><index uint32 BE>
//	                   a dead letter: the record's chunk and position, its original
//	                   bytes, key, headers, type, reasons, attempts (deadletter.go)
//	d/<n uint64 BE>    a dead letter stored by an earlier version (JSON), still read
//	p/<key><i uint32 BE>
//	                   piece i (1, 2, …) of a value larger than 8 MiB stored under key
//	g/                 GC sentinel, written and dropped to force a compaction
//
// Big-endian sequence numbers make byte order FIFO order. Data and metadata
// are written, and deleted, in one transaction; dead letters in batches
// (badger's WriteBatch), before their chunk is deleted. Opening the buffer reads only
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
