package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// DefaultSegmentSize is the size at which the log moves on to a new segment file.
const DefaultSegmentSize = 64 << 20

var (
	// ErrClosed is returned by the writing methods of a closed Store.
	ErrClosed = errors.New("raft store closed")
	// ErrLocked is returned by Open when another Store (in this or another process) has the
	// directory open.
	ErrLocked = errors.New("raft store in use")
	// ErrBeyondSnapshot is returned by Compact for an index past the snapshot: the entries
	// dropped would exist nowhere on disk.
	ErrBeyondSnapshot = errors.New("compaction beyond the snapshot")
)

// Options tune a Store. The zero value is what production wants.
type Options struct {
	// NoSync skips every fsync (log, snapshot files, directory). For tests only: a machine
	// crash can then lose anything, including what Save said was written.
	NoSync bool
	// SegmentSize is the size at which the log moves on to a new segment file; zero means
	// DefaultSegmentSize. Compaction deletes whole segments only.
	SegmentSize int64
	// Logger receives what Open repairs or cleans up (a torn tail truncated, a stale
	// snapshot removed); nil discards it.
	Logger *slog.Logger

	// sync replaces fsync(2) in tests, which use it to learn what a crash would keep.
	sync func(*os.File) error
}

// segment is one log segment file.
type segment struct {
	seq      uint64
	maxIndex uint64 // the highest entry index written into it, 0 if none
}

// Store is a durable raft log in a directory: it implements raft.Storage, and Save persists
// what a raft.Ready asks for. Its methods are safe for concurrent use, but the raft
// contract (see the package documentation) wants Save, Compact and CreateSnapshot called in
// order from the goroutine that drives the RawNode.
type Store struct {
	dir         string
	log         *slog.Logger
	segmentSize int64
	sync        func(*os.File) error // nil with Options.NoSync
	ms          *raft.MemoryStorage  // every durable entry after the last compaction, for reads

	mu       sync.Mutex
	lock     *os.File
	hs       *raftpb.HardState        // the last HardState written; never nil
	snap     *raftpb.SnapshotMetadata // the current snapshot's metadata; never nil, index 0 if none
	segs     []segment                // oldest first; the last one is f
	f        *os.File                 // the segment being appended to
	size     int64                    // f's size
	unsynced bool                     // f holds records written since its last fsync
	buf      []byte
	err      error // a failed write or fsync: the Store is unusable, reopen it
	closed   bool
}

var _ raft.Storage = (*Store)(nil)

