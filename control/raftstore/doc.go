// Package raftstore is the durable storage under Vigil's raft log: a write-ahead log of
// checksummed records in segment files plus an atomically replaced snapshot file, read back
// through raft.Storage.
//
// go.etcd.io/raft/v3 keeps nothing on disk. Each Ready it hands out must be handled in this
// order, and a *Store is the first step:
//
//  1. Store.Save(rd.HardState, rd.Entries, rd.Snapshot). Save writes the snapshot (if any)
//     first, then the entries, then the HardState, and returns only when they are on disk:
//     one fsync of the log for the whole Ready (plus the snapshot file and the directory when
//     there is a snapshot; none when only the commit index moved, which raft.MustSync says
//     may be lost). Entries whose index is at or below the last index replace the
//     conflicting tail of the log, on disk as in memory.
//  2. Send rd.Messages. Never before Save has returned: a vote or an append acknowledged
//     before it is durable can be forgotten by a crash, and a committed entry lost with it.
//  3. Apply rd.Snapshot and rd.CommittedEntries to the state machine.
//  4. RawNode.Advance(rd).
//
// Log compaction is the application's: after applying up to index i it may call
// CreateSnapshot(i, confState, data), which writes the snapshot file durably, and then
// Compact(j) for some j <= i, which drops the entries up to j and the segment files that hold
// nothing newer. Compact never goes past the snapshot, so a reopened store always holds the
// snapshot plus every entry after it.
//
// Open replays the directory. A record cut short or damaged at the very end of the last
// segment (followed by no intact record, or only after a zeroed block, as a lost unsynced
// write leaves it) is what a crash during a write leaves behind: it is truncated away and
// logged.
// Damage anywhere else is an error wrapping ErrCorrupt that names the file and offset; it is
// never skipped.
//
// The on-disk layout:
//
//	LOCK                           flock(2) held while a Store is open
//	<seq:016x>.wal                 log segments, appended to; a new one every SegmentSize
//	<term:016x>-<index:016x>.snap  the current snapshot (.tmp, fsync, rename, fsync dir)
//
// A record is a 16-byte header (payload length uint32, type uint8, three zero bytes, CRC32C of
// the payload, CRC32C of the first 12 header bytes; little endian) followed by the payload.
// Every segment starts with a header record (its sequence number and the log's last index and
// term when it was started) followed by the current snapshot marker and HardState, so older
// segments can be deleted without losing either. The other records are one raftpb.Entry each,
// a raftpb.HardState, a snapshot marker (raftpb.SnapshotMetadata, either a snapshot received
// from the leader, which restarts the log after it, or one made by CreateSnapshot), and a
// compaction mark (index and term).
package raftstore
