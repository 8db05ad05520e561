package replica

import (
	"errors"
	"slices"
	"testing"

	"vigil/control/clusterdb"
)

// harness wraps a Sim for scenario tests: it records every Done and note.
type harness struct {
	t     *testing.T
	s     *Sim
	done  map[[2]uint64]Done
	notes map[uint64][]Note
}

func newHarness(t *testing.T, opts SimOptions) *harness {
	t.Helper()
	s, err := NewSim(opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, s: s, done: map[[2]uint64]Done{}, notes: map[uint64][]Note{}}
	s.OnDone = func(node uint64, d Done) { h.done[[2]uint64{node, d.Seq}] = d }
	s.OnNote = func(node uint64, n Note) { h.notes[node] = append(h.notes[node], n) }
	return h
}

func (h *harness) run(rounds int) {
	h.t.Helper()
	if err := h.s.Run(rounds); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) converge(ids ...uint64) {
	h.t.Helper()
	for range 1000 {
		if ok, _ := h.s.Converged(ids); ok {
			return
		}
		h.run(1)
	}
	_, why := h.s.Converged(ids)
	h.t.Fatalf("no convergence of %v: %s", ids, why)
}

// followers returns the two nodes of a 3-node harness other than lead, in id order: the
// first in line and the second.
func (h *harness) followers(lead uint64) (first, second uint64) {
	var rest []uint64
	for id := uint64(1); id <= 3; id++ {
		if id != lead {
			rest = append(rest, id)
		}
	}
	return rest[0], rest[1]
}

// do runs f on node id and waits for the Done of the sequence number it returns.
func (h *harness) do(id uint64, f func(c *Core) (uint64, error)) (Done, error) {
	h.t.Helper()
	var seq uint64
	err := h.s.Do(id, func(c *Core) error {
		var err error
		seq, err = f(c)
		return err
	})
	if err != nil {
		return Done{}, err
	}
	for range 1000 {
		if d, ok := h.done[[2]uint64{id, seq}]; ok {
			return d, d.Err
		}
		h.run(1)
	}
	h.t.Fatalf("node %d: no outcome for proposal %d", id, seq)
	return Done{}, nil
}

func (h *harness) applyConfig(id uint64, nodes, value int) {
	h.t.Helper()
	d, err := h.do(id, func(c *Core) (uint64, error) {
		return c.Propose(clusterdb.Command{Who: "admin", At: h.s.Now,
			Payload: &clusterdb.ApplyConfig{Config: h.s.Config(nodes, value)}})
	})
	if err != nil || !d.Result.OK() {
		h.t.Fatalf("apply config through node %d: %v %v", id, err, d.Result)
	}
}

// roundsToLeader crashes the leader and counts the rounds until another node leads.
func roundsToLeader(t *testing.T, detect int) int {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 7, ElectionTick: 50, DetectRounds: detect})
	h.converge(1, 2, 3)
	old := h.s.Leader()
	h.s.Crash(old)
	for r := 1; r <= 1000; r++ {
		h.run(1)
		if l := h.s.Leader(); l != 0 && l != old {
			return r
		}
	}
	t.Fatal("no new leader")
	return 0
}

func TestEarlyElection(t *testing.T) {
	// With the heartbeat plane's report (1 round after the crash), a new leader is elected
	// within a few rounds; without it, only after the election timeout (50 ticks).
	early, late := roundsToLeader(t, 1), roundsToLeader(t, 0)
	t.Logf("rounds to a new leader: %d with the heartbeat report, %d without", early, late)
	if early > 5 {
		t.Errorf("early election took %d rounds", early)
	}
	if late < 50 {
		t.Errorf("without reports a leader came after %d rounds, before the election timeout", late)
	}
}

func TestCutOffNodeDoesNotDisturbLeader(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 3, DetectRounds: 1})
	h.converge(1, 2, 3)
	lead := h.s.Leader()
	term := h.s.Node(lead).Core.Status().Term
	cut := uint64(1)
	if lead == 1 {
		cut = 2
	}
	others := slices.DeleteFunc([]uint64{1, 2, 3}, func(id uint64) bool { return id == cut })
	h.s.Partition([]uint64{cut}, others)
	h.run(100) // the cut-off node sees every peer down and campaigns again and again
	if n := h.s.Node(cut); n.Core.Quorate() || !n.Core.View().Stale {
		t.Fatalf("cut-off node %d: quorate %v, view stale %v", cut, n.Core.Quorate(), n.Core.View().Stale)
	}
	if _, err := h.do(cut, func(c *Core) (uint64, error) {
		return c.Propose(clusterdb.Command{Who: "admin", At: h.s.Now, Payload: &clusterdb.RecordEvent{Kind: clusterdb.EventNote, What: "x"}})
	}); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("proposal on the cut-off node: %v, want ErrNoQuorum", err)
	}
	h.s.Partition()
	h.converge(1, 2, 3)
	st := h.s.Node(lead).Core.Status()
	if h.s.Leader() != lead || st.Term != term {
		t.Fatalf("leader %d term %d after healing, was %d term %d", h.s.Leader(), st.Term, lead, term)
	}
}

