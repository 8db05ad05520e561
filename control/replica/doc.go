// Package replica replicates the cluster database (clusterdb) with raft: a pure Core that
// drives go.etcd.io/raft/v3's RawNode and applies committed entries to a clusterdb.State, a
// Replica that runs a Core in one goroutine over the cluster transport and a ticker, and a
// deterministic simulation harness (Sim) for N cores on an in-memory network.
//
// # The Core and the order of a Ready
//
// Core follows raft's Step/Tick/Ready shape. The caller feeds it Tick (logical time; the
// wall-clock time passed along only stamps the commands the core proposes itself), Step
// (messages from peers), PeerDown/PeerStalled/PeerUp (the heartbeat plane's verdicts),
// StreamClosed (a peer closed its raft stream to this node), and requests
// (Propose, AddNode, RemoveNode, Read), and then calls Ready, which handles each raft Ready in
// the order raft's doc.go prescribes:
//
//  1. Storage.Save(HardState, Entries, Snapshot): durable when it returns;
//  2. the Ready's messages are collected into Output.Messages, which the caller sends after
//     Ready returns, that is after the Save. With ReadyTo (what Replica and Sim use), the
//     messages raft lets go before the save (all but MsgAppResp, MsgVoteResp and
//     MsgPreVoteResp) are handed to the caller before step 1, so a candidate's vote requests
//     and a leader's appends travel while its fsync runs; raft counts the node's own vote and
//     append only on Advance, after the save. ReadyTo's handoff runs after them, before the
//     save: Replica lets the goroutines that write them run there (runtime.Gosched), since a
//     goroutine blocked in an fsync keeps its scheduler P;
//  3. the snapshot (if any) replaces the State, and the committed entries are applied:
//     normal entries through clusterdb.State.Apply, configuration changes through
//     RawNode.ApplyConfChange after the database part in their context was applied;
//  4. RawNode.Advance.
//
// It settles proposals (Output.Done), linearizable reads, quorum, and this node's membership
// record before the first raft Ready and after each one, until raft has nothing more: a node
// that just won an election proposes its leadership record before its first Ready, so the
// record is saved with the new term's empty entry and goes out in the same append. At the end
// it takes a snapshot and compacts the log every SnapshotEntries entries.
//
// Raft runs with PreVote and CheckQuorum. A proposal on a follower is forwarded to the leader
// by raft; with no leader known it fails at once with ErrNoQuorum; a proposal not applied
// within ProposalTicks fails with ErrNoQuorum (if quorum was lost) or ErrTimeout.
//
// # Quorum and stale reads
//
// A node is quorate when it is the leader and has heard from a majority of the voters
// within an election timeout, or a follower that has heard from its leader within one.
// View marks the database copy stale otherwise, with the reason.
//
// # Early election
//
// When the heartbeat plane reports the leader down on every channel (PeerDown), every
// follower forgets the leader (raft's ForgetLeader: it then grants pre-votes at once instead
// of waiting out its lease), and the voter with the lowest id among those not reported down
// campaigns at once, again every millisecond (Replica, through Nudge) and on each tick until a
// leader is known; the next in line campaigns 3 ticks later, and so on. PreVote stays on: a
// node that is merely cut off from the others campaigns too, but its pre-vote wins no
// majority, so it cannot disturb the leader. The next in line campaigns only if no newer
// term reached it meanwhile (a candidate is known: raft's election timeout covers it), and a
// real candidate is never made to campaign again (it would drop the votes on their way).
//
// A daemon killed while its kernel still echoes heartbeats is only "stalled" to the heartbeat
// plane (PeerStalled); its kernel closes its raft streams (StreamClosed). Both together from
// the leader start the same early election at once; a stream closed alone starts it if the
// leader then sends nothing, on any stream, for two ticks (a live leader replacing a stream
// sends within a tick); a stall alone (a paused daemon) starts nothing. A follower that finds
// its leader gone also answers the pre-votes it ignored in the last two ticks while it still
// believed in the leader. A new leader's membership records are never held back by a record
// proposed under the old leader (it may be lost with it).
//
// A leader that removes a node tells it, once the node holds the entry, with a heartbeat
// carrying the removal's commit index: raft stops talking to a removed node, which would
// otherwise never learn it was removed.
//
// # Membership
//
// AddNode and RemoveNode are raft configuration changes whose context carries the
// database's NodeJoin or NodeLeave, applied in the same entry. A join the database refuses
// (the node is not in the configuration, or under another name or role) is cancelled in
// raft too. Each node registers itself (NodeJoin) when it finds itself a voter without a
// record and records its state (running, or admin-wait while no configuration exists) once
// it has caught up; the leader marks voters it cannot reach as faulted and records each new
// leadership, with the quorum, in the event log.
//
// # Entry data
//
// Every entry this package proposes is a clusterdb command behind a 17-byte header naming the
// proposer and a sequence number (see framing.go), so the proposer can tell its caller when
// the entry was applied and what Apply said.
package replica
