package replica

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"vigil/control/clusterdb"
)

// Errors that callers branch on.
var (
	// ErrNoQuorum: this node is not in a partition that holds a raft majority (or knows no
	// leader yet), so nothing can be committed through it now.
	ErrNoQuorum = errors.New("no quorum")
	// ErrTimeout: the proposal was not applied in time. It may still be committed later.
	ErrTimeout = errors.New("not committed in time; the change may or may not take effect")
	// ErrLeaderChanged: the leader changed while the proposal was pending; it may or may not
	// be committed (a new leader's first commit settles it: see Replica.Read).
	ErrLeaderChanged = errors.New("the leader changed before the change was committed; it may or may not take effect")
	// ErrRemoved: this node is no longer a member of the cluster.
	ErrRemoved = errors.New("this node was removed from the cluster")
	// ErrFaulted: this node stopped taking part (a storage failure, or an entry this build
	// cannot apply); see Status.Err.
	ErrFaulted = errors.New("this node is faulted")
	// ErrStopped: the replica was closed.
	ErrStopped = errors.New("replica stopped")
)

// Config configures a Core.
type Config struct {
	ID   uint64 // raft id = node id, 1..63
	Name string // the node's name, as in cluster.yaml
	Role clusterdb.Role
	// Storage holds raft's log; it must have been bootstrapped (Bootstrap) or be empty for
	// a node that joins an existing cluster.
	Storage Storage
	// ElectionTick and HeartbeatTick are raft's timeouts in ticks (defaults 20 and 2).
	ElectionTick, HeartbeatTick int
	// ProposalTicks is how long a proposal or a read may wait to be applied (default
	// 10 * ElectionTick).
	ProposalTicks int
	// SnapshotEntries is the number of applied entries after which a snapshot is taken and
	// the log compacted (default 1000); KeepEntries stay in the log behind the snapshot for
	// followers that lag a little (default 100).
	SnapshotEntries, KeepEntries uint64
	// SeqStart is the first proposal sequence number; it must exceed every number an
	// earlier run of this node used (the daemon uses its incarnation).
	SeqStart uint64
	// Logger receives raft's own log; nil discards it.
	Logger raft.Logger
}

// NoteKind classifies what a Core reports in Output.Notes.
type NoteKind string

// The kinds of notes.
const (
	NoteLeader      NoteKind = "leader"       // the leader changed (Leader, Term)
	NoteQuorum      NoteKind = "quorum"       // quorum gained or lost (Quorate, Text)
	NoteState       NoteKind = "member-state" // this node's membership state changed (State)
	NoteEvent       NoteKind = "event"        // an entry applied to the database logged an event (Event)
	NoteRejected    NoteKind = "rejected"     // an entry was rejected by the database (Err)
	NoteConf        NoteKind = "conf-change"  // the raft configuration changed (Voters)
	NoteFault       NoteKind = "fault"        // this node stopped taking part (Err)
	NoteCampaign    NoteKind = "campaign"     // an early election started after the leader was reported down
	NoteSnapshot    NoteKind = "snapshot"     // a snapshot was taken or restored (Index)
	NoteReconciled  NoteKind = "reconcile"    // the node proposed a membership record change (Text)
	NoteRaftState   NoteKind = "raft-state"   // this node's raft role changed (Text, Term): for traces
	NoteLeaderGone  NoteKind = "leader-gone"  // the leader is gone; this node forgot it and waits for the first in line to campaign
	NoteGoneIgnored NoteKind = "gone-ignored" // a peer reported gone was not taken for the leader (Text says why): for traces
)

// Note is something a Core reports for the driver to log; tests assert on them.
type Note struct {
	Kind    NoteKind
	Term    uint64
	Leader  uint64
	Quorate bool
	State   clusterdb.NodeState
	Voters  []uint64
	Index   uint64
	Event   *clusterdb.Event
	Err     error
	Text    string
}

// Done is the outcome of a proposal or read made on this node.
type Done struct {
	Seq    uint64
	Result clusterdb.Result // for proposals: what Apply did with the entry
	Index  uint64           // for reads: the index the state was read at
	Err    error            // ErrTimeout, ErrNoQuorum, ErrRemoved, ErrFaulted; or Result.Err
}

// Output is what a Core hands back from Ready: messages to send (already safe to send:
// everything they acknowledge is saved), outcomes of this node's proposals and reads, and
// notes.
type Output struct {
	Messages []*raftpb.Message
	Done     []Done
	Notes    []Note
}

// Status is a Core's view of the cluster.
type Status struct {
	ID        uint64              `json:"id"`
	Name      string              `json:"name"`
	Role      clusterdb.Role      `json:"role"`
	State     clusterdb.NodeState `json:"state"` // this node's membership state, computed locally
	RaftState string              `json:"raft_state"`
	Term      uint64              `json:"term"`
	Leader    uint64              `json:"leader"`
	Quorate   bool                `json:"quorate"`
	// Reason says why the node is not quorate, for people.
	Reason        string   `json:"reason,omitempty"`
	Voters        []uint64 `json:"voters"`
	Reachable     []uint64 `json:"reachable"` // voters heard from within an election timeout, and this node
	Applied       uint64   `json:"applied"`
	Commit        uint64   `json:"commit"`
	LastIndex     uint64   `json:"last_index"`
	SnapshotIndex uint64   `json:"snapshot_index"`
	Err           string   `json:"error,omitempty"`
}

