package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

func captureLog() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTornTail cuts the last segment at every offset inside its last record, as a crash
// during the write would, and checks that Open repairs it to the record before.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		hs   *raftpb.HardState
		ents []*raftpb.Entry
	}{
		{"entry", nil, []*raftpb.Entry{entry(21, 1, strings.Repeat("x", 256))}},
		{"hardstate", hardState(1, 1, 15), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{NoSync: true})
			m := newModel()
			mustSave(t, s, m, hardState(1, 1, 0), entries(1, 20, 1), nil)
			mustSave(t, s, m, hardState(1, 1, 10), nil, nil)
			// The last Save writes exactly one record; the model does not see it.
			mustSave(t, s, nil, tc.hs, tc.ents, nil)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			seg := filepath.Base(lastSegment(t, dir))
			offs, size := recordOffsets(t, filepath.Join(dir, seg))
			start := offs[len(offs)-1]
			for cut := start; cut < size; cut++ {
				d := copyDir(t, dir)
				if err := os.Truncate(filepath.Join(d, seg), cut); err != nil {
					t.Fatal(err)
				}
				logger, logBuf := captureLog()
				s, err := Open(d, Options{NoSync: true, Logger: logger})
				if err != nil {
					t.Fatalf("cut at %d: Open: %v", cut, err)
				}
				if err := sameAs(m, s); err != nil {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				if got := fileSize(t, filepath.Join(d, seg)); got != start {
					t.Fatalf("cut at %d: segment is %d bytes after Open, want %d", cut, got, start)
				}
				if torn := strings.Contains(logBuf.String(), "torn tail"); torn != (cut > start) {
					t.Fatalf("cut at %d: log %q", cut, logBuf.String())
				}
				// The repaired log takes new records and replays them.
				mustSave(t, s, nil, hardState(1, 1, 20), entries(21, 21, 1), nil)
				s = reopen(t, s, Options{NoSync: true})
				if last, _ := s.LastIndex(); last != 21 {
					t.Fatalf("cut at %d: LastIndex after repair and save = %d, want 21", cut, last)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestTornGarbage appends what a crash can leave after the last record: zeros, random
// bytes, a header promising more than was written, a last record with a bad checksum.
func TestTornGarbage(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true})
	m := newModel()
	mustSave(t, s, m, hardState(1, 1, 3), entries(1, 10, 1), nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Base(lastSegment(t, dir))
	good, err := os.ReadFile(filepath.Join(dir, seg))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 3000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	long := appendRecord(nil, recEntry, make([]byte, 100))[:60]
	badLast := appendProto(nil, recEntry, entry(11, 1, "eleven"))
	badLast[len(badLast)-1] ^= 1
	for name, tail := range map[string][]byte{
		"zeros":        make([]byte, 4096),
		"random":       random,
		"short record": long,
		"bad checksum": badLast,
	} {
		t.Run(name, func(t *testing.T) {
			d := copyDir(t, dir)
			if err := os.WriteFile(filepath.Join(d, seg), append(bytes.Clone(good), tail...), 0o600); err != nil {
				t.Fatal(err)
			}
			s := openT(t, d, Options{NoSync: true})
			requireSame(t, m, s)
			if got := fileSize(t, filepath.Join(d, seg)); got != int64(len(good)) {
				t.Fatalf("segment is %d bytes after Open, want %d", got, len(good))
			}
		})
	}
}

// TestTornHole models a crash that lost one block of an unsynced write but kept a later one:
// the log is cut at the first damaged record.
func TestTornHole(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true})
	m := newModel()
	mustSave(t, s, m, hardState(1, 1, 0), entries(1, 5, 1), nil)
	var big []*raftpb.Entry
	for i := uint64(6); i <= 40; i++ {
		big = append(big, entry(i, 1, strings.Repeat("y", 500)))
	}
	mustSave(t, s, nil, nil, big, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := lastSegment(t, dir)
	offs, size := recordOffsets(t, path)
	b, _ := os.ReadFile(path)
	hole := int64(2 * tornBlock)
	if hole+tornBlock >= size {
		t.Fatalf("segment of %d bytes too small", size)
	}
	clear(b[hole : hole+tornBlock])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var damaged int64
	for _, off := range offs {
		if off <= hole {
			damaged = off
		}
	}
	logger, logBuf := captureLog()
	s, err := Open(dir, Options{NoSync: true, Logger: logger})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if got := fileSize(t, path); got != damaged {
		t.Fatalf("segment cut at %d, want %d (the record the hole starts in)", got, damaged)
	}
	if !strings.Contains(logBuf.String(), "torn tail") {
		t.Fatalf("no warning logged: %q", logBuf.String())
	}
	last, _ := s.LastIndex()
	if last < 5 || last >= 40 {
		t.Fatalf("LastIndex = %d, want a prefix of the lost write", last)
	}
	got, err := s.Entries(6, last+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if string(e.GetData()) != string(big[i].GetData()) || e.GetIndex() != big[i].GetIndex() {
			t.Fatalf("entry %d changed", e.GetIndex())
		}
	}
}

func requireCorrupt(t *testing.T, dir, where string) {
	t.Helper()
	s, err := Open(dir, Options{NoSync: true})
	if err == nil {
		s.Close()
		t.Fatalf("Open succeeded, want an error naming %s", where)
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), where) {
		t.Fatalf("Open = %v, want ErrCorrupt naming %s", err, where)
	}
	t.Logf("Open: %v", err)
}

// TestCorruptMiddle flips bytes in records that are not the last: Open must refuse the log
// and say where.
func TestCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true, SegmentSize: 2048})
	for i := uint64(1); i <= 60; i++ {
		mustSave(t, s, nil, hardState(1, 1, i-1), []*raftpb.Entry{entry(i, 1, strings.Repeat("z", 100))}, nil)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want 3 or more", len(segs))
	}
	last := segs[len(segs)-1]
	offs, _ := recordOffsets(t, last)
	mid := offs[len(offs)/2]
	prevOffs, prevSize := recordOffsets(t, segs[len(segs)-2])

	for _, tc := range []struct {
		name string
		path string
		off  int64 // byte to flip
		rec  int64 // offset of the record that must be named
	}{
		{"payload of a middle record", last, mid + recordHeaderSize + 5, mid},
		{"length of a middle record", last, mid, mid},
		{"type of a middle record", last, mid + 4, mid},
		{"checksum of a middle record", last, mid + 9, mid},
		{"first record", last, 3, 0},
		{"last record of an older segment", segs[len(segs)-2], prevSize - 1, prevOffs[len(prevOffs)-1]},
		{"header of the oldest segment", segs[0], recordHeaderSize + 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := copyDir(t, dir)
			path := filepath.Join(d, filepath.Base(tc.path))
			flipByte(t, path, tc.off)
			requireCorrupt(t, d, fmt.Sprintf("%s:%d", path, tc.rec))
		})
	}
	t.Run("older segment cut short", func(t *testing.T) {
		d := copyDir(t, dir)
		path := filepath.Join(d, filepath.Base(segs[len(segs)-2]))
		if err := os.Truncate(path, prevOffs[len(prevOffs)-1]+3); err != nil {
			t.Fatal(err)
		}
		requireCorrupt(t, d, fmt.Sprintf("%s:%d", path, prevOffs[len(prevOffs)-1]))
	})
	t.Run("segment missing", func(t *testing.T) {
		d := copyDir(t, dir)
		path := filepath.Join(d, filepath.Base(segs[1]))
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		requireCorrupt(t, d, path)
	})
	t.Run("oldest segments missing", func(t *testing.T) {
		d := copyDir(t, dir)
		if err := os.Remove(filepath.Join(d, filepath.Base(segs[0]))); err != nil {
			t.Fatal(err)
		}
		requireCorrupt(t, d, filepath.Join(d, filepath.Base(segs[1])))
	})
}

