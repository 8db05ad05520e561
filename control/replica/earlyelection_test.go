package replica

import (
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"vigil/control/clusterdb"
)

// leaderRecorded reports whether c leads and has applied the record of its leadership in its
// current term: the first commit of a new leader.
func leaderRecorded(c *Core) bool {
	if c.Leader() != c.cfg.ID {
		return false
	}
	for _, e := range c.State().Log.Events() {
		if e.Kind == clusterdb.EventLeader && e.Node == int(c.cfg.ID) && strings.Contains(e.What, fmt.Sprintf("term %d;", c.term)) {
			return true
		}
	}
	return false
}

// killLeader kills the leader's daemon (its kernel keeps answering: the heartbeat plane says
// "stalled") with its stream closures arriving fin rounds later (-1: never). It returns the
// rounds until another node leads and why the survivors acted early ("" if they did not).
func killLeader(t *testing.T, detect, fin int) (int, string) {
	t.Helper()
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 11, ElectionTick: 50, DetectRounds: detect})
	h.converge(1, 2, 3)
	old := h.s.Leader()
	h.notes = map[uint64][]Note{}
	h.s.Kill(old, fin)
	for r := 1; r <= 1000; r++ {
		h.run(1)
		if l := h.s.Leader(); l != 0 && l != old {
			why := ""
			for _, n := range h.notes[l] {
				if n.Kind == NoteCampaign && why == "" {
					why = n.Text
				}
			}
			return r, why
		}
	}
	t.Fatal("no new leader")
	return 0, ""
}

func TestKilledLeaderDaemon(t *testing.T) {
	// Stalled and stream closed: the daemon is gone, the election starts on the evidence.
	both, whyBoth := killLeader(t, 1, 1)
	// Stream closed, no heartbeat verdict: the election starts once the leader has been silent
	// for closedSilentTicks after closing.
	finOnly, whyFin := killLeader(t, 0, 1)
	// Stalled, no stream closure (a paused daemon looks the same): no early election; raft's
	// own election timeout (50 ticks) decides.
	stallOnly, whyStall := killLeader(t, 1, -1)
	t.Logf("rounds to a new leader: %d stalled+closed (%s), %d closed only (%s), %d stalled only (%s)",
		both, whyBoth, finOnly, whyFin, stallOnly, whyStall)
	if both > 4 || !strings.Contains(whyBoth, "stalled") {
		t.Errorf("stalled and closed: a new leader after %d rounds (%q), want at most 4, on the stall", both, whyBoth)
	}
	if finOnly > 1+closedSilentTicks+2 || !strings.Contains(whyFin, "silent") {
		t.Errorf("closed only: a new leader after %d rounds (%q), want at most %d, after the silence", finOnly, whyFin, 1+closedSilentTicks+2)
	}
	if stallOnly < 50 || whyStall != "" {
		t.Errorf("stalled only: a new leader after %d rounds (%q), want no early election", stallOnly, whyStall)
	}
}

// A leader that replaces its streams again and again, even while one follower's heartbeat plane
// wrongly reports it stalled, keeps its leadership and its term.
func TestReplacedStreamsDoNotDisturbLeader(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 5, DetectRounds: 1})
	h.converge(1, 2, 3)
	lead := h.s.Leader()
	term := h.s.Node(lead).Core.Status().Term
	campaigns := func() int {
		n := 0
		for _, notes := range h.notes {
			for _, note := range notes {
				if note.Kind == NoteCampaign || note.Kind == NoteLeaderGone {
					n++
				}
			}
		}
		return n
	}
	for range 100 {
		if err := h.s.CloseStreams(lead); err != nil {
			t.Fatal(err)
		}
		h.run(1)
	}
	if n := campaigns(); n != 0 {
		t.Fatalf("%d early elections while the leader replaced its streams", n)
	}
	// One follower wrongly sees the leader stalled, and the leader replaces a stream: that
	// follower forgets it (the evidence says its daemon is gone), but the other follower still
	// hears the leader and refuses the pre-vote.
	follower := lead%3 + 1
	if err := h.s.ReportStalled(follower, lead); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := h.s.CloseStreams(lead); err != nil {
			t.Fatal(err)
		}
		h.run(1)
	}
	h.converge(1, 2, 3)
	if l, st := h.s.Leader(), h.s.Node(lead).Core.Status(); l != lead || st.Term != term {
		t.Fatalf("leader %d term %d, was %d term %d", l, st.Term, lead, term)
	}
	if campaigns() == 0 {
		t.Fatalf("the follower that saw the leader stalled and its stream closed did not act on it")
	}
}