// Core is one replica of the cluster database: a raft.RawNode, the clusterdb.State it
// applies committed entries to, and the bookkeeping of proposals, reads, quorum and this
// node's membership record. It is a deterministic state machine: the caller feeds it ticks
// (with the wall-clock time that stamps the commands it proposes itself), messages and
// requests, then calls Ready and sends the messages it returns. It does no I/O except
// through Storage, starts no goroutine and reads no clock. It is not safe for concurrent use.
type Core struct {
	cfg   Config
	rn    *raft.RawNode
	state *clusterdb.State
	conf  *raftpb.ConfState

	tick      uint64    // ticks since start
	now       time.Time // wall-clock time of the last tick
	lastHeard map[uint64]uint64
	received  map[uint64]uint64 // messages received, by peer
	// voterSince is when this node first saw each voter in the configuration.
	voterSince map[uint64]uint64
	down       map[uint64]bool // peers the heartbeat plane reports down on every channel
	// stalled: peers the heartbeat plane reports stalled (their kernel answers, their daemon
	// sends nothing); closedAt: peers that closed their raft stream to this node and have sent
	// nothing since (see StreamClosed).
	stalled  map[uint64]bool
	closedAt map[uint64]closure
	pending  []Note // notes raised outside Ready (PeerDown, Tick), handed out by the next Ready
	// heldVotes: the last pre-vote or vote request of each candidate that raft ignored
	// because this follower still believed in its leader (CheckQuorum's lease), with the tick
	// it came in; answered if the leader turns out gone (see forget).
	heldVotes map[uint64]heldVote
	// heldLead: the last message of the leader found down that Step held back (see Step and
	// PeerUp); dropped when a leader is known.
	heldLead *raftpb.Message

	lead, term   uint64
	lastLead     uint64 // the last leader known (lead is 0 between leaders)
	raftState    raft.StateType
	quorate      bool
	member       clusterdb.NodeState
	caughtUp     bool   // applied what a leader of this term sent
	campaignTil  uint64 // keep campaigning on ticks until this one (early election)
	candidateAt  uint64 // the tick this node became a candidate in its current term
	leadDownAt   uint64 // tick at which the leader was reported down (0: not)
	leadDownTerm uint64 // the term then
	wasVoter     bool
	fault        error
	snapIndex    uint64

	seq       uint64
	proposals map[uint64]uint64 // seq -> deadline tick
	reads     map[uint64]uint64 // seq -> deadline tick
	readAt    map[uint64]uint64 // seq -> read index once known
	// reconcile: the membership record change this node proposed last, and until when it
	// waits for it before proposing again.
	reconcileSeq, reconcileUntil uint64
	leaderNoted                  uint64 // the term whose leadership this node recorded
	// snapshotDue: a configuration change was applied; the next snapshot must hold it, or
	// a node joining now would be sent a snapshot whose configuration lacks it (and raft
	// refuses such a snapshot).
	snapshotDue bool
	leaving     bool   // this node proposed its own removal ...
	leavingSeq  uint64 // ... in this proposal
	// removed: nodes this leader removed, to be told that their removal is committed (raft
	// stops talking to a node once its removal is applied, so it would never learn).
	removed map[uint64]*removal
}

type removal struct{ index, match, until uint64 }

// closure records a peer closing its raft stream: the tick and the number of messages received
// from it by then.
type closure struct{ tick, heard uint64 }

type heldVote struct {
	m    *raftpb.Message
	tick uint64
}

// candidateTicks is how long a candidate of an early election waits for its votes before it
// asks again (a vote round takes a few milliseconds: two fsyncs and a round trip).
const candidateTicks = 3

// closedSilentTicks is how long a peer that closed its raft stream may stay silent before it is
// taken for gone: a daemon that replaces a stream sends on the new one within a tick (the leader
// sends at least a heartbeat every tick).
const closedSilentTicks = 2

var discard = &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}

// NewCore restores a replica from its storage: the database from the storage's snapshot,
// then raft, which hands the committed entries after it to Ready again.
func NewCore(cfg Config) (*Core, error) {
	if cfg.ID == 0 {
		return nil, fmt.Errorf("replica: node id 0")
	}
	if cfg.Role == "" {
		cfg.Role = clusterdb.RoleMember
	}
	if cfg.ElectionTick == 0 {
		cfg.ElectionTick = 20
	}
	if cfg.HeartbeatTick == 0 {
		cfg.HeartbeatTick = 2
	}
	if cfg.ProposalTicks == 0 {
		cfg.ProposalTicks = 10 * cfg.ElectionTick
	}
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = 1000
	}
	if cfg.KeepEntries == 0 {
		cfg.KeepEntries = 100
	}
	if cfg.Logger == nil {
		cfg.Logger = discard
	}
	snap, err := cfg.Storage.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("replica: read snapshot: %w", err)
	}
	state := clusterdb.New()
	if !raft.IsEmptySnap(snap) {
		if state, err = clusterdb.Restore(snap.GetData()); err != nil {
			return nil, fmt.Errorf("replica: snapshot at index %d: %w", snap.GetMetadata().GetIndex(), err)
		}
	}
	_, cs, err := cfg.Storage.InitialState()
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                cfg.ID,
		ElectionTick:      cfg.ElectionTick,
		HeartbeatTick:     cfg.HeartbeatTick,
		Storage:           cfg.Storage,
		Applied:           snap.GetMetadata().GetIndex(),
		MaxSizePerMsg:     1 << 20,
		MaxInflightMsgs:   256,
		CheckQuorum:       true,
		PreVote:           true,
		StepDownOnRemoval: true,
		Logger:            cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("replica: start raft: %w", err)
	}
	c := &Core{
		cfg: cfg, rn: rn, state: state, conf: proto.Clone(cs).(*raftpb.ConfState),
		removed: map[uint64]*removal{}, received: map[uint64]uint64{}, lastHeard: map[uint64]uint64{}, voterSince: map[uint64]uint64{}, down: map[uint64]bool{},
		stalled: map[uint64]bool{}, closedAt: map[uint64]closure{}, heldVotes: map[uint64]heldVote{},
		member: clusterdb.NodeIniting, snapIndex: snap.GetMetadata().GetIndex(),
		seq: cfg.SeqStart, proposals: map[uint64]uint64{}, reads: map[uint64]uint64{}, readAt: map[uint64]uint64{},
	}
	c.wasVoter = c.isVoter(cfg.ID)
	return c, nil
}

func (c *Core) isVoter(id uint64) bool { return slices.Contains(c.conf.GetVoters(), id) }

// Tick advances logical time by one tick; now is the wall-clock time, used only to stamp
// the commands this node proposes by itself (membership records, events).
func (c *Core) Tick(now time.Time) {
	c.tick++
	c.now = now
	if c.fault != nil {
		return
	}
	c.rn.Tick()
	if c.lead == 0 && c.campaignTil >= c.tick && !c.awaitingVotes() {
		// Early election: the pre-vote of the first campaign may have reached peers that had
		// not yet seen the leader go; they ignore it while they believe in the leader. A real
		// candidate is left to its vote: campaigning again would start a new pre-vote and
		// drop the votes on their way (with a vote round longer than a tick, slow fsyncs say,
		// no candidate would ever win). So is the candidate this node voted for (see Nudge).
		_ = c.rn.Campaign()
	} else if c.lead == 0 && c.campaignTil >= c.tick && c.raftState == raft.StateCandidate && c.tick-c.candidateAt >= candidateTicks {
		// A vote request or its answer was lost (a stream broken on the way: see StreamClosed)
		// and raft never asks again before its election timeout: ask again, with a new term.
		_ = c.rn.Campaign()
	}
	// A read request (or its answer) lost on the way to the leader is not re-sent by raft:
	// ask again every election timeout until the read completes or expires.
	for _, seq := range slices.Sorted(maps.Keys(c.reads)) { // in order: the simulation is deterministic
		deadline := c.reads[seq]
		if _, known := c.readAt[seq]; !known && c.lead != 0 {
			if age := c.tick + uint64(c.cfg.ProposalTicks) - deadline; age > 0 && age%uint64(c.cfg.ElectionTick) == 0 {
				c.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, seq))
			}
		}
	}
	// The leader closed its stream and has said nothing since, on any stream, for
	// closedSilentTicks: its daemon is gone (it exited, or was killed while its kernel still
	// answers the heartbeat plane, which then reports it stalled; see StreamClosed).
	if cl, ok := c.closedAt[c.lead]; ok && c.lead != 0 && c.tick-cl.tick >= closedSilentTicks {
		delete(c.closedAt, c.lead)
		if c.received[c.lead] == cl.heard {
			c.leaderGone(c.lead, fmt.Sprintf("leader %d closed its raft stream and has been silent for %d ticks", c.lead, c.tick-cl.tick))
		}
	}
	// Early election of the others: if the first in line did not even start (no newer term
	// reached this node), the next one tries. Once a candidate is known, raft's own election
	// timeout covers it: campaigning into its election would only split the vote.
	if c.leadDownAt != 0 && c.lead == 0 && c.rn.BasicStatus().GetTerm() == c.leadDownTerm {
		if rank := c.rank(); rank > 0 && c.tick-c.leadDownAt == uint64(3*rank) {
			_ = c.rn.Campaign()
		}
	}
}