func TestCorruptSnapshot(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{NoSync: true})
	mustSave(t, s, nil, hardState(1, 1, 10), entries(1, 10, 1), nil)
	if _, err := s.CreateSnapshot(8, confState(1), []byte("state")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	name := snapName(1, 8)
	t.Run("flipped byte", func(t *testing.T) {
		d := copyDir(t, dir)
		flipByte(t, filepath.Join(d, name), fileSize(t, filepath.Join(d, name))-2)
		requireCorrupt(t, d, filepath.Join(d, name))
	})
	t.Run("missing", func(t *testing.T) {
		d := copyDir(t, dir)
		if err := os.Remove(filepath.Join(d, name)); err != nil {
			t.Fatal(err)
		}
		requireCorrupt(t, d, filepath.Join(d, name))
	})
	t.Run("unfinished newer snapshot", func(t *testing.T) {
		// A crash after the file was written but before the log recorded it: the log's
		// snapshot stays current, the orphan goes.
		d := copyDir(t, dir)
		orphan := filepath.Join(d, snapName(1, 10))
		if err := os.WriteFile(orphan, []byte("whatever"), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(d, snapName(1, 11)+tmpSuffix)
		if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := openT(t, d, Options{NoSync: true})
		if snap, _ := s.Snapshot(); snap.GetMetadata().GetIndex() != 8 || string(snap.GetData()) != "state" {
			t.Fatalf("Snapshot = %v, want the one at 8", snap)
		}
		for _, p := range []string{orphan, tmp} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s not removed: %v", p, err)
			}
		}
	})
}

// TestTornNewSegment models a crash while a new segment was being started: its file is
// empty or holds part of its header. Open drops it, and the log rotates into it again.
func TestTornNewSegment(t *testing.T) {
	opts := Options{NoSync: true, SegmentSize: 512}
	dir := t.TempDir()
	s := openT(t, dir, opts)
	m := newModel()
	for i := uint64(1); i <= 30; i++ {
		mustSave(t, s, m, hardState(1, 1, i-1), entries(i, i, 1), nil)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	next := filepath.Join(dir, segmentName(s.segs[len(s.segs)-1].seq+1))
	header := appendRecord(nil, recHeader, segmentHeader{seq: s.segs[len(s.segs)-1].seq + 1}.marshal())
	for _, n := range []int{0, 1, recordHeaderSize, len(header) - 1} {
		d := copyDir(t, dir)
		path := filepath.Join(d, filepath.Base(next))
		if err := os.WriteFile(path, header[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		s := openT(t, d, opts)
		requireSame(t, m, s)
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%d bytes: torn segment not removed: %v", n, err)
		}
		m2 := newModel()
		m2.save(m.hs, nil, nil)
		for i := uint64(1); i <= 60; i++ {
			mustSave(t, s, m2, hardState(1, 1, i-1), entries(i, i, 1), nil)
		}
		s = reopen(t, s, opts)
		requireSame(t, m2, s)
	}
}
