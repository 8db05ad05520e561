package replica

import (
	"fmt"
	"slices"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"vigil/control/clusterdb"
)

// savesLog is a MemoryStorage that writes each save into a shared log of events.
type savesLog struct {
	*MemoryStorage
	id     uint64
	events *[]string
}

func (s savesLog) Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	switch {
	case hs.GetTerm() != 0:
		*s.events = append(*s.events, fmt.Sprintf("n%d save term %d vote %d, %d entries", s.id, hs.GetTerm(), hs.GetVote(), len(ents)))
	case len(ents) > 0:
		*s.events = append(*s.events, fmt.Sprintf("n%d save %d entries", s.id, len(ents)))
	}
	return s.MemoryStorage.Save(hs, ents, snap)
}

// TestEarlyMessagesBeforeTheSave follows an election message by message: a candidate's vote
// requests and a new leader's first append leave before its own save (ReadyTo's early
// messages), a voter's answer and a follower's acknowledgement only after theirs, and the
// candidate wins only once its own vote is saved. The driver's handoff runs after the early
// messages and before the save, and only where there are early messages.
func TestEarlyMessagesBeforeTheSave(t *testing.T) {
	var events []string
	cores := map[uint64]*Core{}
	for id := uint64(1); id <= 3; id++ {
		st := NewMemoryStorage()
		if err := Bootstrap(st, []uint64{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		c, err := NewCore(Config{ID: id, Name: SimNodeName(id), Role: clusterdb.RoleMember,
			Storage: savesLog{st, id, &events}, ElectionTick: 10, HeartbeatTick: 1})
		if err != nil {
			t.Fatal(err)
		}
		cores[id] = c
	}
	// ready runs node id's Ready and returns the messages it hands out, early ones first,
	// logging both kinds in events.
	ready := func(id uint64) []*raftpb.Message {
		var msgs []*raftpb.Message
		out, err := cores[id].ReadyTo(func(m *raftpb.Message) {
			events = append(events, fmt.Sprintf("n%d early %v to n%d", id, m.GetType(), m.GetTo()))
			msgs = append(msgs, m)
		}, func() { events = append(events, fmt.Sprintf("n%d handoff", id)) })
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			events = append(events, fmt.Sprintf("n%d after %v to n%d", id, m.GetType(), m.GetTo()))
		}
		return append(msgs, out.Messages...)
	}
	step := func(to uint64, msgs []*raftpb.Message, typ raftpb.MessageType) {
		t.Helper()
		for _, m := range msgs {
			if m.GetTo() == to && m.GetType() == typ {
				if err := cores[to].Step(m); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
		t.Fatalf("no %v to n%d in %d messages", typ, to, len(msgs))
	}
	expect := func(want ...string) {
		t.Helper()
		if !slices.Equal(events, want) {
			t.Fatalf("events:\n%q\nwant:\n%q", events, want)
		}
		events = nil
	}
	for id := range cores {
		ready(id) // the bootstrap's state
	}
	events = nil

	_ = cores[1].rn.Campaign()
	pre := ready(1)
	expect("n1 early MsgPreVote to n2", "n1 early MsgPreVote to n3", "n1 handoff")
	step(2, pre, raftpb.MsgPreVote)
	preResp := ready(2)
	expect("n2 after MsgPreVoteResp to n1")
	step(1, preResp, raftpb.MsgPreVoteResp)
	vote := ready(1)
	expect("n1 early MsgVote to n2", "n1 early MsgVote to n3", "n1 handoff", "n1 save term 1 vote 1, 0 entries")
	if st := cores[1].Status().RaftState; st != "StateCandidate" {
		t.Fatalf("n1 is %s after its pre-vote won, want StateCandidate", st)
	}
	step(2, vote, raftpb.MsgVote)
	voteResp := ready(2)
	expect("n2 save term 1 vote 1, 0 entries", "n2 after MsgVoteResp to n1")
	step(1, voteResp, raftpb.MsgVoteResp)
	app := ready(1)
	if st := cores[1].Status().RaftState; st != "StateLeader" {
		t.Fatalf("n1 is %s after n2's vote, want StateLeader", st)
	}
	// The new term's empty entry goes to both followers before the leader saves it.
	if len(events) < 4 || events[0] != "n1 early MsgApp to n2" || events[1] != "n1 early MsgApp to n3" ||
		events[2] != "n1 handoff" || events[3] != "n1 save 1 entries" {
		t.Fatalf("the new leader's first Ready: %q", events)
	}
	t.Logf("the new leader's first Ready: %q", events)
	events = nil
	step(2, app, raftpb.MsgApp)
	ready(2)
	t.Logf("the follower's: %q", events)
	if len(events) < 2 || events[0] != "n2 save 1 entries" || events[1] != "n2 after MsgAppResp to n1" {
		t.Fatalf("the follower's Ready: %q", events)
	}
}