func TestMembershipChanges(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 1})
	h.converge(1, 2, 3)
	// Before any configuration, nodes register and wait in admin-wait.
	h.run(50)
	for _, m := range h.s.Node(1).Core.State().Members {
		if m.State != clusterdb.NodeAdminWait {
			t.Fatalf("member %+v before a configuration, want admin-wait", m)
		}
	}
	h.applyConfig(2, 4, 1) // names n1..n4
	h.run(50)
	for _, m := range h.s.Node(1).Core.State().Members {
		if m.State != clusterdb.NodeRunning {
			t.Fatalf("member %+v with a configuration, want running", m)
		}
	}

	// Node 5 is not in the configuration: the join is refused, raft unchanged.
	id4, _ := h.s.AddNode()
	id5, _ := h.s.AddNode()
	_, err := h.do(3, func(c *Core) (uint64, error) { return c.AddNode(id5, SimNodeName(id5), clusterdb.RoleMember, "admin") })
	if !errors.Is(err, clusterdb.ErrRejected) {
		t.Fatalf("adding a node the configuration does not name: %v", err)
	}
	if v := h.s.Node(1).Core.Status().Voters; len(v) != 3 {
		t.Fatalf("voters after a refused join: %v", v)
	}
	// Node 4 is: added through a follower, it catches up from the leader and runs.
	follower := uint64(1)
	if h.s.Leader() == 1 {
		follower = 2
	}
	if _, err := h.do(follower, func(c *Core) (uint64, error) {
		return c.AddNode(id4, SimNodeName(id4), clusterdb.RoleMember, "admin")
	}); err != nil {
		t.Fatal(err)
	}
	h.converge(1, 2, 3, 4)
	h.run(50)
	if m, ok := h.s.Node(1).Core.State().Member(4); !ok || m.State != clusterdb.NodeRunning {
		t.Fatalf("node 4's record: %+v %v", m, ok)
	}
	if got := SimValue(h.s.Node(4).Core.State()); got != 1 {
		t.Fatalf("node 4 reads %d", got)
	}

	// Remove node 2: it exits, the others go on with 3 voters.
	if _, err := h.do(3, func(c *Core) (uint64, error) { return c.RemoveNode(2, "decommissioned", "admin") }); err != nil {
		t.Fatal(err)
	}
	h.converge(1, 3, 4)
	h.run(50)
	if st := h.s.Node(2).Core.Status(); st.State != clusterdb.NodeExited {
		t.Fatalf("removed node 2: %+v", st)
	}
	if _, ok := h.s.Node(1).Core.State().Member(2); ok {
		t.Fatal("node 2 still has a membership record")
	}
	h.applyConfig(4, 4, 2)
	if v := h.s.Node(4).Core.Status().Voters; !slices.Equal(v, []uint64{1, 3, 4}) {
		t.Fatalf("voters %v", v)
	}
}

func TestWitnessKeepsTwoNodesRunning(t *testing.T) {
	// Two data nodes and a witness: either data node may die and the other still commits.
	for _, dead := range []uint64{1, 2} {
		h := newHarness(t, SimOptions{Nodes: 3, Seed: dead, Witnesses: []uint64{3}, DetectRounds: 1})
		h.converge(1, 2, 3)
		h.applyConfig(1, 3, 1)
		h.s.Crash(dead)
		alive := 3 - dead
		h.converge(alive, 3)
		h.applyConfig(alive, 3, 2)
		if m, _ := h.s.Node(alive).Core.State().Member(3); m.Role != clusterdb.RoleWitness {
			t.Fatalf("node 3's record: %+v", m)
		}
		h.run(100)
		if m, _ := h.s.Node(alive).Core.State().Member(int(dead)); m.State != clusterdb.NodeFaulted {
			t.Fatalf("dead node %d's record: %+v", dead, m)
		}
	}
}

func TestRestartCatchesUp(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 5, SnapshotEntries: 10, KeepEntries: 2})
	h.converge(1, 2, 3)
	h.applyConfig(1, 3, 0)
	h.s.Crash(3)
	h.converge(1, 2)
	for v := 1; v <= 30; v++ { // enough for snapshots: node 3 gets one on its return
		h.applyConfig(uint64(1+v%2), 3, v)
	}
	if err := h.s.Restart(3); err != nil {
		t.Fatal(err)
	}
	h.converge(1, 2, 3)
	if got := SimValue(h.s.Node(3).Core.State()); got != 30 {
		t.Fatalf("restarted node reads %d, want 30", got)
	}
	if h.s.Stats.Snapshots == 0 {
		t.Fatal("no snapshot was sent")
	}
}