// Killed leaders, one after another, each restarted before the next kill: every time a new
// leader commits (the leadership record) within a few rounds, from any mix of evidence (raft's
// election timeout, 50 rounds, would be too late).
func TestKillLeaderRepeatedly(t *testing.T) {
	for seed := range uint64(20) {
		h := newHarness(t, SimOptions{Nodes: 3, Seed: seed, DetectRounds: 1, ElectionTick: 50, MaxDelay: 1})
		h.converge(1, 2, 3)
		for i := range 10 {
			old := h.s.Leader()
			switch i % 4 {
			case 0:
				h.s.Kill(old, 1)
			case 1:
				h.s.Kill(old, 3)
			case 2:
				// The first in line never sees the stream's end: only the next one acts on
				// the evidence.
				h.s.Kill(old, 1)
				first := uint64(1)
				if first == old {
					first = 2
				}
				h.s.LoseStreamEnd(old, first)
			default:
				h.s.Crash(old)
			}
			h.notes = map[uint64][]Note{}
			rounds := 0
			var trace []string
			for ; rounds < 40; rounds++ {
				h.run(1)
				for _, n := range h.s.Nodes {
					if n.Up {
						st := n.Core.Status()
						trace = append(trace, fmt.Sprintf("round %d node %d: %s term %d leader %d commit %d applied %d", rounds, n.ID, st.RaftState, st.Term, st.Leader, st.Commit, st.Applied))
					}
				}
				if l := h.s.Leader(); l != 0 && l != old && leaderRecorded(h.s.Node(l).Core) {
					break
				}
			}
			if rounds == 40 {
				for id, notes := range h.notes {
					for _, n := range notes {
						trace = append(trace, fmt.Sprintf("node %d: %s %s (leader %d term %d)", id, n.Kind, n.Text, n.Leader, n.Term))
					}
				}
				t.Fatalf("seed %d, kill %d of leader %d: no new leader committed within 40 rounds\n%s", seed, i, old, strings.Join(trace, "\n"))
			}
			if err := h.s.Restart(old); err != nil {
				t.Fatal(err)
			}
			h.converge(1, 2, 3)
		}
	}
}

// A follower that learns of its leader's death after the first in line campaigned answers the
// pre-vote it ignored at once, without waiting for the candidate to ask again.
func TestHeldPreVoteAnsweredWhenLeaderGone(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 2}) // no heartbeat reports: the test makes them
	h.converge(1, 2, 3)
	lead := h.s.Leader()
	first, second := h.followers(lead)
	h.s.Crash(lead)
	if err := h.s.Do(first, func(c *Core) error { c.PeerDown(lead); return nil }); err != nil {
		t.Fatal(err)
	}
	h.run(1) // the pre-vote reaches the second follower, which still believes in the leader
	if l := h.s.Node(second).Core.Leader(); l != lead {
		t.Fatalf("node %d: leader %d, want %d still", second, l, lead)
	}
	if err := h.s.Do(second, func(c *Core) error { c.PeerDown(lead); return nil }); err != nil {
		t.Fatal(err)
	}
	granted := false
	for _, m := range h.s.queue {
		if m.m.GetFrom() == second && m.m.GetTo() == first && m.m.GetType() == raftpb.MsgPreVoteResp && !m.m.GetReject() {
			granted = true
		}
	}
	if !granted {
		t.Fatalf("node %d did not grant the held pre-vote of node %d when it saw the leader go", second, first)
	}
	h.run(2)
	if l := h.s.Leader(); l != first {
		t.Fatalf("leader %d, want %d", l, first)
	}
}

