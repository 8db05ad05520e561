package raftstore

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func entry(index, term uint64, data string) *raftpb.Entry {
	return &raftpb.Entry{Index: new(index), Term: new(term), Type: raftpb.EntryNormal.Enum(), Data: []byte(data)}
}

// entries returns entries lo..hi (inclusive) at term.
func entries(lo, hi, term uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, entry(i, term, fmt.Sprintf("e%d.t%d", i, term)))
	}
	return out
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

func snapshot(index, term uint64, data string, voters ...uint64) *raftpb.Snapshot {
	return &raftpb.Snapshot{
		Metadata: &raftpb.SnapshotMetadata{
			ConfState: raftpb.EnsureConfState(&raftpb.ConfState{Voters: voters}),
			Index:     new(index),
			Term:      new(term),
		},
		Data: []byte(data),
	}
}

func confState(voters ...uint64) *raftpb.ConfState {
	return raftpb.EnsureConfState(&raftpb.ConfState{Voters: voters})
}

func openT(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reopen(t testing.TB, s *Store, opts Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openT(t, s.dir, opts)
}

// model is the reference: a raft.MemoryStorage driven with the same operations.
type model struct {
	ms *raft.MemoryStorage
	hs *raftpb.HardState
}

func newModel() *model { return &model{ms: raft.NewMemoryStorage()} }

func (m *model) save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) {
	if !raft.IsEmptySnap(snap) {
		if err := m.ms.ApplySnapshot(snap); err != nil {
			panic(err)
		}
	}
	if err := m.ms.Append(ents); err != nil {
		panic(err)
	}
	if !raft.IsEmptyHardState(hs) {
		m.hs = proto.Clone(hs).(*raftpb.HardState)
	}
}

func mustSave(t testing.TB, s *Store, m *model, hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) {
	t.Helper()
	if err := s.Save(hs, ents, snap); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if m != nil {
		m.save(hs, ents, snap)
	}
}

func normSnap(s *raftpb.Snapshot) *raftpb.Snapshot {
	return raftpb.EnsureSnapshot(proto.Clone(s).(*raftpb.Snapshot))
}

// requireSame fails t unless got answers every raft.Storage question as want does.
func requireSame(t testing.TB, want *model, got raft.Storage) {
	t.Helper()
	if err := sameAs(want, got); err != nil {
		t.Fatal(err)
	}
}

// sameAs says how got answers a raft.Storage question differently from want, if it does.
func sameAs(want *model, got raft.Storage) error {
	ghs, gcs, err := got.InitialState()
	if err != nil {
		return fmt.Errorf("InitialState: %v", err)
	}
	if raft.IsEmptyHardState(want.hs) != raft.IsEmptyHardState(ghs) ||
		!raft.IsEmptyHardState(ghs) && !proto.Equal(want.hs, ghs) {
		return fmt.Errorf("HardState = %v, want %v", ghs, want.hs)
	}
	wsnap, _ := want.ms.Snapshot()
	if !proto.Equal(raftpb.EnsureConfState(wsnap.GetMetadata().GetConfState()), gcs) {
		return fmt.Errorf("ConfState = %v, want %v", gcs, wsnap.GetMetadata().GetConfState())
	}
	gsnap, err := got.Snapshot()
	if err != nil {
		return fmt.Errorf("Snapshot: %v", err)
	}
	if !proto.Equal(normSnap(wsnap), normSnap(gsnap)) {
		return fmt.Errorf("Snapshot = %v, want %v", gsnap, wsnap)
	}
	wf, _ := want.ms.FirstIndex()
	wl, _ := want.ms.LastIndex()
	gf, _ := got.FirstIndex()
	gl, _ := got.LastIndex()
	if wf != gf || wl != gl {
		return fmt.Errorf("FirstIndex, LastIndex = %d, %d, want %d, %d", gf, gl, wf, wl)
	}
	for i := wf - 1; i <= wl; i++ {
		wt, _ := want.ms.Term(i)
		gt, err := got.Term(i)
		if err != nil || gt != wt {
			return fmt.Errorf("Term(%d) = %d, %v, want %d", i, gt, err, wt)
		}
	}
	if wl < wf {
		return nil
	}
	for _, maxSize := range []uint64{math.MaxUint64, 1, 100} {
		we, werr := want.ms.Entries(wf, wl+1, maxSize)
		ge, gerr := got.Entries(wf, wl+1, maxSize)
		if werr != gerr || len(we) != len(ge) {
			return fmt.Errorf("Entries(%d, %d, %d) = %d entries, %v, want %d, %v", wf, wl+1, maxSize, len(ge), gerr, len(we), werr)
		}
		for i := range we {
			if !proto.Equal(we[i], ge[i]) {
				return fmt.Errorf("entry %d = %v, want %v", we[i].GetIndex(), ge[i], we[i])
			}
		}
	}
	return nil
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*"+segmentSuffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paths)
	return paths
}

func lastSegment(t testing.TB, dir string) string {
	t.Helper()
	segs := segmentFiles(t, dir)
	if len(segs) == 0 {
		t.Fatal("no segment files")
	}
	return segs[len(segs)-1]
}

// recordOffsets lists the offsets of the records in the segment at path, and its size.
func recordOffsets(t testing.TB, path string) (offs []int64, size int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = scanSegment(path, data, false, func(off int64, _ decoded) error {
		offs = append(offs, off)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return offs, int64(len(data))
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