// Open opens the raft log in dir, creating dir (mode 0700) and an empty log if needed, and
// replays it: the latest snapshot, then every record after it. A torn record at the end of
// the last segment is truncated away (and logged); any other damage fails with an error
// wrapping ErrCorrupt. The Store holds an exclusive lock on dir until Close.
func Open(dir string, opts Options) (*Store, error) {
	s := &Store{
		dir:         dir,
		log:         opts.Logger,
		segmentSize: opts.SegmentSize,
		hs:          &raftpb.HardState{},
		snap:        raftpb.EnsureSnapshotMetadata(nil),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.segmentSize <= 0 {
		s.segmentSize = DefaultSegmentSize
	}
	switch {
	case opts.NoSync:
	case opts.sync != nil:
		s.sync = opts.sync
	default:
		s.sync = (*os.File).Sync
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open raft store: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open raft store %s: %w", dir, err)
	}
	s.lock = lock
	if err := s.load(); err != nil {
		errs := []error{fmt.Errorf("open raft store %s: %w", dir, err)}
		if s.f != nil {
			errs = append(errs, s.f.Close())
		}
		errs = append(errs, lock.Close())
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	return f, nil
}

// load replays the directory into s.
func (s *Store) load() error {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var seqs []uint64
	var snaps []string
	for _, de := range des {
		name := de.Name()
		if seq, ok := parseSegmentName(name); ok {
			seqs = append(seqs, seq)
		} else if _, _, ok := parseSnapName(name); ok {
			snaps = append(snaps, name)
		} else if strings.HasSuffix(name, snapSuffix+tmpSuffix) {
			// A snapshot write a crash interrupted; the log never pointed at it.
			s.log.Warn("raftstore: removing an unfinished snapshot", "file", filepath.Join(s.dir, name))
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return err
			}
		}
	}
	slices.Sort(seqs)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return corruptf(filepath.Join(s.dir, segmentName(seqs[i-1]+1)), -1, "log segment missing (have %s and %s)",
				segmentName(seqs[i-1]), segmentName(seqs[i]))
		}
	}

	r := &replay{}
	var tornPath string         // the last segment, when it ends in a torn record ...
	var tornAt, tornBytes int64 // ... at this offset, and how long that tail is
	for i, seq := range seqs {
		path := filepath.Join(s.dir, segmentName(seq))
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		last := i == len(seqs)-1
		seg := segment{seq: seq}
		n := 0
		end, err := scanSegment(path, data, last, func(_ int64, d decoded) error {
			switch {
			case n == 0 && d.t != recHeader:
				return fmt.Errorf("segment starts with a %s record, not a header", d.t)
			case n == 0 && d.header.seq != seq:
				return fmt.Errorf("segment header says it is segment %d", d.header.seq)
			case n > 0 && d.t == recHeader:
				return errors.New("segment header in the middle of a segment")
			}
			n++
			if d.t == recEntry {
				seg.maxIndex = max(seg.maxIndex, d.entry.GetIndex())
			}
			return r.apply(d)
		})
		if err != nil {
			return err
		}
		if n == 0 && !last {
			return corruptf(path, 0, "empty log segment")
		}
		if end < int64(len(data)) || n == 0 {
			tornPath, tornAt, tornBytes = path, end, int64(len(data))-end
		}
		if n > 0 {
			s.segs = append(s.segs, seg)
		}
	}
	if len(s.segs) > 0 {
		if err := s.finishReplay(r); err != nil {
			return err
		}
	} else if len(snaps) > 0 {
		return corruptf(s.dir, -1, "snapshot files but no log segments")
	}
	// The log is sound: now repair it.
	switch {
	case tornPath == "":
	case tornAt == 0:
		// The last segment was being started when the node crashed.
		s.log.Warn("raftstore: removing a log segment torn while it was started", "file", tornPath, "bytes", tornBytes)
		if err := os.Remove(tornPath); err != nil {
			return err
		}
	default:
		s.log.Warn("raftstore: truncating the torn tail of the log", "file", tornPath, "offset", tornAt, "bytes", tornBytes)
		if err := s.truncate(tornPath, tornAt); err != nil {
			return err
		}
	}
	if len(s.segs) == 0 {
		s.ms = raft.NewMemoryStorage()
		return s.startSegment(1)
	}
	for _, name := range snaps {
		if name != snapName(s.snap.GetTerm(), s.snap.GetIndex()) {
			s.log.Info("raftstore: removing a superseded snapshot", "file", filepath.Join(s.dir, name))
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return err
			}
		}
	}
	cur := s.segs[len(s.segs)-1]
	f, err := os.OpenFile(filepath.Join(s.dir, segmentName(cur.seq)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	s.f = f
	st, err := f.Stat()
	if err != nil {
		return err
	}
	s.size = st.Size()
	if s.sync != nil {
		// What was replayed may be in the page cache only (written by a process that died
		// before syncing it). Raft acts on it from now on, so it must be on disk.
		if err := s.sync(f); err != nil {
			return fmt.Errorf("sync log segment: %w", err)
		}
	}
	return nil
}

func (s *Store) truncate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil && s.sync != nil {
		// Durably: records appended later must not follow the old torn bytes after a crash.
		err = s.sync(f)
	}
	return errors.Join(err, f.Close())
}

// finishReplay checks the replayed log against the snapshot and loads both into s.
func (s *Store) finishReplay(r *replay) error {
	first := filepath.Join(s.dir, segmentName(s.segs[0].seq))
	if r.startLast > r.covered {
		return corruptf(first, -1, "the log starts after index %d but is compacted only to %d: older segments are missing", r.startLast, r.covered)
	}
	meta := raftpb.EnsureSnapshotMetadata(r.snap)
	si, last := meta.GetIndex(), r.lastIndex()
	switch {
	case si < r.base:
		return corruptf(s.dir, -1, "the snapshot at index %d is older than the log's start %d", si, r.base)
	case si > last:
		return corruptf(s.dir, -1, "the snapshot at index %d is past the log's last index %d", si, last)
	case r.term(si) != meta.GetTerm():
		return corruptf(s.dir, -1, "the snapshot at index %d has term %d, the log has term %d there", si, meta.GetTerm(), r.term(si))
	}
	ms := raft.NewMemoryStorage()
	var snap *raftpb.Snapshot
	if si > 0 {
		var err error
		snap, err = readSnapshot(filepath.Join(s.dir, snapName(meta.GetTerm(), si)), meta)
		if err != nil {
			return err
		}
	}
	if r.base > 0 {
		start := snap
		if si > r.base {
			// Compacted short of the snapshot: the log starts at base, the snapshot is later.
			start = &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: new(r.base), Term: new(r.baseTerm)}}
		}
		if err := ms.ApplySnapshot(start); err != nil {
			return err
		}
	}
	if err := ms.Append(r.ents); err != nil {
		return err
	}
	if si > r.base {
		if _, err := ms.CreateSnapshot(si, snap.GetMetadata().GetConfState(), snap.GetData()); err != nil {
			return err
		}
	}
	if r.hs != nil {
		hs := proto.Clone(r.hs).(*raftpb.HardState)
		// A snapshot is committed by definition; the HardState saying so may have been the
		// unsynced tail a crash took.
		if c := hs.GetCommit(); c < si {
			hs.Commit = new(si)
		} else if c > last {
			return corruptf(s.dir, -1, "the HardState commits index %d, past the log's last index %d", c, last)
		}
		s.hs = hs
	}
	s.ms = ms
	s.snap = meta
	return nil
}