// A vote request that comes while this follower still hears its leader is ignored by raft
// (CheckQuorum's lease); when the leader is then reported gone, the follower answers it at
// once, as it does a held pre-vote. (The candidate got its pre-votes elsewhere: in the bench, a
// leader starved long enough to step down granted it and was killed the next moment; without
// the answer the candidate waited out raft's election timeout for a new campaign.)
func TestHeldVoteAnsweredWhenLeaderGone(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 2}) // no heartbeat reports: the test makes them
	h.converge(1, 2, 3)
	lead := h.s.Leader()
	first, second := h.followers(lead)
	st := h.s.Node(first).Core.cfg.Storage
	last, err := st.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	lastTerm, err := st.Term(last)
	if err != nil {
		t.Fatal(err)
	}
	term := h.s.Node(second).Core.term + 1
	vote := &raftpb.Message{Type: raftpb.MsgVote.Enum(), From: new(first), To: new(second), Term: new(term),
		LogTerm: new(lastTerm), Index: new(last)}
	h.s.Crash(lead)
	if err := h.s.Do(second, func(c *Core) error { return c.Step(vote) }); err != nil {
		t.Fatal(err)
	}
	granted := func() bool {
		for _, m := range h.s.queue {
			if m.m.GetFrom() == second && m.m.GetTo() == first && m.m.GetType() == raftpb.MsgVoteResp && !m.m.GetReject() {
				return true
			}
		}
		return false
	}
	if granted() {
		t.Fatalf("node %d granted a vote while it still heard leader %d", second, lead)
	}
	if err := h.s.Do(second, func(c *Core) error { c.PeerDown(lead); return nil }); err != nil {
		t.Fatal(err)
	}
	if !granted() {
		t.Fatalf("node %d did not grant the held vote request of node %d (term %d) when it saw the leader go", second, first, term)
	}
}

// A message the leader sent before it died, read by a follower after the heartbeat plane
// reported the leader down on every link (the follower's stream reader was held up), does not
// make the follower take the dead leader back: its early election goes on. If the heartbeat
// plane hears the node again (PeerUp: the verdict was false), the message held back counts.
func TestStaleMessageOfLeaderFoundDown(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 2}) // no heartbeat reports: the test makes them
	h.converge(1, 2, 3)
	lead := h.s.Leader()
	first, _ := h.followers(lead)
	term := h.s.Node(first).Core.term
	h.s.Crash(lead)
	heartbeat := func() *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(lead), To: new(first), Term: new(term),
			Commit: new(uint64(0))}
	}
	if err := h.s.Do(first, func(c *Core) error { c.PeerDown(lead); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Do(first, func(c *Core) error { return c.Step(heartbeat()) }); err != nil {
		t.Fatal(err)
	}
	c := h.s.Node(first).Core
	if c.Leader() == lead {
		t.Fatalf("node %d follows leader %d again on a message from before it was found down", first, lead)
	}
	if !c.down[lead] {
		t.Fatalf("node %d withdrew the heartbeat plane's report on leader %d for a stale message", first, lead)
	}
	// The heartbeat plane hears the node again: it was alive after all, and the message held
	// back counts at once, without waiting for the leader's next one.
	if err := h.s.Do(first, func(c *Core) error { c.PeerUp(lead); return nil }); err != nil {
		t.Fatal(err)
	}
	if l := c.Leader(); l != lead {
		t.Fatalf("node %d (raft state %v, leader %d) does not take leader %d back once the heartbeat plane hears it", first, c.raftState, l, lead)
	}
}

// A follower that sees the leader stalled but missed the end of its stream (so it did not
// take the leader for gone) answers the pre-vote of the next in line, who saw both, at once:
// whether the pre-vote comes before the stall report or after it. (Without that it ignores the
// pre-vote while raft's lease runs, and the election waits for raft's election timeout.)
func TestStalledLeaderAndCampaigningVoter(t *testing.T) {
	for _, preVoteFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("prevote-first=%v", preVoteFirst), func(t *testing.T) {
			h := newHarness(t, SimOptions{Nodes: 3, Seed: 3, ElectionTick: 50}) // no heartbeat reports: the test makes them
			h.converge(1, 2, 3)
			lead := h.s.Leader()
			first, second := h.followers(lead)
			h.s.Crash(lead)
			report := func(id uint64, f func(c *Core)) {
				if err := h.s.Do(id, func(c *Core) error { f(c); return nil }); err != nil {
					t.Fatal(err)
				}
			}
			if !preVoteFirst {
				report(first, func(c *Core) { c.PeerStalled(lead) })
			}
			// The second sees the stall and the stream's end: it forgets the leader and, as
			// the first in line does nothing, campaigns 3 ticks later.
			report(second, func(c *Core) { c.PeerStalled(lead); c.StreamClosed(lead) })
			rounds := 0
			for ; rounds < 40; rounds++ {
				if preVoteFirst && rounds == 4 {
					report(first, func(c *Core) { c.PeerStalled(lead) })
				}
				h.run(1)
				if l := h.s.Leader(); l != 0 && l != lead {
					break
				}
			}
			if rounds == 40 {
				t.Fatalf("no new leader within 40 rounds (raft's election timeout is 50); notes of node %d: %+v", first, h.notes[first])
			}
			t.Logf("new leader %d after %d rounds", h.s.Leader(), rounds+1)
		})
	}
}

