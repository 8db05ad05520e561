package raftstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
)

// ErrCorrupt is wrapped by the errors of Open for damage that a crash cannot explain: a bad
// record before the end of the log, a missing segment, a damaged snapshot file, or records
// that contradict each other. The message names the file and, for a record, its offset.
var ErrCorrupt = errors.New("raft store corrupt")

// corruptf reports damage at path:offset (offset < 0: the whole file).
func corruptf(path string, offset int64, format string, args ...any) error {
	where := path
	if offset >= 0 {
		where = fmt.Sprintf("%s:%d", path, offset)
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, where, fmt.Sprintf(format, args...))
}

const segmentSuffix = ".wal"

func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segmentSuffix) }

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// tornBlock is the unit a crash loses: a file-system block that never reached the disk reads
// back as zeros.
const tornBlock = 4096

// scanSegment calls fn for each record in data, the contents of the segment at path, in
// order. It returns the offset just past the last good record. In the last segment (last
// true) damage that a crash during an unsynced write explains ends the scan: the bytes from
// end on are a torn tail, to be truncated. Any other damage is an ErrCorrupt error naming
// path and offset, as is an error returned by fn.
func scanSegment(path string, data []byte, last bool, fn func(off int64, d decoded) error) (end int64, err error) {
	off := 0
	for off < len(data) {
		t, payload, n, rerr := readRecord(data[off:])
		if rerr != nil {
			if last && tornTail(data, off) {
				return int64(off), nil
			}
			if !last && errors.Is(rerr, errShort) {
				return int64(off), corruptf(path, int64(off), "%v in a segment that is not the last (%d bytes left)", rerr, len(data)-off)
			}
			return int64(off), corruptf(path, int64(off), "%v", rerr)
		}
		d, derr := decodePayload(t, payload)
		if derr == nil {
			derr = fn(int64(off), d)
		}
		if derr != nil {
			return int64(off), corruptf(path, int64(off), "%v", derr)
		}
		off += n
	}
	return int64(off), nil
}

// tornTail tells whether the damaged record at off in the last segment is the torn end of an
// interrupted write rather than corruption: no intact record follows it, or the bytes
// between it and the next intact record hold a whole zeroed block (a block of the unsynced
// write that never reached the disk, while a later one did).
func tornTail(data []byte, off int) bool {
	next := -1
	for p := off + 1; p+recordHeaderSize <= len(data); p++ {
		if _, _, _, err := readRecord(data[p:]); err == nil {
			next = p
			break
		}
	}
	if next < 0 {
		return true
	}
	for b := (off + tornBlock - 1) / tornBlock * tornBlock; b+tornBlock <= next; b += tornBlock {
		if allZero(data[b : b+tornBlock]) {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// replay rebuilds the log from records, in the order they were written.
type replay struct {
	hs   *raftpb.HardState
	snap *raftpb.SnapshotMetadata // the latest snapshot marker, nil if none

	// The log: entries base+1 ... base+len(ents); base's term is baseTerm.
	base, baseTerm uint64
	ents           []*raftpb.Entry

	// startLast is the last index named by the header of the first segment replayed. When
	// older segments were deleted the log is replayed from there, which is only right when
	// a compaction or a snapshot from the leader recorded later covers it (covered: the
	// highest such index).
	startLast uint64
	covered   uint64
	started   bool
}

func (r *replay) lastIndex() uint64 { return r.base + uint64(len(r.ents)) }

func (r *replay) term(i uint64) uint64 {
	if i == r.base {
		return r.baseTerm
	}
	return r.ents[i-r.base-1].GetTerm()
}

// apply replays one record.
func (r *replay) apply(d decoded) error {
	switch d.t {
	case recHeader:
		if !r.started {
			// Entries up to here are in deleted segments (or there are none, in the first
			// segment ever): the log goes on from the last entry the header names.
			r.base, r.baseTerm = d.header.lastIndex, d.header.lastTerm
			r.startLast = d.header.lastIndex
			r.started = true
		}
	case recEntry:
		i := d.entry.GetIndex()
		if i <= r.base {
			return nil
		}
		if last := r.lastIndex(); i > last+1 {
			return fmt.Errorf("entry %d does not follow the log's last index %d", i, last)
		}
		r.ents = append(r.ents[:i-r.base-1], d.entry)
	case recHardState:
		r.hs = d.hs
	case recSnapApplied:
		r.snap = d.snap
		r.base, r.baseTerm = d.snap.GetIndex(), d.snap.GetTerm()
		r.ents = nil
		r.covered = max(r.covered, r.base)
	case recSnapCreated:
		r.snap = d.snap
	case recCompact:
		i := d.it.index
		r.covered = max(r.covered, i)
		if i < r.base {
			return nil
		}
		if last := r.lastIndex(); i > last {
			return fmt.Errorf("compaction to %d beyond the log's last index %d", i, last)
		}
		if i > r.base {
			if t := r.term(i); t != d.it.term {
				return fmt.Errorf("compaction to %d at term %d, but the entry has term %d", i, d.it.term, t)
			}
			r.ents = r.ents[i-r.base:]
		}
		r.base, r.baseTerm = i, d.it.term
	}
	return nil
}