// startSegment creates segment seq, starts it with a header, the current snapshot marker and
// the HardState, makes it durable and appends to it from now on.
func (s *Store) startSegment(seq uint64) error {
	path := filepath.Join(s.dir, segmentName(seq))
	last, err := s.ms.LastIndex()
	if err != nil {
		return err
	}
	term, err := s.ms.Term(last)
	if err != nil {
		return err
	}
	b := appendRecord(nil, recHeader, segmentHeader{seq: seq, lastIndex: last, lastTerm: term}.marshal())
	if s.snap.GetIndex() > 0 {
		b = appendProto(b, recSnapCreated, s.snap)
	}
	if !raft.IsEmptyHardState(s.hs) {
		b = appendProto(b, recHardState, s.hs)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start log segment: %w", err)
	}
	_, err = f.Write(b)
	if err == nil && s.sync != nil {
		err = s.sync(f)
		if err == nil {
			err = syncDir(s.dir, s.sync)
		}
	}
	if err != nil {
		return errors.Join(fmt.Errorf("start log segment %s: %w", path, err), f.Close())
	}
	s.f, s.size, s.unsynced = f, int64(len(b)), false
	s.segs = append(s.segs, segment{seq: seq})
	return nil
}

// rotate moves on to a new segment when the current one is full.
func (s *Store) rotate() error {
	if s.size < s.segmentSize {
		return nil
	}
	if s.unsynced && s.sync != nil {
		// A segment that is not the last must be whole on disk.
		if err := s.sync(s.f); err != nil {
			return fmt.Errorf("sync log segment: %w", err)
		}
	}
	s.unsynced = false
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close log segment: %w", err)
	}
	s.f = nil
	return s.startSegment(s.segs[len(s.segs)-1].seq + 1)
}

// usable returns why s cannot be written to, if it cannot.
func (s *Store) usable() error {
	if s.closed {
		return ErrClosed
	}
	return s.err
}

// fail records err as the reason s can no longer be written to and returns it. After a
// failed write or fsync what the page cache and the disk hold is unknown: only reopening
// (replaying what is really on disk) is safe.
func (s *Store) fail(err error) error {
	s.err = fmt.Errorf("raft store %s unusable after a failed write, reopen it: %w", s.dir, err)
	return err
}

// write appends b (whole records) to the current segment, then fsyncs it if mustSync.
func (s *Store) write(b []byte, mustSync bool) error {
	n, err := s.f.Write(b)
	s.size += int64(n)
	if n > 0 {
		s.unsynced = true
	}
	if err != nil {
		return s.fail(fmt.Errorf("write raft log: %w", err))
	}
	if mustSync {
		if s.sync != nil {
			if err := s.sync(s.f); err != nil {
				return s.fail(fmt.Errorf("sync raft log: %w", err))
			}
		}
		s.unsynced = false
	}
	return nil
}

func sameHardState(a, b *raftpb.HardState) bool {
	return a.GetTerm() == b.GetTerm() && a.GetVote() == b.GetVote() && a.GetCommit() == b.GetCommit()
}