// Step hands a message from a peer to raft.
func (c *Core) Step(m *raftpb.Message) error {
	if c.fault != nil {
		return c.fault
	}
	from := m.GetFrom()
	if c.down[from] && from == c.lastLead && c.leadDownAt != 0 && c.lead == 0 && m.GetTerm() <= c.leadDownTerm && leads(m.GetType()) {
		// The leader the heartbeat plane found down on every link, speaking as leader in the
		// term it was found down in: a message it sent before it went silent, read late (this
		// node's stream reader was held up). Taken at its word it makes this node follow a
		// dead leader again and cancels the early election until the silence after its
		// stream's end is long enough (a 36.7 ms kill -9 failover in the bench, 2026-12-05).
		// Held back instead (the last one): a leader that is alive after all (the verdict was
		// false) is heard by the heartbeat plane again in a moment, and PeerUp steps it then,
		// ending this node's campaign at once; from a dead leader it is never stepped.
		c.heldLead = m
		return nil
	}
	c.lastHeard[from] = c.tick
	c.received[from]++
	if c.down[from] {
		delete(c.down, from) // it speaks, whatever the heartbeat plane said last
	}
	delete(c.closedAt, from) // on a new stream, or the old one was not its last word
	if from == c.lead && (m.GetType() == raftpb.MsgApp || m.GetType() == raftpb.MsgSnap || m.GetType() == raftpb.MsgHeartbeat) {
		c.caughtUp = true
	}
	if r := c.removed[from]; r != nil && m.GetType() == raftpb.MsgAppResp && !m.GetReject() {
		r.match = max(r.match, m.GetIndex())
	}
	if t := m.GetType(); (t == raftpb.MsgPreVote || t == raftpb.MsgVote) && c.lead != 0 && from != c.lead && c.raftState == raft.StateFollower {
		// Raft ignores it while this node hears its leader (CheckQuorum's lease); if the
		// leader is found gone a moment later, the answer need not wait for the candidate
		// to ask again. A vote request too: a candidate that got its pre-votes elsewhere
		// (from a leader starved long enough to step down, killed a moment later) would
		// otherwise wait out raft's election timeout for a second campaign (a 27 ms kill -9
		// failover in the bench, 2026-12-05).
		c.heldVotes[from] = heldVote{m: m, tick: c.tick}
		if c.stalled[c.lead] && c.isVoter(from) {
			// Another voter campaigns, and the heartbeat plane here reports the leader's
			// daemon silent: the two together say it is gone (this node missed its stream's
			// end, or has not seen it yet). The request is answered at once (forgetLeader
			// steps it) rather than after raft's election timeout; no campaign of this node's
			// own, which would only compete with the one under way.
			c.forgetLeader(fmt.Sprintf("leader %d stalled and voter %d campaigns", c.lead, from))
			return nil
		}
	}
	err := c.rn.Step(m)
	if errors.Is(err, raft.ErrStepPeerNotFound) || errors.Is(err, raft.ErrStepLocalMsg) || errors.Is(err, raft.ErrProposalDropped) {
		return nil // from a removed peer, a local message, or a proposal forwarded to a former leader: ignored
	}
	return err
}

// PeerDown tells the core that the heartbeat plane sees peer id down on every channel. If it
// is the leader, the followers forget it at once (so they grant votes without waiting out
// the election timeout) and the first in line among the voters still up campaigns, with
// PreVote, so a node that is merely cut off cannot disturb a healthy leader. The notes come
// with the next Ready.
func (c *Core) PeerDown(id uint64) {
	c.down[id] = true
	c.leaderGone(id, fmt.Sprintf("leader %d reported down on every link", id))
}

// PeerStalled tells the core that the heartbeat plane reports peer id stalled: its kernel still
// answers, its daemon sends nothing. On its own that proves nothing (a paused or starved daemon
// comes back); together with the peer having closed its raft stream and said nothing since
// (StreamClosed), it is a daemon that exited or was killed: if it led, the early election of
// PeerDown starts at once.
//
// A voter that campaigns while the leader is stalled (its pre-vote came in the last ticks, or
// comes while the report stands) makes this follower take the leader for gone too and answer
// it: see Step.
func (c *Core) PeerStalled(id uint64) {
	c.stalled[id] = true
	if cl, ok := c.closedAt[id]; ok && c.received[id] == cl.heard {
		delete(c.closedAt, id)
		c.leaderGone(id, fmt.Sprintf("leader %d stalled after it closed its raft stream", id))
		return
	}
	if id != c.lead || c.fault != nil || c.raftState != raft.StateFollower {
		return
	}
	for _, from := range slices.Sorted(maps.Keys(c.heldVotes)) {
		if c.tick-c.heldVotes[from].tick <= 2 && c.isVoter(from) {
			c.forgetLeader(fmt.Sprintf("leader %d stalled and voter %d campaigns", id, from))
			return
		}
	}
}

// StreamClosed tells the core that peer id closed a raft stream to this node (its end shut it:
// its daemon exited, or was killed and its kernel closed the socket; or it replaced the
// stream). If the heartbeat plane reports the peer stalled, its daemon is gone: if it led, the
// early election of PeerDown starts at once. Otherwise, if it leads and sends nothing more, on
// any stream, for closedSilentTicks, the election starts then.
// The caller hands it over after every message that stream delivered (a message stepped after
// the closure means the closure was not the peer's last word).
//
// A candidate of an early election whose vote request to a voter, or the answer, may have gone
// with that voter's closed stream (a daemon breaks its streams to a peer its heartbeat plane
// reports down, falsely too, and raft never asks again before its election timeout) asks again
// at once, with a new term (not for the leader found gone: its streams close as it dies).
func (c *Core) StreamClosed(id uint64) {
	if c.fault == nil && c.lead == 0 && c.campaignTil >= c.tick && c.raftState == raft.StateCandidate && c.isVoter(id) &&
		id != c.cfg.ID && id != c.lastLead { // (the gone leader's streams close too: no vote is expected from it)
		_ = c.rn.Campaign()
	}
	if c.stalled[id] || c.down[id] {
		c.leaderGone(id, fmt.Sprintf("leader %d closed its raft stream while the heartbeat plane reports it stalled", id))
		return
	}
	c.closedAt[id] = closure{tick: c.tick, heard: c.received[id]}
}

