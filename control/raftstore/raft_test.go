package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestRaftCrashConsistency runs three raft.RawNodes on Stores, with an in-memory network
// that reorders and drops messages and isolates nodes, and crashes nodes at random points:
// before a Ready is saved, after it is saved but before its messages are sent, or anywhere
// between Readies. A crash drops a random part of what was written but not yet fsynced.
// Every node's applied state is a hash chain of the entries it applied; the test checks
// that an index, once committed anywhere, always holds the same entry and the same state on
// every node, across restarts, and that the nodes converge once the faults stop.
func TestRaftCrashConsistency(t *testing.T) {
	total := simStats{}
	for seed := range uint64(20) {
		func() {
			defer func() {
				// raft panics when a node's log lost or changed what it acknowledged.
				if p := recover(); p != nil {
					t.Fatalf("seed %d: raft panicked: %v", seed, p)
				}
			}()
			sm := newSim(t, seed)
			sm.run(5000)
			sm.converge()
			t.Logf("seed %d: %+v", seed, sm.stats)
			total.add(sm.stats)
			sm.close()
		}()
	}
	// The schedule must have exercised what the test is about.
	if total.committed < 500 || total.crashes < 50 || total.snapshotsSent == 0 || total.truncations == 0 {
		t.Fatalf("weak schedule: %+v", total)
	}
}

type simStats struct {
	committed, proposals, crashes, crashesInSave, reopens, snapshots, snapshotsSent, truncations, torn int
}

func (s *simStats) add(o simStats) {
	s.committed += o.committed
	s.proposals += o.proposals
	s.crashes += o.crashes
	s.crashesInSave += o.crashesInSave
	s.reopens += o.reopens
	s.snapshots += o.snapshots
	s.snapshotsSent += o.snapshotsSent
	s.truncations += o.truncations
	s.torn += o.torn
}

type simNode struct {
	id      uint64
	dir     string
	store   *Store
	rn      *raft.RawNode
	applied uint64           // the state machine: index applied ...
	hash    uint64           // ... and the hash chain of the entries applied
	synced  map[string]int64 // file → its size at its last fsync
	// failSync makes the next fsync fail: the machine dies in the middle of a Save.
	failSync bool
}

type sim struct {
	t         *testing.T
	rng       *rand.Rand
	nodes     []*simNode
	queue     []*raftpb.Message
	committed map[uint64]*raftpb.Entry // every index seen committed, and its entry
	hashAt    map[uint64]uint64        // the state after applying each index
	isolated  uint64                   // a node cut off from the others (0: none)
	faults    bool
	stats     simStats
}

var errCrash = errors.New("crash")

var raftLogger = &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}

func encodeState(applied, hash uint64) []byte {
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, applied), hash)
}

func decodeState(b []byte) (applied, hash uint64) {
	return binary.LittleEndian.Uint64(b[0:8]), binary.LittleEndian.Uint64(b[8:16])
}