// Save persists what a raft.Ready asks for: pass rd.HardState, rd.Entries and rd.Snapshot
// (any may be nil or empty). It writes the snapshot file first (when there is one), then
// the log records for the snapshot, the entries and the HardState, and fsyncs the log once.
// Entries at or below the last index replace the log from there on. When the only change is
// the HardState's commit index (raft.MustSync is false) the records are written but not
// synced: losing them is harmless, and the next synced write covers them. Save returns when
// the data is durable; only then may the Ready's messages be sent.
//
// Entries at or below the last compaction are skipped. Entries that do not follow on from
// the log (a gap) and a snapshot older than the current one are errors, and nothing is
// written. A write or fsync error makes the Store unusable: close and reopen it.
func (s *Store) Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	first, _ := s.ms.FirstIndex()
	last, _ := s.ms.LastIndex()
	base := first - 1
	hasSnap := !raft.IsEmptySnap(snap)
	if hasSnap {
		si := snap.GetMetadata().GetIndex()
		if si <= s.snap.GetIndex() {
			return fmt.Errorf("save snapshot at index %d (have %d): %w", si, s.snap.GetIndex(), raft.ErrSnapOutOfDate)
		}
		base, last = si, si
	}
	for i := 1; i < len(ents); i++ {
		if ents[i].GetIndex() != ents[i-1].GetIndex()+1 {
			return fmt.Errorf("save entries: index %d follows %d", ents[i].GetIndex(), ents[i-1].GetIndex())
		}
	}
	if len(ents) > 0 && ents[0].GetIndex() <= base {
		ents = ents[min(base-ents[0].GetIndex()+1, uint64(len(ents))):]
	}
	if len(ents) > 0 && ents[0].GetIndex() > last+1 {
		return fmt.Errorf("save entries: entry %d leaves a gap after the last index %d", ents[0].GetIndex(), last)
	}
	newHS := hs != nil && !raft.IsEmptyHardState(hs) && !sameHardState(hs, s.hs)
	if !hasSnap && len(ents) == 0 && !newHS {
		return nil
	}
	mustSync := hasSnap || len(ents) > 0 || raft.MustSync(hs, s.hs, 0) // newHS: hs != nil

	if err := s.rotate(); err != nil {
		return s.fail(err)
	}
	var oldSnap string
	b := s.buf[:0]
	if hasSnap {
		if _, err := writeSnapshot(s.dir, snap, s.sync); err != nil {
			return s.fail(err)
		}
		oldSnap = s.snapPath()
		b = appendProto(b, recSnapApplied, snap.GetMetadata())
	}
	for _, e := range ents {
		b = appendProto(b, recEntry, e)
	}
	if newHS {
		b = appendProto(b, recHardState, hs)
	}
	s.buf = b[:0]
	if err := s.write(b, mustSync); err != nil {
		return err
	}

	cur := &s.segs[len(s.segs)-1]
	if hasSnap {
		if err := s.ms.ApplySnapshot(snap); err != nil {
			return s.fail(err) // cannot happen: checked above
		}
		s.snap = proto.Clone(snap.GetMetadata()).(*raftpb.SnapshotMetadata)
	}
	if len(ents) > 0 {
		if err := s.ms.Append(ents); err != nil {
			return s.fail(err)
		}
		cur.maxIndex = max(cur.maxIndex, ents[len(ents)-1].GetIndex())
	}
	if newHS {
		s.hs = proto.Clone(hs).(*raftpb.HardState)
	}
	if hasSnap {
		return errors.Join(s.removeSnapshot(oldSnap), s.gc())
	}
	return nil
}

// snapPath is the current snapshot's file, "" if there is none.
func (s *Store) snapPath() string {
	if s.snap.GetIndex() == 0 {
		return ""
	}
	return filepath.Join(s.dir, snapName(s.snap.GetTerm(), s.snap.GetIndex()))
}

// removeSnapshot deletes a superseded snapshot file.
func (s *Store) removeSnapshot(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove superseded snapshot: %w", err)
	}
	return nil
}

// gc deletes the oldest segments while they hold no entry past the log's durable start.
// Their other records are repeated at the start of the segments that follow.
func (s *Store) gc() error {
	first, _ := s.ms.FirstIndex()
	removed := 0
	for len(s.segs) > 1 && s.segs[0].maxIndex < first {
		path := filepath.Join(s.dir, segmentName(s.segs[0].seq))
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			// Stop here: only the oldest segments may go, in order.
			return fmt.Errorf("remove compacted log segment: %w", err)
		}
		s.segs = s.segs[1:]
		removed++
	}
	if removed > 0 && s.sync != nil {
		// Not needed for safety (replaying a deleted segment again is harmless) but keeps
		// a crash from bringing back gigabytes of them.
		if err := syncDir(s.dir, s.sync); err != nil {
			return fmt.Errorf("sync raft directory: %w", err)
		}
	}
	return nil
}