// leaderGone starts the early election if id leads: this follower forgets it, and the first in
// line among the voters not reported down campaigns (PreVote).
func (c *Core) leaderGone(id uint64, why string) {
	if c.fault != nil || id == 0 || id != c.lead || c.raftState != raft.StateFollower || !c.isVoter(c.cfg.ID) {
		// On the leader a follower going down is routine; anywhere else it is what a slow
		// failover's trace needs to see (peers go down rarely: no flood).
		if id != 0 && c.lead != c.cfg.ID {
			c.pending = append(c.pending, Note{Kind: NoteGoneIgnored, Term: c.term, Leader: c.lead,
				Text: fmt.Sprintf("%s; not acted on: leader %d, raft state %v, voter %v, faulted %v",
					why, c.lead, c.raftState, c.isVoter(c.cfg.ID), c.fault != nil)})
		}
		return
	}
	c.forget(id)
	if c.rank() == 0 {
		_ = c.rn.Campaign()
		c.campaignTil = c.tick + uint64(c.cfg.ElectionTick)
		c.pending = append(c.pending, Note{Kind: NoteCampaign, Term: c.term, Leader: id,
			Text: why + "; campaigning at once"})
	} else {
		c.pending = append(c.pending, Note{Kind: NoteLeaderGone, Term: c.term, Leader: id,
			Text: why + "; forgot it, the first in line campaigns"})
	}
}

// forget makes this follower forget its leader id: it answers the pre-votes and vote requests
// that came in the last ticks while it still believed in the leader (the first in line
// campaigned as soon as it saw the leader go), and the next in line campaigns later if no one
// did (see Tick). Answering a request late is answering a request delayed in the network,
// which raft allows: raft checks its term and log against this node's state now.
func (c *Core) forget(id uint64) {
	_ = c.rn.ForgetLeader()
	for _, from := range slices.Sorted(maps.Keys(c.heldVotes)) {
		if h := c.heldVotes[from]; from != id && c.tick-h.tick <= 2 {
			_ = c.rn.Step(h.m)
		}
	}
	clear(c.heldVotes)
	c.leadDownAt, c.leadDownTerm = c.tick, c.term
}

// forgetLeader forgets the leader, stalled while another voter campaigns (see Step), and
// answers that voter's pre-vote; this node does not campaign itself.
func (c *Core) forgetLeader(why string) {
	id := c.lead
	c.forget(id)
	c.pending = append(c.pending, Note{Kind: NoteLeaderGone, Term: c.term, Leader: id,
		Text: why + "; forgot it and answered the pre-vote"})
}

// Nudge repeats an early election's campaign between ticks, while this node is the one that
// campaigns and no leader is known yet: a peer that had not yet seen the leader go ignored the
// last pre-vote. It reports whether the driver should nudge again. A real candidate is left to
// its vote (campaigning again would raise the term), and so is the candidate this node voted
// for in the current term: where both survivors campaigned (one took the other for down too)
// and this node's pre-vote lost the race, a new campaign would raise the term under the
// candidate it just voted for, and could not win (that candidate's log grows the moment it
// leads), leaving the cluster leaderless until raft's election timeout.
func (c *Core) Nudge() bool {
	if c.fault != nil || c.lead != 0 || c.campaignTil < c.tick {
		return false
	}
	if !c.awaitingVotes() {
		_ = c.rn.Campaign()
	}
	return true
}

// awaitingVotes reports whether an election of the current term is under way that this node
// must not disturb: it is the candidate, or it voted for another node's candidacy.
func (c *Core) awaitingVotes() bool {
	st := c.rn.BasicStatus()
	return st.RaftState == raft.StateCandidate ||
		st.RaftState == raft.StateFollower && st.GetVote() != 0 && st.GetVote() != c.cfg.ID
}

// PeerUp withdraws a PeerDown or a PeerStalled: the heartbeat plane hears the peer's daemon.
func (c *Core) PeerUp(id uint64) {
	wasDown := c.down[id]
	delete(c.down, id)
	delete(c.stalled, id)
	if m := c.heldLead; m != nil && m.GetFrom() == id {
		// The leader found down is alive: its message held back in Step counts now (raft
		// checks its term against this node's).
		c.heldLead = nil
		if c.fault == nil && c.lead == 0 {
			_ = c.rn.Step(m)
		}
	}
	// A candidate of an early election whose vote request may have been lost to this peer
	// (the daemon breaks the streams of a peer reported down; raft never sends a vote request
	// again) asks again at once rather than after raft's election timeout.
	if wasDown && c.fault == nil && c.lead == 0 && c.campaignTil >= c.tick && c.isVoter(id) &&
		c.rn.BasicStatus().RaftState == raft.StateCandidate {
		_ = c.rn.Campaign()
	}
}

// Campaigning reports whether this node campaigns in an early election that has no leader yet
// (the driver then calls Nudge between ticks).
func (c *Core) Campaigning() bool {
	return c.fault == nil && c.lead == 0 && c.campaignTil >= c.tick
}

// rank is this node's place among the voters not reported down, by id, leaving out the
// leader found gone: 0 campaigns first. (The gone leader is not marked down: only the
// heartbeat plane's reports are, and they are withdrawn when it hears the node again, while
// a deposed leader may never send this follower anything.)
func (c *Core) rank() int {
	r := 0
	for _, v := range c.conf.GetVoters() {
		if v < c.cfg.ID && !c.down[v] && !(c.leadDownAt != 0 && v == c.lastLead) {
			r++
		}
	}
	return r
}

func (c *Core) newSeq() uint64 {
	c.seq++
	return c.seq
}

// Propose proposes a command and returns its sequence number; its outcome comes in a Done
// of a later Output. Proposals on a follower are forwarded to the leader by raft. With no
// leader known the proposal fails at once with ErrNoQuorum.
func (c *Core) Propose(cmd clusterdb.Command) (uint64, error) {
	if err := c.usable(); err != nil {
		return 0, err
	}
	if cmd.At.IsZero() {
		cmd.At = c.now
	}
	data, err := clusterdb.Encode(cmd)
	if err != nil {
		return 0, err
	}
	if c.lead == 0 {
		return 0, c.noQuorum()
	}
	seq := c.newSeq()
	if err := c.rn.Propose(frame(c.cfg.ID, seq, data)); err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			return 0, c.noQuorum()
		}
		return 0, fmt.Errorf("propose: %w", err)
	}
	c.proposals[seq] = c.tick + uint64(c.cfg.ProposalTicks)
	return seq, nil
}

