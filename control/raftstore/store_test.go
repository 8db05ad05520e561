package raftstore

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

func TestEmpty(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	s := openT(t, dir, Options{})
	requireSame(t, newModel(), s)
	s = reopen(t, s, Options{})
	requireSame(t, newModel(), s)
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode = %v, %v; want 0700", st.Mode(), err)
	}
}

func TestRoundTrip(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	m := newModel()
	mustSave(t, s, m, hardState(1, 1, 0), entries(1, 3, 1), nil)
	mustSave(t, s, m, hardState(1, 1, 3), entries(4, 10, 1), nil)
	mustSave(t, s, m, hardState(2, 0, 3), nil, nil)
	mustSave(t, s, m, nil, entries(11, 11, 2), nil)
	requireSame(t, m, s)
	s = reopen(t, s, Options{})
	requireSame(t, m, s)
	// And it goes on from there.
	mustSave(t, s, m, hardState(2, 0, 11), entries(12, 20, 2), nil)
	s = reopen(t, s, Options{})
	requireSame(t, m, s)
}

func TestConflictingTail(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	m := newModel()
	mustSave(t, s, m, hardState(1, 1, 4), entries(1, 10, 1), nil)
	// A new leader at term 2 overwrites 6..10 with a shorter tail.
	mustSave(t, s, m, hardState(2, 2, 5), entries(6, 8, 2), nil)
	if last, _ := s.LastIndex(); last != 8 {
		t.Fatalf("LastIndex = %d, want 8", last)
	}
	requireSame(t, m, s)
	s = reopen(t, s, Options{})
	requireSame(t, m, s)
	// Overwrite once more, starting right after the commit index, then grow.
	mustSave(t, s, m, hardState(3, 3, 5), entries(6, 6, 3), nil)
	mustSave(t, s, m, nil, entries(7, 12, 3), nil)
	s = reopen(t, s, Options{})
	requireSame(t, m, s)
	if term, _ := s.Term(8); term != 3 {
		t.Fatalf("Term(8) = %d, want 3", term)
	}
}

func TestSnapshotFromLeader(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after []*raftpb.Entry
	}{
		{"entries after", entries(21, 25, 3)},
		// The stale entries 21..30 of term 1 must not come back on replay.
		{"nothing after", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openT(t, t.TempDir(), Options{})
			m := newModel()
			mustSave(t, s, m, hardState(1, 1, 5), entries(1, 30, 1), nil)
			mustSave(t, s, m, hardState(3, 0, 20), nil, snapshot(20, 2, "state@20", 1, 2, 3))
			mustSave(t, s, m, hardState(3, 0, 20), tc.after, nil)
			requireSame(t, m, s)
			s = reopen(t, s, Options{})
			requireSame(t, m, s)
			if _, err := os.Stat(filepath.Join(s.dir, snapName(2, 20))); err != nil {
				t.Fatalf("snapshot file: %v", err)
			}
		})
	}
}