// CreateSnapshot records a snapshot of the state machine at index i (applied, so at or
// below the commit index): cs is the configuration as of i, data the state. The snapshot
// file is written and synced, then a marker in the log; on return it is durable and
// Snapshot returns it. Entries are kept until Compact.
func (s *Store) CreateSnapshot(i uint64, cs *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	if i <= s.snap.GetIndex() {
		return nil, fmt.Errorf("create snapshot at index %d (have %d): %w", i, s.snap.GetIndex(), raft.ErrSnapOutOfDate)
	}
	last, _ := s.ms.LastIndex()
	if i > last {
		return nil, fmt.Errorf("create snapshot at index %d: past the last index %d: %w", i, last, raft.ErrUnavailable)
	}
	term, err := s.ms.Term(i)
	if err != nil {
		return nil, fmt.Errorf("create snapshot at index %d: %w", i, err)
	}
	snap := &raftpb.Snapshot{
		Metadata: &raftpb.SnapshotMetadata{
			ConfState: cloneConfState(cs),
			Index:     new(i),
			Term:      new(term),
		},
		Data: data,
	}
	if err := s.rotate(); err != nil {
		return nil, s.fail(err)
	}
	if _, err := writeSnapshot(s.dir, snap, s.sync); err != nil {
		return nil, s.fail(err)
	}
	if err := s.write(appendProto(nil, recSnapCreated, snap.GetMetadata()), true); err != nil {
		return nil, err
	}
	oldSnap := s.snapPath()
	out, err := s.ms.CreateSnapshot(i, snap.GetMetadata().GetConfState(), data)
	if err != nil {
		return nil, s.fail(err) // cannot happen: checked above
	}
	s.snap = snap.GetMetadata()
	return out, s.removeSnapshot(oldSnap)
}

// Compact drops the entries up to and including i, which must be at or below the snapshot,
// and deletes the log segments that hold nothing newer. FirstIndex becomes i+1. Compacting
// at or below the log's start returns raft.ErrCompacted.
func (s *Store) Compact(i uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	first, _ := s.ms.FirstIndex()
	if i < first {
		return raft.ErrCompacted
	}
	if i > s.snap.GetIndex() {
		return fmt.Errorf("compact to index %d, snapshot at %d: %w", i, s.snap.GetIndex(), ErrBeyondSnapshot)
	}
	term, err := s.ms.Term(i)
	if err != nil {
		return fmt.Errorf("compact to index %d: %w", i, err)
	}
	if err := s.rotate(); err != nil {
		return s.fail(err)
	}
	if err := s.write(appendRecord(nil, recCompact, indexTerm{index: i, term: term}.marshal()), true); err != nil {
		return err
	}
	if err := s.ms.Compact(i); err != nil {
		return s.fail(err) // cannot happen: checked above
	}
	return s.gc()
}

// Close syncs what is unsynced and releases the directory. The raft.Storage methods keep
// answering from memory; the writing methods return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.f != nil {
		if s.unsynced && s.sync != nil && s.err == nil {
			errs = append(errs, s.sync(s.f))
		}
		errs = append(errs, s.f.Close())
	}
	errs = append(errs, s.lock.Close())
	return errors.Join(errs...)
}

// InitialState implements raft.Storage: the HardState last saved (nil if none) and the
// configuration of the current snapshot.
func (s *Store) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var hs *raftpb.HardState
	if !raft.IsEmptyHardState(s.hs) {
		hs = proto.Clone(s.hs).(*raftpb.HardState)
	}
	return hs, cloneConfState(s.snap.GetConfState()), nil
}

// cloneConfState copies cs (nil: an empty configuration) with every field set, as raft
// wants it.
func cloneConfState(cs *raftpb.ConfState) *raftpb.ConfState {
	if cs == nil {
		return raftpb.EnsureConfState(nil)
	}
	return raftpb.EnsureConfState(proto.Clone(cs).(*raftpb.ConfState))
}

// Entries implements raft.Storage.
func (s *Store) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	return s.ms.Entries(lo, hi, maxSize)
}

// Term implements raft.Storage.
func (s *Store) Term(i uint64) (uint64, error) { return s.ms.Term(i) }

// LastIndex implements raft.Storage.
func (s *Store) LastIndex() (uint64, error) { return s.ms.LastIndex() }

// FirstIndex implements raft.Storage.
func (s *Store) FirstIndex() (uint64, error) { return s.ms.FirstIndex() }

// Snapshot implements raft.Storage: the current snapshot (empty if none).
func (s *Store) Snapshot() (*raftpb.Snapshot, error) { return s.ms.Snapshot() }