// AddNode proposes a raft configuration change that adds node id as a voter, carrying the
// database's NodeJoin: both take effect in one entry, or neither (the database refuses a
// node the configuration does not know, and the raft change is then cancelled).
func (c *Core) AddNode(id uint64, name string, role clusterdb.Role, who string) (uint64, error) {
	return c.confChange(raftpb.ConfChangeAddNode, id, clusterdb.Command{Who: who,
		Payload: &clusterdb.NodeJoin{ID: int(id), Name: name, Role: role}})
}

// RemoveNode proposes a raft configuration change that removes node id, carrying the
// database's NodeLeave.
func (c *Core) RemoveNode(id uint64, reason, who string) (uint64, error) {
	return c.confChange(raftpb.ConfChangeRemoveNode, id, clusterdb.Command{Who: who,
		Payload: &clusterdb.NodeLeave{ID: int(id), Reason: reason}})
}

func (c *Core) confChange(t raftpb.ConfChangeType, id uint64, cmd clusterdb.Command) (uint64, error) {
	if err := c.usable(); err != nil {
		return 0, err
	}
	if id == 0 || id > clusterdb.MaxNodeID {
		return 0, fmt.Errorf("%d is not a valid node id (1..%d)", id, clusterdb.MaxNodeID)
	}
	switch {
	case t == raftpb.ConfChangeAddNode && c.isVoter(id):
		return 0, fmt.Errorf("node %d is already a voting member", id)
	case t == raftpb.ConfChangeRemoveNode && !c.isVoter(id):
		return 0, fmt.Errorf("node %d is not a member", id)
	case t == raftpb.ConfChangeRemoveNode && len(c.conf.GetVoters()) == 1:
		return 0, fmt.Errorf("node %d is the last member; a cluster cannot remove its last node", id)
	}
	if cmd.At.IsZero() {
		cmd.At = c.now
	}
	data, err := clusterdb.Encode(cmd)
	if err != nil {
		return 0, err
	}
	if c.lead == 0 {
		return 0, c.noQuorum()
	}
	seq := c.newSeq()
	cc := &raftpb.ConfChange{Type: t.Enum(), NodeId: new(id), Context: frame(c.cfg.ID, seq, data)}
	if err := c.rn.ProposeConfChange(cc); err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			return 0, c.noQuorum()
		}
		return 0, fmt.Errorf("propose configuration change: %w", err)
	}
	c.proposals[seq] = c.tick + uint64(c.cfg.ProposalTicks)
	if t == raftpb.ConfChangeRemoveNode && id == c.cfg.ID {
		c.leaving, c.leavingSeq = true, seq
	}
	return seq, nil
}

// Read starts a linearizable read (raft's ReadIndex): its Done says the index at which the
// local State reflects every change committed before the read began; read the State then.
func (c *Core) Read() (uint64, error) {
	if err := c.usable(); err != nil {
		return 0, err
	}
	if c.lead == 0 {
		return 0, c.noQuorum()
	}
	seq := c.newSeq()
	c.rn.ReadIndex(binary.BigEndian.AppendUint64(nil, seq))
	c.reads[seq] = c.tick + uint64(c.cfg.ProposalTicks)
	return seq, nil
}

// ReportUnreachable tells raft a message to id could not be sent.
func (c *Core) ReportUnreachable(id uint64) { c.rn.ReportUnreachable(id) }

// ReportSnapshot tells raft whether a snapshot message to id was sent.
func (c *Core) ReportSnapshot(id uint64, ok bool) {
	st := raft.SnapshotFinish
	if !ok {
		st = raft.SnapshotFailure
	}
	c.rn.ReportSnapshot(id, st)
}

func (c *Core) usable() error {
	switch {
	case c.fault != nil:
		return fmt.Errorf("%w: %v", ErrFaulted, c.fault)
	case c.member == clusterdb.NodeExited:
		return ErrRemoved
	}
	return nil
}

func (c *Core) noQuorum() error {
	return fmt.Errorf("%w: %s", ErrNoQuorum, c.reason())
}

// Ready handles everything raft has ready, in the order raft's doc.go asks for: save the
// HardState, entries and snapshot; (the messages are returned, to be sent after Save);
// apply the snapshot and the committed entries to the State; advance. It then settles
// proposals, reads, quorum and this node's membership record. An error means the storage
// failed or an entry cannot be applied by this build: the core is faulted and takes no
// further part (it keeps serving stale reads).
//
// Ready is ReadyTo(nil, nil): every message waits for the save.
func (c *Core) Ready() (Output, error) { return c.ReadyTo(nil, nil) }

// ReadyTo is Ready, but hands early, before each save, the messages raft lets go before its
// state is durable: all but the answers (MsgAppResp, MsgVoteResp, MsgPreVoteResp), which
// acknowledge what the save makes durable and stay in Output.Messages. So a new candidate's
// vote requests and a leader's appends travel while its own fsync runs: the fsync overlaps
// the round trip to the peers (and their fsyncs) instead of preceding it (the Raft thesis,
// 10.2.1; raft's msgs and msgsAfterAppend, which its asynchronous storage mode sends the same
// way). A slow fsync still holds the node back: its own vote and append count only once
// saved. It is safe because raft counts this node's own vote and its own append only
// when they come back to it on Advance, after the save: nothing is decided on state a crash
// could lose. A crash between the early messages and the save leaves peers holding a vote
// request or entries this node forgot, which raft allows (a restarted node may campaign
// again in a term it forgot, and a follower's uncommitted entries may be overwritten).
//
// early runs between raft's Ready and its Advance: it must only queue the message, not call
// back into the Core. handoff, if set, runs once after a Ready's early messages, before its
// save: the driver lets the goroutines that write them run there (a goroutine blocked in an
// fsync keeps its scheduler P, so messages merely queued would wait for the fsync after all).
func (c *Core) ReadyTo(early func(*raftpb.Message), handoff func()) (Output, error) {
	var out Output
	out.Notes, c.pending = c.pending, nil
	if c.fault != nil {
		return out, c.fault
	}
	// Settle first: a leadership won in the Step before this Ready proposes its record now, so
	// that the record goes out with the new leader's first append (one fsync, one round trip).
	// Then again after each Ready, for what the applied entries changed, until raft has
	// nothing more.
	for {
		c.settle(&out)
		if !c.rn.HasReady() {
			break
		}
		if err := c.readyOnce(&out, early, handoff); err != nil {
			return out, err
		}
	}
	if err := c.maybeSnapshot(&out); err != nil {
		return out, c.fail(&out, err)
	}
	return out, nil
}