// The vote request of an early election's candidate is lost (the voter broke its streams to
// the candidate on a false "peer down"): the candidate asks again at once when it sees the
// voter's stream close, and after candidateTicks without that signal; not after raft's
// election timeout (50 rounds here).
func TestLostVoteRequestAskedAgain(t *testing.T) {
	for _, closed := range []bool{true, false} {
		t.Run(fmt.Sprintf("stream-closed=%v", closed), func(t *testing.T) {
			h := newHarness(t, SimOptions{Nodes: 3, Seed: 4, ElectionTick: 50}) // no heartbeat reports: the test makes them
			h.converge(1, 2, 3)
			lead := h.s.Leader()
			first, second := h.followers(lead)
			lost := 0
			h.s.Drop = func(m *raftpb.Message) bool {
				if m.GetType() == raftpb.MsgVote && m.GetFrom() == first && lost == 0 {
					lost++
					return true
				}
				return false
			}
			h.s.Crash(lead)
			for _, id := range []uint64{first, second} {
				if err := h.s.Do(id, func(c *Core) error { c.PeerDown(lead); return nil }); err != nil {
					t.Fatal(err)
				}
			}
			rounds := 0
			for ; rounds < 40; rounds++ {
				h.run(1)
				if l := h.s.Leader(); l != 0 && l != lead {
					break
				}
				if closed && lost == 1 {
					lost++
					if err := h.s.Do(first, func(c *Core) error { c.StreamClosed(second); return nil }); err != nil {
						t.Fatal(err)
					}
				}
			}
			if lost == 0 {
				t.Fatal("no vote request was sent")
			}
			if rounds == 40 {
				t.Fatalf("no new leader within 40 rounds after the vote request was lost; notes of node %d: %+v", first, h.notes[first])
			}
			max := candidateTicks + 3
			if closed {
				max = 3
			}
			if rounds+1 > max {
				t.Fatalf("new leader after %d rounds, want at most %d", rounds+1, max)
			}
			t.Logf("new leader %d after %d rounds", h.s.Leader(), rounds+1)
		})
	}
}