func newSim(t *testing.T, seed uint64) *sim {
	sm := &sim{
		t:         t,
		rng:       rand.New(rand.NewPCG(seed, 42)),
		committed: map[uint64]*raftpb.Entry{},
		hashAt:    map[uint64]uint64{1: 0},
		faults:    true,
	}
	for id := uint64(1); id <= 3; id++ {
		n := &simNode{id: id, dir: t.TempDir(), synced: map[string]int64{}}
		sm.nodes = append(sm.nodes, n)
		// Bootstrap as raft recommends: a first snapshot holding the configuration.
		s := sm.open(n)
		if err := s.Save(nil, nil, &raftpb.Snapshot{
			Metadata: &raftpb.SnapshotMetadata{ConfState: confState(1, 2, 3), Index: new(uint64(1)), Term: new(uint64(1))},
			Data:     encodeState(1, 0),
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		sm.start(n)
	}
	return sm
}

func (sm *sim) open(n *simNode) *Store {
	s, err := Open(n.dir, Options{
		SegmentSize: 4096,
		Logger:      slog.New(slog.DiscardHandler),
		sync: func(f *os.File) error {
			if n.failSync {
				return errCrash
			}
			st, err := f.Stat()
			if err != nil {
				return err
			}
			n.synced[f.Name()] = st.Size()
			return nil
		},
	})
	if err != nil {
		sm.t.Fatalf("node %d: Open: %v", n.id, err)
	}
	return s
}

// start opens n's store, restores its state machine from the snapshot and starts raft.
func (sm *sim) start(n *simNode) {
	n.store = sm.open(n)
	snap, _ := n.store.Snapshot()
	n.applied, n.hash = decodeState(snap.GetData())
	if n.applied != snap.GetMetadata().GetIndex() {
		sm.t.Fatalf("node %d: snapshot at %d holds state at %d", n.id, snap.GetMetadata().GetIndex(), n.applied)
	}
	sm.checkState(n)
	// What the store holds at or below its commit index must be what was committed.
	hs, _, _ := n.store.InitialState()
	first, _ := n.store.FirstIndex()
	last, _ := n.store.LastIndex()
	if hs.GetCommit() > last {
		sm.t.Fatalf("node %d: commit %d past last index %d", n.id, hs.GetCommit(), last)
	}
	if first <= hs.GetCommit() {
		ents, err := n.store.Entries(first, hs.GetCommit()+1, 1<<40)
		if err != nil {
			sm.t.Fatal(err)
		}
		for _, e := range ents {
			sm.checkCommitted(n, e)
		}
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              n.id,
		ElectionTick:    10,
		HeartbeatTick:   1,
		Storage:         n.store,
		Applied:         n.applied,
		MaxSizePerMsg:   1024,
		MaxInflightMsgs: 16,
		PreVote:         true,
		CheckQuorum:     true,
		Logger:          raftLogger,
	})
	if err != nil {
		sm.t.Fatal(err)
	}
	n.rn = rn
}

// crash stops n, abruptly or not, and restarts it from its directory.
func (sm *sim) crash(n *simNode) {
	if sm.rng.IntN(4) == 0 {
		if err := n.store.Close(); err != nil {
			sm.t.Fatal(err)
		}
		sm.stats.reopens++
	} else {
		// The process dies and the machine with it: what was not fsynced is partly lost.
		s := n.store
		var path string
		if s.f != nil {
			path = s.f.Name()
			s.f.Close()
		} else {
			// The machine died while the store moved on to a new segment: the segment it
			// had started (the newest file) is what a crash tears.
			segs, err := filepath.Glob(filepath.Join(n.dir, "*"+segmentSuffix))
			if err != nil || len(segs) == 0 {
				sm.t.Fatalf("node %d: no log segment after a failed rotation: %v", n.id, err)
			}
			slices.Sort(segs)
			path = segs[len(segs)-1]
		}
		s.lock.Close()
		st, err := os.Stat(path)
		if err != nil {
			sm.t.Fatal(err)
		}
		synced := n.synced[path]
		if keep := synced + sm.rng.Int64N(st.Size()-synced+1); keep < st.Size() {
			if err := os.Truncate(path, keep); err != nil {
				sm.t.Fatal(err)
			}
			sm.stats.torn++
		}
		sm.stats.crashes++
	}
	n.store, n.rn, n.failSync = nil, nil, false
	sm.start(n)
}

func (sm *sim) checkCommitted(n *simNode, e *raftpb.Entry) {
	i := e.GetIndex()
	if prev, ok := sm.committed[i]; !ok {
		sm.committed[i] = proto.Clone(e).(*raftpb.Entry)
		sm.stats.committed++
	} else if !proto.Equal(prev, e) {
		sm.t.Fatalf("node %d: committed entry %d changed: was %v, now %v", n.id, i, prev, e)
	}
}

func (sm *sim) checkState(n *simNode) {
	if h, ok := sm.hashAt[n.applied]; !ok {
		sm.hashAt[n.applied] = n.hash
	} else if h != n.hash {
		sm.t.Fatalf("node %d: state at index %d differs from another node's", n.id, n.applied)
	}
}

func (sm *sim) apply(n *simNode, e *raftpb.Entry) {
	sm.checkCommitted(n, e)
	if e.GetIndex() <= n.applied {
		return
	}
	if e.GetIndex() != n.applied+1 {
		sm.t.Fatalf("node %d: applying entry %d after %d", n.id, e.GetIndex(), n.applied)
	}
	if e.GetType() != raftpb.EntryNormal {
		sm.t.Fatalf("node %d: unexpected %v entry", n.id, e.GetType())
	}
	if len(e.GetData()) > 0 {
		h := fnv.New64a()
		_ = binary.Write(h, binary.LittleEndian, n.hash)
		h.Write(e.GetData())
		n.hash = h.Sum64()
	}
	n.applied = e.GetIndex()
	sm.checkState(n)
}

// ready handles n's Readies in the order raft's documentation asks for, with crashes
// between the steps when faults are on.
func (sm *sim) ready(n *simNode) {
	for n.rn.HasReady() {
		rd := n.rn.Ready()
		if sm.faults && sm.rng.IntN(400) == 0 {
			sm.crash(n) // before the Ready was saved
			return
		}
		if len(rd.Entries) > 0 {
			if last, _ := n.store.LastIndex(); rd.Entries[0].GetIndex() <= last {
				sm.stats.truncations++
			}
		}
		n.failSync = sm.faults && sm.rng.IntN(300) == 0
		if err := n.store.Save(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
			if !n.failSync {
				sm.t.Fatalf("node %d: Save: %v", n.id, err)
			}
			sm.stats.crashesInSave++
			sm.crash(n) // during the Save
			return
		}
		n.failSync = false
		if sm.faults && sm.rng.IntN(400) == 0 {
			sm.crash(n) // saved, but the messages were never sent
			return
		}
		sm.queue = append(sm.queue, rd.Messages...)
		if !raft.IsEmptySnap(rd.Snapshot) {
			n.applied, n.hash = decodeState(rd.Snapshot.GetData())
			sm.checkState(n)
		}
		for _, e := range rd.CommittedEntries {
			sm.apply(n, e)
		}
		n.rn.Advance(rd)
	}
}

func (sm *sim) deliver(i int) {
	m := sm.queue[i]
	sm.queue = append(sm.queue[:i], sm.queue[i+1:]...)
	from, to := sm.nodes[m.GetFrom()-1], sm.nodes[m.GetTo()-1]
	drop := sm.faults && (sm.rng.IntN(20) == 0 || sm.isolated == from.id || sm.isolated == to.id)
	if m.GetType() == raftpb.MsgSnap {
		status := raft.SnapshotFinish
		if drop {
			status = raft.SnapshotFailure
		} else {
			sm.stats.snapshotsSent++
		}
		from.rn.ReportSnapshot(to.id, status)
		sm.ready(from)
	}
	if drop {
		return
	}
	_ = to.rn.Step(proto.Clone(m).(*raftpb.Message))
	sm.ready(to)
}

func (sm *sim) snapshot(n *simNode) {
	snap, _ := n.store.Snapshot()
	si := snap.GetMetadata().GetIndex()
	if n.applied < si+10 {
		return
	}
	if _, err := n.store.CreateSnapshot(n.applied, snap.GetMetadata().GetConfState(), encodeState(n.applied, n.hash)); err != nil {
		sm.t.Fatalf("node %d: CreateSnapshot(%d): %v", n.id, n.applied, err)
	}
	sm.stats.snapshots++
	first, _ := n.store.FirstIndex()
	if i := n.applied - uint64(sm.rng.IntN(4)); i >= first {
		if err := n.store.Compact(i); err != nil {
			sm.t.Fatalf("node %d: Compact(%d): %v", n.id, i, err)
		}
	}
}

func (sm *sim) run(steps int) {
	for range steps {
		n := sm.nodes[sm.rng.IntN(len(sm.nodes))]
		switch r := sm.rng.IntN(1000); {
		case r < 200:
			n.rn.Tick()
			sm.ready(n)
		case r < 850:
			for k := sm.rng.IntN(4); k >= 0 && len(sm.queue) > 0; k-- {
				sm.deliver(sm.rng.IntN(len(sm.queue)))
			}
		case r < 930:
			sm.stats.proposals++
			_ = n.rn.Propose(fmt.Appendf(nil, "p%d", sm.stats.proposals))
			sm.ready(n)
		case r < 980:
			sm.snapshot(n)
		case r < 990:
			sm.crash(n)
		case r < 1000:
			if sm.isolated == 0 {
				// Preferably the leader, which then keeps appending proposals that a new
				// leader's log will overwrite.
				sm.isolated = n.id
				for _, l := range sm.nodes {
					if l.rn.BasicStatus().RaftState == raft.StateLeader && sm.rng.IntN(2) == 0 {
						sm.isolated = l.id
					}
				}
			} else if sm.rng.IntN(3) == 0 {
				sm.isolated = 0
			}
		}
	}
}

// converge stops the faults and runs until every node has applied everything committed.
func (sm *sim) converge() {
	sm.faults, sm.isolated = false, 0
	for round := range 2000 {
		for _, n := range sm.nodes {
			n.rn.Tick()
			sm.ready(n)
		}
		for len(sm.queue) > 0 {
			sm.deliver(0)
		}
		if round%50 == 10 {
			for _, n := range sm.nodes {
				if n.rn.BasicStatus().RaftState == raft.StateLeader {
					sm.stats.proposals++
					_ = n.rn.Propose(fmt.Appendf(nil, "final%d", round))
					sm.ready(n)
				}
			}
		}
		var maxCommitted uint64
		for i := range sm.committed {
			maxCommitted = max(maxCommitted, i)
		}
		done := round > 100
		for _, n := range sm.nodes {
			done = done && n.applied == maxCommitted
		}
		if done {
			for _, n := range sm.nodes[1:] {
				if n.hash != sm.nodes[0].hash {
					sm.t.Fatalf("nodes 1 and %d applied %d entries to different states", n.id, n.applied)
				}
			}
			return
		}
	}
	for _, n := range sm.nodes {
		sm.t.Logf("node %d: applied %d, %+v", n.id, n.applied, n.rn.BasicStatus())
	}
	sm.t.Fatal("no convergence after the faults stopped")
}

func (sm *sim) close() {
	for _, n := range sm.nodes {
		if err := n.store.Close(); err != nil {
			sm.t.Fatal(err)
		}
	}
}
