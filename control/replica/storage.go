package replica

import (
	"errors"
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"vigil/control/clusterdb"
)

// Storage is what a Core persists raft's state in: raft.Storage to read it back, Save for
// each Ready (durable when it returns), and snapshots with log compaction. *raftstore.Store is
// the durable one the daemon uses; NewMemoryStorage keeps everything in memory for
// simulations, where "durable" means "kept across a simulated restart".
type Storage interface {
	raft.Storage
	Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error
	CreateSnapshot(i uint64, cs *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error)
	Compact(i uint64) error
}

// MemoryStorage is raft's MemoryStorage with Save: a Storage for simulations and tests.
type MemoryStorage struct {
	*raft.MemoryStorage
}

// NewMemoryStorage returns an empty in-memory Storage.
func NewMemoryStorage() *MemoryStorage { return &MemoryStorage{raft.NewMemoryStorage()} }

// Save applies a Ready's snapshot, entries and HardState, in that order.
func (m *MemoryStorage) Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	if !raft.IsEmptySnap(snap) {
		if err := m.ApplySnapshot(snap); err != nil {
			return fmt.Errorf("save snapshot: %w", err)
		}
	}
	if len(ents) > 0 {
		if err := m.Append(ents); err != nil {
			return fmt.Errorf("save entries: %w", err)
		}
	}
	if hs != nil && !raft.IsEmptyHardState(hs) {
		if err := m.SetHardState(hs); err != nil {
			return fmt.Errorf("save hard state: %w", err)
		}
	}
	return nil
}

// ErrNotEmpty is returned by Bootstrap for a storage that already holds raft state.
var ErrNotEmpty = errors.New("raft storage is not empty")

// Bootstrap writes the first state of a new cluster into an empty storage: a snapshot at
// index 1, term 1, whose configuration makes voters the voting members and whose data is an
// empty cluster database. Every founding node bootstraps with the same voters, so they all
// start from the same snapshot; a node that joins an existing cluster later is not
// bootstrapped (its storage stays empty until the leader sends it the log or a snapshot).
func Bootstrap(st Storage, voters []uint64) error {
	last, err := st.LastIndex()
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	hs, cs, err := st.InitialState()
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if last > 0 || !raft.IsEmptyHardState(hs) || len(cs.GetVoters()) > 0 {
		return ErrNotEmpty
	}
	if len(voters) == 0 {
		return fmt.Errorf("bootstrap: no voters")
	}
	data, err := clusterdb.New().Snapshot()
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	snap := &raftpb.Snapshot{
		Metadata: &raftpb.SnapshotMetadata{
			ConfState: raftpb.EnsureConfState(&raftpb.ConfState{Voters: voters}),
			Index:     new(uint64(1)),
			Term:      new(uint64(1)),
		},
		Data: data,
	}
	if err := st.Save(nil, nil, snap); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

// IsEmpty reports whether st holds no raft state at all (a node never bootstrapped nor
// joined).
func IsEmpty(st Storage) (bool, error) {
	last, err := st.LastIndex()
	if err != nil {
		return false, err
	}
	hs, cs, err := st.InitialState()
	if err != nil {
		return false, err
	}
	return last == 0 && raft.IsEmptyHardState(hs) && len(cs.GetVoters()) == 0 && len(cs.GetLearners()) == 0, nil
}