func TestSnapshotAndCompaction(t *testing.T) {
	opts := Options{SegmentSize: 256}
	s := openT(t, t.TempDir(), opts)
	m := newModel()
	for i := uint64(1); i <= 100; i += 5 {
		mustSave(t, s, m, hardState(1, 1, i-1), entries(i, i+4, 1), nil)
	}
	before := segmentFiles(t, s.dir)
	if len(before) < 5 {
		t.Fatalf("%d segments, want many with SegmentSize 256", len(before))
	}
	cs := confState(1, 2, 3)
	if _, err := s.CreateSnapshot(60, cs, []byte("state@60")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ms.CreateSnapshot(60, cs, []byte("state@60")); err != nil {
		t.Fatal(err)
	}
	requireSame(t, m, s)
	if err := s.Compact(61); !errors.Is(err, ErrBeyondSnapshot) {
		t.Fatalf("Compact(61) past the snapshot = %v, want ErrBeyondSnapshot", err)
	}
	// Keep a few entries below the snapshot for slow followers.
	if err := s.Compact(50); err != nil {
		t.Fatal(err)
	}
	if err := m.ms.Compact(50); err != nil {
		t.Fatal(err)
	}
	requireSame(t, m, s)
	s = reopen(t, s, opts)
	requireSame(t, m, s)
	if err := s.Compact(60); err != nil {
		t.Fatal(err)
	}
	if err := m.ms.Compact(60); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(60); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("Compact(60) twice = %v, want ErrCompacted", err)
	}
	after := segmentFiles(t, s.dir)
	if len(after) >= len(before) || after[0] == before[0] {
		t.Fatalf("segments before compaction %v, after %v: old ones not deleted", before, after)
	}
	// No remaining segment except the last holds only entries up to 60.
	for _, seg := range s.segs[:len(s.segs)-1] {
		if seg.maxIndex <= 60 {
			t.Errorf("segment %d (entries up to %d) kept after compaction to 60", seg.seq, seg.maxIndex)
		}
	}
	s = reopen(t, s, opts)
	requireSame(t, m, s)
	if first, _ := s.FirstIndex(); first != 61 {
		t.Fatalf("FirstIndex = %d, want 61", first)
	}
	// A second snapshot replaces the first file.
	if _, err := s.CreateSnapshot(90, cs, []byte("state@90")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ms.CreateSnapshot(90, cs, []byte("state@90")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSnapshot(90, cs, nil); !errors.Is(err, raft.ErrSnapOutOfDate) {
		t.Fatalf("CreateSnapshot(90) twice = %v, want ErrSnapOutOfDate", err)
	}
	if _, err := s.CreateSnapshot(101, cs, nil); err == nil {
		t.Fatal("CreateSnapshot past the last index succeeded")
	}
	snaps, _ := filepath.Glob(filepath.Join(s.dir, "*"+snapSuffix))
	if len(snaps) != 1 || filepath.Base(snaps[0]) != snapName(1, 90) {
		t.Fatalf("snapshot files %v, want only %s", snaps, snapName(1, 90))
	}
	s = reopen(t, s, opts)
	requireSame(t, m, s)
}

// TestRotationKeepsState checks that the HardState and the snapshot, written once, survive
// the deletion of the segment that held them.
func TestRotationKeepsState(t *testing.T) {
	opts := Options{SegmentSize: 512, NoSync: true}
	s := openT(t, t.TempDir(), opts)
	m := newModel()
	mustSave(t, s, m, hardState(1, 1, 0), nil, snapshot(5, 1, "boot", 1))
	mustSave(t, s, m, hardState(4, 1, 5), nil, nil)
	for i := uint64(6); i <= 200; i++ {
		mustSave(t, s, m, nil, entries(i, i, 4), nil)
	}
	mustSave(t, s, m, hardState(4, 1, 200), nil, nil)
	for i := uint64(201); i <= 260; i++ {
		mustSave(t, s, m, nil, entries(i, i, 4), nil)
	}
	if _, err := s.CreateSnapshot(150, confState(1), []byte("s150")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ms.CreateSnapshot(150, confState(1), []byte("s150")); err != nil {
		t.Fatal(err)
	}
	for i := uint64(261); i <= 300; i++ {
		mustSave(t, s, m, nil, entries(i, i, 4), nil)
	}
	if err := s.Compact(150); err != nil {
		t.Fatal(err)
	}
	if err := m.ms.Compact(150); err != nil {
		t.Fatal(err)
	}
	if s.segs[0].seq == 1 {
		t.Fatal("no segment deleted")
	}
	s = reopen(t, s, opts)
	requireSame(t, m, s)
}

func TestSaveRejects(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	m := newModel()
	mustSave(t, s, m, hardState(1, 1, 0), entries(1, 5, 1), nil)
	if err := s.Save(hardState(1, 1, 5), entries(7, 8, 1), nil); err == nil {
		t.Fatal("Save of entries leaving a gap succeeded")
	}
	if err := s.Save(nil, []*raftpb.Entry{entry(6, 1, ""), entry(8, 1, "")}, nil); err == nil {
		t.Fatal("Save of non-contiguous entries succeeded")
	}
	mustSave(t, s, m, hardState(2, 0, 10), nil, snapshot(10, 2, "x", 1))
	if err := s.Save(nil, nil, snapshot(9, 2, "old", 1)); !errors.Is(err, raft.ErrSnapOutOfDate) {
		t.Fatalf("Save of an older snapshot = %v, want ErrSnapOutOfDate", err)
	}
	// Entries already covered by the snapshot are skipped, the rest appended.
	mustSave(t, s, m, nil, entries(8, 12, 2), nil)
	requireSame(t, m, s)
	s = reopen(t, s, Options{})
	requireSame(t, m, s)
}

func TestGroupCommit(t *testing.T) {
	var syncs int
	opts := Options{sync: func(*os.File) error { syncs++; return nil }}
	s := openT(t, t.TempDir(), opts)
	for _, tc := range []struct {
		name  string
		hs    *raftpb.HardState
		ents  []*raftpb.Entry
		snap  *raftpb.Snapshot
		syncs int
	}{
		{"entries and hardstate", hardState(1, 1, 0), entries(1, 100, 1), nil, 1},
		{"nothing", nil, nil, nil, 0},
		{"same hardstate", hardState(1, 1, 0), nil, nil, 0},
		{"commit only", hardState(1, 1, 50), nil, nil, 0},
		{"new term", hardState(2, 0, 50), nil, nil, 1},
		{"vote", hardState(2, 3, 50), nil, nil, 1},
		{"one entry", nil, entries(101, 101, 2), nil, 1},
		// The snapshot file, the directory after its rename, and the log.
		{"snapshot", hardState(2, 3, 200), nil, snapshot(200, 2, "s", 1), 3},
	} {
		syncs = 0
		if err := s.Save(tc.hs, tc.ents, tc.snap); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if syncs != tc.syncs {
			t.Errorf("%s: %d fsyncs, want %d", tc.name, syncs, tc.syncs)
		}
	}
	// The unsynced commit index is synced on Close.
	syncs = 0
	if err := s.Save(hardState(2, 3, 201), entries(201, 201, 2), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(hardState(2, 3, 202), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if syncs != 2 {
		t.Errorf("%d fsyncs for a save, a commit-only save and Close, want 2", syncs)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(hardState(1, 0, 0), nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save after Close = %v, want ErrClosed", err)
	}
	openT(t, dir, Options{})
}

func TestWriteErrorIsSticky(t *testing.T) {
	fail := false
	opts := Options{sync: func(*os.File) error {
		if fail {
			return errors.New("EIO")
		}
		return nil
	}}
	s := openT(t, t.TempDir(), opts)
	m := newModel()
	mustSave(t, s, m, hardState(1, 1, 0), entries(1, 3, 1), nil)
	fail = true
	if err := s.Save(nil, entries(4, 4, 1), nil); err == nil {
		t.Fatal("Save with a failing fsync succeeded")
	}
	fail = false
	if err := s.Save(nil, entries(4, 4, 1), nil); err == nil {
		t.Fatal("Save after a failed fsync succeeded")
	}
	// What reached the disk is replayed: here the unsynced entry 4 did.
	s = reopen(t, s, opts)
	mustSave(t, s, nil, nil, entries(5, 5, 1), nil)
	if last, _ := s.LastIndex(); last != 5 {
		t.Fatalf("LastIndex after reopen = %d, want 5", last)
	}
}

// TestRandomOps drives a Store and the model with random raft-like operations, reopening
// now and then, and compares them after every step.
func TestRandomOps(t *testing.T) {
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 1))
		opts := Options{NoSync: true, SegmentSize: int64(256 + rng.IntN(4096))}
		s := openT(t, t.TempDir(), opts)
		m := newModel()
		var term, commit uint64 = 1, 0
		for step := range 400 {
			first, _ := m.ms.FirstIndex()
			last, _ := m.ms.LastIndex()
			snap, _ := m.ms.Snapshot()
			si := snap.GetMetadata().GetIndex()
			switch r := rng.IntN(100); {
			case r < 50: // append, sometimes overwriting the uncommitted tail
				from := last + 1
				if r < 15 && last > commit {
					from = commit + 1 + rng.Uint64N(last-commit)
					term++
				}
				n := uint64(rng.IntN(8))
				var es []*raftpb.Entry
				if n > 0 {
					es = entries(from, from+n-1, term)
				}
				newLast := max(from+n-1, first-1)
				if n == 0 {
					newLast = last
				}
				commit = min(commit+uint64(rng.IntN(5)), newLast)
				mustSave(t, s, m, hardState(term, 1, commit), es, nil)
			case r < 60: // a snapshot from the leader, ahead of the log
				term++
				i := last + 1 + uint64(rng.IntN(5))
				commit = i
				mustSave(t, s, m, hardState(term, 0, commit), entries(i+1, i+uint64(rng.IntN(3)), term),
					snapshot(i, term, "leader", 1, 2, 3))
			case r < 70: // snapshot of the applied state
				if commit > si {
					i := si + 1 + rng.Uint64N(commit-si)
					if _, err := s.CreateSnapshot(i, confState(1, 2), []byte("app")); err != nil {
						t.Fatal(err)
					}
					if _, err := m.ms.CreateSnapshot(i, confState(1, 2), []byte("app")); err != nil {
						t.Fatal(err)
					}
				}
			case r < 80: // compaction, up to the snapshot
				if si >= first {
					i := first + rng.Uint64N(si-first+1)
					if err := s.Compact(i); err != nil {
						t.Fatal(err)
					}
					if err := m.ms.Compact(i); err != nil {
						t.Fatal(err)
					}
				}
			default:
				s = reopen(t, s, opts)
			}
			if err := sameAs(m, s); err != nil {
				t.Fatalf("seed %d, step %d: %v", seed, step, err)
			}
		}
		s = reopen(t, s, opts)
		requireSame(t, m, s)
	}
}