// The end of the gone leader's stream, reaching a candidate of the early election, does not
// make it ask again (no vote is expected from the dead leader): its term stays.
func TestGoneLeaderStreamEndLeavesCandidate(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 4, ElectionTick: 50})
	h.converge(1, 2, 3)
	lead := h.s.Leader()
	first := uint64(1)
	if first == lead {
		first = 2
	}
	h.s.Drop = func(m *raftpb.Message) bool { return m.GetType() == raftpb.MsgVote } // keep it a candidate
	h.s.Crash(lead)
	if err := h.s.Do(first, func(c *Core) error { c.PeerDown(lead); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint64{1, 2, 3} {
		if id != lead && id != first {
			if err := h.s.Do(id, func(c *Core) error { c.PeerDown(lead); return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := h.s.Node(first).Core
	for r := 0; r < 10 && c.Status().RaftState != "StateCandidate"; r++ {
		h.run(1)
	}
	st := c.Status()
	if st.RaftState != "StateCandidate" {
		t.Fatalf("node %d: %s, want a candidate", first, st.RaftState)
	}
	if err := h.s.Do(first, func(c *Core) error { c.StreamClosed(lead); return nil }); err != nil {
		t.Fatal(err)
	}
	if after := c.Status(); after.RaftState != "StateCandidate" || after.Term != st.Term {
		t.Fatalf("the gone leader's stream end moved the candidate from %s term %d to %s term %d", st.RaftState, st.Term, after.RaftState, after.Term)
	}
}

// Both survivors campaign at once (one also took the other for down, as a stalled VM makes
// the heartbeat plane do), and one votes for the other's candidacy: from then on its nudges
// leave that election alone. Campaigning again would raise the term under the candidate it
// just voted for, and a vote it cannot win (the winner's log is longer by then) left the
// cluster leaderless until raft's election timeout: 177 ms in the bench.
func TestNudgeLeavesTheCandidateItVotedFor(t *testing.T) {
	h := newHarness(t, SimOptions{Nodes: 3, Seed: 5, ElectionTick: 50}) // no heartbeat reports: the test makes them
	h.converge(1, 2, 3)
	lead := h.s.Leader()
	first, second := h.followers(lead)
	// Hold what would end the election at once: the pre-votes granted to first (it stays a
	// pre-candidate) and first's vote for second (second stays a candidate).
	hold := true
	h.s.Drop = func(m *raftpb.Message) bool {
		return hold && (m.GetType() == raftpb.MsgPreVoteResp && m.GetTo() == first ||
			m.GetType() == raftpb.MsgVoteResp && m.GetFrom() == first)
	}
	h.s.Crash(lead)
	do := func(id uint64, f func(c *Core)) {
		if err := h.s.Do(id, func(c *Core) error { f(c); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	do(first, func(c *Core) { c.PeerDown(lead) })
	do(second, func(c *Core) { c.PeerDown(lead); c.PeerDown(first) })
	c := h.s.Node(first).Core
	voted := func() bool {
		st := c.rn.BasicStatus()
		return st.GetVote() == second && st.RaftState == raft.StateFollower
	}
	for r := 0; r < 10; r++ {
		h.run(1)
		if voted() {
			break
		}
		do(first, func(c *Core) { c.Nudge() })
	}
	if !voted() {
		t.Fatalf("node %d did not vote for node %d: %+v", first, second, c.rn.BasicStatus())
	}
	term := c.rn.BasicStatus().GetTerm()
	for r := 0; r < 5; r++ {
		do(first, func(c *Core) { c.Nudge() })
		h.run(1)
		if st := c.rn.BasicStatus(); st.RaftState != raft.StateFollower || st.GetTerm() != term {
			t.Fatalf("node %d voted for node %d in term %d, then nudged itself to %s in term %d", first, second, term, st.RaftState, st.GetTerm())
		}
	}
	// The vote was dropped (raft does not ask again), so the election ends at raft's election
	// timeout, with one more term at most (whoever's timer fires first).
	hold = false
	for r := 0; r < 300 && h.s.Leader() == 0; r++ {
		h.run(1)
	}
	l := h.s.Leader()
	if l == 0 || h.s.Node(l).Core.Status().Term > term+1 {
		t.Fatalf("leader %d after the election of term %d", l, term)
	}
}