// readyOnce handles one raft Ready: hand early the messages that may go before the save
// (if early is set) and call handoff after them, save, collect the other messages, apply,
// advance.
func (c *Core) readyOnce(out *Output, early func(*raftpb.Message), handoff func()) error {
	rd := c.rn.Ready()
	after := rd.Messages
	if early != nil {
		after = nil
		handed := false
		for _, m := range rd.Messages {
			if ackOfSave(m.GetType()) {
				after = append(after, m)
			} else {
				early(m)
				handed = true
			}
		}
		if handed && handoff != nil {
			handoff()
		}
	}
	if err := c.cfg.Storage.Save(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
		return c.fail(out, fmt.Errorf("save raft state: %w", err))
	}
	out.Messages = append(out.Messages, after...)
	if !raft.IsEmptySnap(rd.Snapshot) {
		st, err := clusterdb.Restore(rd.Snapshot.GetData())
		if err != nil {
			return c.fail(out, fmt.Errorf("restore snapshot at index %d: %w", rd.Snapshot.GetMetadata().GetIndex(), err))
		}
		c.state = st
		c.conf = proto.Clone(rd.Snapshot.GetMetadata().GetConfState()).(*raftpb.ConfState)
		c.snapIndex = rd.Snapshot.GetMetadata().GetIndex()
		out.Notes = append(out.Notes, Note{Kind: NoteSnapshot, Index: c.snapIndex, Text: "restored a snapshot from the leader"})
	}
	for _, e := range rd.CommittedEntries {
		if err := c.apply(e, out); err != nil {
			return c.fail(out, err)
		}
	}
	for _, rs := range rd.ReadStates {
		if len(rs.RequestCtx) == 8 {
			seq := binary.BigEndian.Uint64(rs.RequestCtx)
			if _, ok := c.reads[seq]; ok {
				c.readAt[seq] = rs.Index
			}
		}
	}
	c.rn.Advance(rd)
	return nil
}

// leads reports whether a message of type t is one only a leader sends, which makes a
// follower take its sender for the leader.
func leads(t raftpb.MessageType) bool {
	switch t {
	case raftpb.MsgApp, raftpb.MsgHeartbeat, raftpb.MsgSnap:
		return true
	}
	return false
}

// ackOfSave reports whether a message of type t answers a peer with what this node's save
// makes durable (an append, a vote): it must wait for the save. These are the types raft
// itself holds back until the save (its msgsAfterAppend).
func ackOfSave(t raftpb.MessageType) bool {
	switch t {
	case raftpb.MsgAppResp, raftpb.MsgVoteResp, raftpb.MsgPreVoteResp:
		return true
	}
	return false
}

func (c *Core) fail(out *Output, err error) error {
	c.fault = err
	c.setMember(out, clusterdb.NodeFaulted)
	out.Notes = append(out.Notes, Note{Kind: NoteFault, Err: err})
	for seq := range c.proposals {
		out.Done = append(out.Done, Done{Seq: seq, Err: fmt.Errorf("%w: %v", ErrFaulted, err)})
	}
	for seq := range c.reads {
		out.Done = append(out.Done, Done{Seq: seq, Err: fmt.Errorf("%w: %v", ErrFaulted, err)})
	}
	clear(c.proposals)
	clear(c.reads)
	clear(c.readAt)
	return err
}

// apply applies one committed entry.
func (c *Core) apply(e *raftpb.Entry, out *Output) error {
	switch e.GetType() {
	case raftpb.EntryNormal:
		if len(e.GetData()) == 0 {
			return nil // a new leader's empty entry
		}
		proposer, seq, cmd := unframe(e.GetData())
		res := c.state.Apply(e.GetIndex(), cmd)
		return c.applied(proposer, seq, res, out)
	case raftpb.EntryConfChange:
		var cc raftpb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
			return fmt.Errorf("entry %d: decode configuration change: %w", e.GetIndex(), err)
		}
		var res clusterdb.Result
		proposer, seq := uint64(0), uint64(0)
		if len(cc.GetContext()) > 0 {
			var cmd []byte
			proposer, seq, cmd = unframe(cc.GetContext())
			res = c.state.Apply(e.GetIndex(), cmd)
			if res.Status == clusterdb.StatusNeedsUpgrade {
				return c.applied(proposer, seq, res, out)
			}
			// A node the database refuses to add is not added to raft either. A removal
			// goes ahead even if the database had no record of the node.
			if !res.OK() && cc.GetType() == raftpb.ConfChangeAddNode {
				cc.NodeId = new(uint64(0))
			}
		}
		if id := cc.GetNodeId(); cc.GetType() == raftpb.ConfChangeRemoveNode && id != c.cfg.ID && c.raftState == raft.StateLeader {
			c.removed[id] = &removal{index: e.GetIndex(), match: c.rn.Status().Progress[id].Match,
				until: c.tick + uint64(10*c.cfg.ElectionTick)}
		}
		c.conf = c.rn.ApplyConfChange(&cc)
		c.snapshotDue = true
		out.Notes = append(out.Notes, Note{Kind: NoteConf, Index: e.GetIndex(), Voters: slices.Clone(c.conf.GetVoters()),
			Text: fmt.Sprintf("%s node %d", cc.GetType(), cc.GetNodeId())})
		if c.isVoter(c.cfg.ID) {
			c.wasVoter = true
		}
		if len(cc.GetContext()) > 0 {
			return c.applied(proposer, seq, res, out)
		}
		return nil
	default:
		return fmt.Errorf("entry %d: unexpected entry type %v", e.GetIndex(), e.GetType())
	}
}

func (c *Core) applied(proposer, seq uint64, res clusterdb.Result, out *Output) error {
	switch res.Status {
	case clusterdb.StatusNeedsUpgrade:
		return res.Err
	case clusterdb.StatusRejected:
		out.Notes = append(out.Notes, Note{Kind: NoteRejected, Index: res.Index, Err: res.Err})
	case clusterdb.StatusApplied:
		if res.Event != nil {
			ev := *res.Event
			out.Notes = append(out.Notes, Note{Kind: NoteEvent, Index: res.Index, Event: &ev})
		}
	}
	if proposer == c.cfg.ID {
		if _, ok := c.proposals[seq]; ok {
			delete(c.proposals, seq)
			out.Done = append(out.Done, Done{Seq: seq, Result: res, Index: res.Index, Err: res.Err})
		}
		if seq == c.reconcileSeq {
			c.reconcileUntil = 0 // settled: the next reconcile may go at once
		}
	}
	return nil
}

// settle updates leader, quorum and membership state after Ready, finishes reads and
// expires proposals.
func (c *Core) settle(out *Output) {
	bs := c.rn.BasicStatus()
	leaderChanged := false
	if bs.Lead != c.lead || bs.GetTerm() != c.term || bs.RaftState != c.raftState {
		// Only another leader settles it: a leader forgotten (ForgetLeader after a report of
		// its death, or an election under way) may come back with the proposals intact.
		leaderChanged = bs.Lead != 0 && c.lastLead != 0 && bs.Lead != c.lastLead
		if bs.Lead != 0 {
			c.lastLead = bs.Lead
		}
		if bs.Lead != c.lead && bs.Lead != 0 {
			out.Notes = append(out.Notes, Note{Kind: NoteLeader, Term: bs.GetTerm(), Leader: bs.Lead,
				Text: fmt.Sprintf("node %d is the leader in term %d", bs.Lead, bs.GetTerm())})
			c.caughtUp = bs.Lead == c.cfg.ID
			c.campaignTil, c.leadDownAt = 0, 0
			clear(c.heldVotes)
			c.heldLead = nil
			// A membership record proposed under the old leader may be lost with it: the
			// next one (the new leader's own record first) goes at once.
			c.reconcileUntil = 0
		}
		if bs.Lead == 0 && c.lead != 0 {
			out.Notes = append(out.Notes, Note{Kind: NoteLeader, Term: bs.GetTerm(), Text: "no leader"})
		}
		if bs.RaftState == raft.StateCandidate && (c.raftState != raft.StateCandidate || bs.GetTerm() != c.term) {
			c.candidateAt = c.tick
		}
		if bs.RaftState != c.raftState {
			out.Notes = append(out.Notes, Note{Kind: NoteRaftState, Term: bs.GetTerm(), Text: bs.RaftState.String()})
		}
		c.lead, c.term, c.raftState = bs.Lead, bs.GetTerm(), bs.RaftState
	}
	if q := c.computeQuorate(); q != c.quorate {
		c.quorate = q
		text := "quorum: " + c.reachableText()
		if !q {
			text = "no quorum: " + c.reason()
		}
		out.Notes = append(out.Notes, Note{Kind: NoteQuorum, Quorate: q, Term: c.term, Leader: c.lead, Text: text})
	}
	if leaderChanged {
		// Proposals forwarded to the old leader, or in this old leader's log, may be lost:
		// say so now rather than at the timeout.
		err := ErrLeaderChanged
		if !c.quorate {
			err = fmt.Errorf("%w (%s): %w", ErrNoQuorum, c.reason(), ErrLeaderChanged)
		}
		for seq := range c.proposals {
			out.Done = append(out.Done, Done{Seq: seq, Err: err})
			delete(c.proposals, seq)
		}
	}
	for _, v := range c.conf.GetVoters() {
		if _, ok := c.voterSince[v]; !ok {
			c.voterSince[v] = c.tick
		}
	}
	if c.isVoter(c.cfg.ID) {
		c.wasVoter = true
	}
	if _, pending := c.proposals[c.leavingSeq]; c.leaving && !pending && c.isVoter(c.cfg.ID) {
		c.leaving = false // the removal failed
	}
	if c.wasVoter && !c.isVoter(c.cfg.ID) && !slices.Contains(c.conf.GetLearners(), c.cfg.ID) {
		c.setMember(out, clusterdb.NodeExited)
	} else {
		c.setMember(out, c.localState())
	}

	applied := bs.Applied
	for seq, idx := range c.readAt {
		if applied >= idx {
			out.Done = append(out.Done, Done{Seq: seq, Index: applied})
			delete(c.readAt, seq)
			delete(c.reads, seq)
		}
	}
	for seq, deadline := range c.proposals {
		if c.tick >= deadline || c.member == clusterdb.NodeExited {
			out.Done = append(out.Done, Done{Seq: seq, Err: c.expired()})
			delete(c.proposals, seq)
		}
	}
	for seq, deadline := range c.reads {
		if c.tick >= deadline || c.member == clusterdb.NodeExited {
			out.Done = append(out.Done, Done{Seq: seq, Err: c.expired()})
			delete(c.reads, seq)
			delete(c.readAt, seq)
		}
	}
	slices.SortFunc(out.Done, func(a, b Done) int { return cmp.Compare(a.Seq, b.Seq) })
	c.notifyRemoved(out)
	c.reconcile(out)
}

// notifyRemoved tells each node this leader removed that its removal is committed, once the
// node is known to hold the entry: a heartbeat of the current term carrying that commit index,
// which the node's raft accepts (it still counts this node as its leader); it then applies its
// own removal and exits.
func (c *Core) notifyRemoved(out *Output) {
	for _, id := range slices.Sorted(maps.Keys(c.removed)) {
		r := c.removed[id]
		switch {
		case c.raftState != raft.StateLeader || c.tick > r.until:
			delete(c.removed, id)
		case r.match >= r.index:
			out.Messages = append(out.Messages, &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: new(id),
				From: new(c.cfg.ID), Term: new(c.term), Commit: new(r.index)})
			delete(c.removed, id)
		}
	}
}

func (c *Core) expired() error {
	switch {
	case c.member == clusterdb.NodeExited:
		return ErrRemoved
	case !c.quorate:
		return fmt.Errorf("%w (%s); the change may still be committed if a leader had received it", ErrNoQuorum, c.reason())
	}
	return ErrTimeout
}

func (c *Core) setMember(out *Output, s clusterdb.NodeState) {
	if s != c.member {
		c.member = s
		out.Notes = append(out.Notes, Note{Kind: NoteState, State: s, Text: string(s)})
	}
}

// localState is the VCS-style state of this node as it sees itself.
func (c *Core) localState() clusterdb.NodeState {
	switch {
	case c.fault != nil:
		return clusterdb.NodeFaulted
	case c.leaving:
		return clusterdb.NodeLeaving
	case c.tick == 0 && c.lead == 0:
		return clusterdb.NodeIniting
	case c.lead == 0:
		return clusterdb.NodeDiscovering
	case !c.caughtUp || !c.wasVoter:
		return clusterdb.NodeBuilding
	case !c.state.HasValidConfig():
		return clusterdb.NodeAdminWait
	}
	return clusterdb.NodeRunning
}

// heard reports whether voter v was heard from within an election timeout (this node: always).
func (c *Core) heard(v uint64) bool {
	if v == c.cfg.ID {
		return true
	}
	t, ok := c.lastHeard[v]
	return ok && c.tick-t <= uint64(c.cfg.ElectionTick) && !c.down[v]
}

func (c *Core) reachable() []uint64 {
	var out []uint64
	for _, v := range c.conf.GetVoters() {
		if c.heard(v) {
			out = append(out, v)
		}
	}
	return out
}

func (c *Core) computeQuorate() bool {
	if c.fault != nil || !c.isVoter(c.cfg.ID) {
		return false
	}
	switch {
	case c.lead == c.cfg.ID:
		return len(c.reachable()) > len(c.conf.GetVoters())/2
	case c.lead != 0:
		// A follower cannot see the leader's majority, but the heartbeat plane tells it who
		// is up: a leader cut off with it keeps sending until CheckQuorum deposes it.
		return c.heard(c.lead) && c.upVoters() > len(c.conf.GetVoters())/2
	}
	return false
}

// upVoters counts the voters the heartbeat plane does not report down, this node included.
func (c *Core) upVoters() int {
	n := 0
	for _, v := range c.conf.GetVoters() {
		if !c.down[v] {
			n++
		}
	}
	return n
}

func (c *Core) reachableText() string {
	return fmt.Sprintf("%d of %d voters reachable", len(c.reachable()), len(c.conf.GetVoters()))
}

// reason says why the node is not quorate ("" when it is).
func (c *Core) reason() string {
	switch {
	case c.fault != nil:
		return "faulted: " + c.fault.Error()
	case c.member == clusterdb.NodeExited:
		return "this node was removed from the cluster"
	case len(c.conf.GetVoters()) == 0:
		return "this node is not a member yet (waiting for the leader of an existing cluster to add it)"
	case c.lead == 0:
		return "no leader known, " + c.reachableText()
	case c.lead != c.cfg.ID && !c.heard(c.lead):
		return fmt.Sprintf("leader %d not heard from, %s", c.lead, c.reachableText())
	case c.lead != c.cfg.ID && c.upVoters() <= len(c.conf.GetVoters())/2:
		return fmt.Sprintf("only %d of %d voters are up", c.upVoters(), len(c.conf.GetVoters()))
	case c.lead == c.cfg.ID && !c.computeQuorate():
		return "leader without a majority, " + c.reachableText()
	}
	return ""
}

// reconcile keeps the database's membership records true: this node registers itself when
// it is a voter without a record, and records its state once it is built; the leader marks
// voters it cannot hear from as faulted, and records its leadership in the event log. At
// most one such proposal is in flight per node.
func (c *Core) reconcile(out *Output) {
	if !c.quorate || c.tick < c.reconcileUntil || c.now.IsZero() {
		return
	}
	propose := func(p clusterdb.Payload, text string) bool {
		seq, err := c.proposeInternal(clusterdb.Command{Who: "vigild@" + c.cfg.Name, Payload: p})
		if err != nil {
			return false
		}
		c.reconcileSeq = seq
		c.reconcileUntil = c.tick + uint64(2*c.cfg.ElectionTick)
		out.Notes = append(out.Notes, Note{Kind: NoteReconciled, Text: text})
		return true
	}
	id := int(c.cfg.ID)
	if c.lead == c.cfg.ID && c.leaderNoted != c.term {
		if propose(&clusterdb.RecordEvent{Kind: clusterdb.EventLeader, Node: id,
			What: fmt.Sprintf("node %d (%s) is the leader in term %d; quorum: %s", id, c.cfg.Name, c.term, c.reachableText())},
			"recording leadership") {
			c.leaderNoted = c.term
		}
		return
	}
	m, ok := c.state.Member(id)
	switch {
	case c.isVoter(c.cfg.ID) && (!ok || m.State == clusterdb.NodeExited):
		propose(&clusterdb.NodeJoin{ID: id, Name: c.cfg.Name, Role: c.cfg.Role}, "registering this node")
		return
	case ok && m.State != c.member && (c.member == clusterdb.NodeRunning || c.member == clusterdb.NodeAdminWait):
		propose(&clusterdb.SetNodeState{ID: id, State: c.member}, fmt.Sprintf("recording state %s", c.member))
		return
	}
	if c.lead != c.cfg.ID {
		return
	}
	for _, m := range c.state.Members {
		v := uint64(m.ID)
		if v == c.cfg.ID || !c.isVoter(v) || m.State == clusterdb.NodeFaulted || m.State == clusterdb.NodeExited {
			continue
		}
		last, heard := c.lastHeard[v]
		if !heard {
			last = c.voterSince[v]
		}
		if c.down[v] || c.tick-last > uint64(3*c.cfg.ElectionTick) {
			propose(&clusterdb.SetNodeState{ID: m.ID, State: clusterdb.NodeFaulted, Reason: "not reachable from the leader"},
				fmt.Sprintf("marking node %d faulted", m.ID))
			return
		}
	}
}

// proposeInternal proposes without a waiter: Done for it is dropped by the driver.
func (c *Core) proposeInternal(cmd clusterdb.Command) (uint64, error) {
	return c.Propose(cmd)
}

// maybeSnapshot takes a snapshot once SnapshotEntries entries were applied since the last one,
// and compacts the log up to KeepEntries behind it.
func (c *Core) maybeSnapshot(out *Output) error {
	applied := c.rn.BasicStatus().Applied
	if applied <= c.snapIndex || applied < c.snapIndex+c.cfg.SnapshotEntries && !c.snapshotDue {
		return nil
	}
	c.snapshotDue = false
	data, err := c.state.Snapshot()
	if err != nil {
		return err
	}
	if _, err := c.cfg.Storage.CreateSnapshot(applied, c.conf, data); err != nil {
		return fmt.Errorf("create snapshot at %d: %w", applied, err)
	}
	c.snapIndex = applied
	if applied > c.cfg.KeepEntries {
		first, _ := c.cfg.Storage.FirstIndex()
		if to := applied - c.cfg.KeepEntries; to >= first {
			if err := c.cfg.Storage.Compact(to); err != nil && !errors.Is(err, raft.ErrCompacted) {
				return fmt.Errorf("compact log to %d: %w", to, err)
			}
		}
	}
	out.Notes = append(out.Notes, Note{Kind: NoteSnapshot, Index: applied, Text: "took a snapshot and compacted the log"})
	return nil
}

// Status returns the core's view of the cluster.
func (c *Core) Status() Status {
	bs := c.rn.BasicStatus()
	last, _ := c.cfg.Storage.LastIndex()
	st := Status{
		ID: c.cfg.ID, Name: c.cfg.Name, Role: c.cfg.Role, State: c.member, RaftState: bs.RaftState.String(),
		Term: bs.GetTerm(), Leader: bs.Lead, Quorate: c.quorate, Voters: slices.Clone(c.conf.GetVoters()),
		Reachable: c.reachable(), Applied: bs.Applied, Commit: bs.GetCommit(), LastIndex: last, SnapshotIndex: c.snapIndex,
	}
	if !c.quorate {
		st.Reason = c.reason()
	}
	if c.fault != nil {
		st.Err = c.fault.Error()
	}
	return st
}

// View returns a copy of the database, marked stale when this node is not quorate.
func (c *Core) View() clusterdb.View {
	if c.quorate {
		return c.state.View(false, "")
	}
	return c.state.View(true, "no quorum: "+c.reason())
}

// State returns the database itself; the caller must not change it.
func (c *Core) State() *clusterdb.State { return c.state }

// Leader returns the leader this node knows (0: none).
func (c *Core) Leader() uint64 { return c.lead }

// Quorate reports whether this node is in a partition with a raft majority.
func (c *Core) Quorate() bool { return c.quorate }
